"""Gridworld Q-models: the (64, 64) MLP of Fu et al. and IUP, and a deep linear network.

A model is a `GridModel` of pure functions over an index-based input (state indices
and the [S, d] feature table of the environment, so the jitted code sees plain arrays):

  init(key) -> params
  q_table(params) -> [S, A] Q-values of every state-action pair
  features_all(params) -> [N, D] the feature matrix whose rank is tracked over all
      inputs (MLP: Phi(s) of the S states, 256 x 64; deep linear: Phi(s, a) of the
      S*A pairs, 1280 x 1280)
  q_and_features(params, s, a) -> (Q(s, a) [B], phi [B, D]) on a minibatch
  q_values_and_features(params, s, a) -> (Q(s, .) [B, A], phi [B, D]): the same with
      every action's Q-value at s (what regularisers such as CQL read)
  eig_features: whether `features_all` is square and its eigenvalue srank is logged.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl.networks import QNetworkOutput


def _torch_uniform(fan_in: int):
  """PyTorch's default Linear init for weights and biases: U(-1/sqrt(fan_in), ...)."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class GridMLP(nn.Module):
  """Linear-ReLU stack then one Q-value per action; `representation` = last hidden layer.

  Input: [B, d] features. Every kernel and bias ~ U(+-1/sqrt(fan_in)) (PyTorch default,
  as Fu's code).
  """

  hidden_sizes: Sequence[int] = (64, 64)
  num_actions: int = 5

  @nn.compact
  def __call__(self, x: jax.Array) -> QNetworkOutput:
    x = x.astype(jnp.float32)
    for size in self.hidden_sizes:
      init = _torch_uniform(x.shape[-1])
      x = nn.relu(nn.Dense(size, kernel_init=init, bias_init=init)(x))
    init = _torch_uniform(x.shape[-1])
    q = nn.Dense(self.num_actions, kernel_init=init, bias_init=init)(x)
    return QNetworkOutput(q_values=q, representation=x)


def _select(q_values: jax.Array, a: jax.Array) -> jax.Array:
  """q_values[b, a[b]] of [B, A] and int [B] -> [B]."""
  return jnp.take_along_axis(q_values, a[:, None], axis=1)[:, 0]


class GridModel(NamedTuple):
  init: Callable[[jax.Array], Any]
  q_table: Callable[[Any], jax.Array]
  features_all: Callable[[Any], jax.Array]
  q_and_features: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
  q_values_and_features: Callable[[Any, jax.Array, jax.Array],
                                  tuple[jax.Array, jax.Array]]
  eig_features: bool
  description: str


@gin.configurable
def mlp_model(features: np.ndarray, num_actions: int,
              hidden_sizes: Sequence[int] = (64, 64)) -> GridModel:
  """The (64, 64) ReLU MLP on the state features (IUP App. B.2)."""
  if not hidden_sizes or min(hidden_sizes) < 1:
    raise ValueError(f"`mlp_model.hidden_sizes` must be non-empty positive sizes, got "
                     f"{hidden_sizes}.")
  net = GridMLP(hidden_sizes=tuple(hidden_sizes), num_actions=num_actions)
  table = jnp.asarray(features, jnp.float32)

  def apply(params, s):
    return net.apply(params, table[s])

  def q_values_and_features(params, s, a):
    del a  # The features are phi(s), the same for every action.
    out = apply(params, s)
    return out.q_values, out.representation

  def q_and_features(params, s, a):
    q_values, phi = q_values_and_features(params, s, a)
    return _select(q_values, a), phi

  all_states = jnp.arange(table.shape[0])
  return GridModel(
      init=lambda key: net.init(key, table[:1]),
      q_table=lambda params: apply(params, all_states).q_values,
      features_all=lambda params: apply(params, all_states).representation,
      q_and_features=q_and_features,
      q_values_and_features=q_values_and_features,
      eig_features=False,
      description=f"MLP {tuple(hidden_sizes)} on {table.shape[1]}-dim features")


@gin.configurable
def deep_linear_model(features: np.ndarray, num_actions: int, num_layers: int = 3,
                      init_scale: float = 0.1, init_noise: float = 0.01) -> GridModel:
  """Deep linear network on one-hot (s, a) inputs (IUP App. A.7, details [ASSUMED]).

  Q(s, a) = w_N W_{N-1} ... W_1 e_(s,a), every W_i in R^{D x D}, D = |S||A|, and
  w_N in R^{1 x D}. Features Phi = W_{N-1} ... W_1 (D x D; the column of (s, a) is
  phi(s, a)), so `features_all` returns Phi^T: one row per state-action pair.
  Init: W_i = init_scale * I + init_noise * N(0, 1); w_N = init_scale * N(0, 1)/sqrt(D)
  ... scaled so that initial Q-values are small. The input `features` only sets |S|.
  """
  if num_layers < 2:
    raise ValueError(f"`deep_linear_model.num_layers` must be >= 2, got {num_layers}.")
  num_states = features.shape[0]
  dim = num_states * num_actions

  def init(key):
    keys = jax.random.split(key, num_layers)
    hidden = [init_scale * jnp.eye(dim) + init_noise * jax.random.normal(k, (dim, dim))
              for k in keys[:-1]]
    out = init_scale * jax.random.normal(keys[-1], (dim,)) / np.sqrt(dim)
    return {"hidden": hidden, "out": out}

  def phi(params):  # [D, D] = W_{N-1} ... W_1
    m = params["hidden"][0]
    for w in params["hidden"][1:]:
      m = w @ m
    return m

  def q_vector(params):  # [D] = w_N W_{N-1} ... W_1, as vector-matrix products
    v = params["out"]
    for w in reversed(params["hidden"]):
      v = v @ w
    return v

  def q_and_features(params, s, a):
    idx = s * num_actions + a
    return q_vector(params)[idx], phi(params)[:, idx].T

  def q_values_and_features(params, s, a):
    q_values = q_vector(params).reshape(num_states, num_actions)[s]
    return q_values, phi(params)[:, s * num_actions + a].T

  return GridModel(
      init=init,
      q_table=lambda params: q_vector(params).reshape(num_states, num_actions),
      features_all=lambda params: phi(params).T,
      q_and_features=q_and_features,
      q_values_and_features=q_values_and_features,
      eig_features=True,
      description=f"deep linear network, {num_layers} layers, width {dim}")

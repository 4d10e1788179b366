"""The networks of the continuous-control agents (SAC, CQL-SAC): twin critics Q(s, a)
and a tanh-Gaussian policy, MLPs on flattened vector states.

A critic's penultimate layer, after its activation, is phi(s, a): the Phi that srank,
every diagnostic and the regulariser terms use for these agents (the first critic's;
`TwinCriticNetwork` returns both critics' outputs). Hidden layers are recorded with
`networks._record_hidden` as the value networks' are; `first_critic_activations` reads
the first critic's (Dense_0, ...). Actions enter the critic scaled
to [-1, 1]^|A| (the agent maps box actions there), and the policy's mean and log
standard deviation are those of the Gaussian before the tanh.
"""
from typing import Callable

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from batch_rl import networks
from batch_rl.agents import sac_losses


def _mlp(module: nn.Module, x: jax.Array, hidden_sizes, activation: Callable,
         init) -> jax.Array:
  """Dense + activation per width of `hidden_sizes`, each recorded as a hidden layer."""
  for width in hidden_sizes:
    dense = nn.Dense(features=int(width), kernel_init=init)
    x = networks._record_hidden(module, dense, activation(dense(x)))  # pylint: disable=protected-access
  return x


def _check_sizes(owner: str, hidden_sizes) -> tuple[int, ...]:
  sizes = tuple(int(h) for h in hidden_sizes)
  if not sizes or min(sizes) < 1:
    raise ValueError(f"{owner}.hidden_sizes must be a non-empty sequence of positive "
                     f"widths, got {hidden_sizes!r}")
  return sizes


def _flat_states(states: jax.Array) -> jax.Array:
  """[B, *observation_shape, S] -> float32 [B, prod(...)] (row-major)."""
  return states.astype(jnp.float32).reshape((states.shape[0], -1))


class CriticNetwork(nn.Module):
  """Q(s, a): MLP on [flattened s, a] -> hidden_sizes -> 1.

  Returns networks.QNetworkOutput with q_values [B, 1] and representation [B, D]
  (D = hidden_sizes[-1], the last hidden layer after its activation).
  """

  hidden_sizes: tuple[int, ...] = (256, 256)
  activation: str = "relu"
  kernel_init: str = "xavier_uniform"

  @nn.compact
  def __call__(self, states: jax.Array, actions: jax.Array) -> networks.QNetworkOutput:
    sizes = _check_sizes(type(self).__name__, self.hidden_sizes)
    x = jnp.concatenate([_flat_states(states),
                         actions.astype(jnp.float32).reshape((actions.shape[0], -1))], -1)
    init = networks.KERNEL_INITS[self.kernel_init]
    phi = _mlp(self, x, sizes, networks.get_activation(self.activation), init)
    q = nn.Dense(features=1, kernel_init=init)(phi)
    return networks.QNetworkOutput(q_values=q, representation=phi)


@gin.configurable
class TwinCriticNetwork(nn.Module):
  """Two independent critics (SAC's clipped double Q): (output of critic 1, of critic 2).

  Attributes:
    hidden_sizes: each critic's hidden widths (SAC: two layers of 256).
    activation: key of networks.ACTIVATIONS.
    kernel_init: key of networks.KERNEL_INITS.
  """

  hidden_sizes: tuple[int, ...] = (256, 256)
  activation: str = "relu"
  kernel_init: str = "xavier_uniform"

  @nn.compact
  def __call__(self, states: jax.Array, actions: jax.Array):
    make = lambda name: CriticNetwork(self.hidden_sizes, self.activation,
                                      self.kernel_init, name=name)
    return make("critic1")(states, actions), make("critic2")(states, actions)


def first_critic_activations(critic: nn.Module, variables, states: jax.Array,
                             actions: jax.Array) -> dict[str, jax.Array]:
  """{layer: post-activation output} of the first critic of a TwinCriticNetwork (the
  one whose phi(s, a) is Phi), named as an MLP's layers (Dense_0, ...)."""
  _, state = critic.apply(variables, states, actions, mutable=[networks.INTERMEDIATES])
  recorded = state.get(networks.INTERMEDIATES, {}).get("critic1", {})
  return dict(recorded.get(networks._HIDDEN, {}))  # pylint: disable=protected-access


@gin.configurable(denylist=["action_size"])  # the agent passes the task's |A|
class GaussianPolicyNetwork(nn.Module):
  """pi(.|s) = tanh(N(mean(s), exp(log_std(s))^2)): MLP -> (mean, log_std) [B, |A|],
  log_std clamped to SAC's [-20, 2].

  Attributes:
    action_size: |A|.
    hidden_sizes, activation, kernel_init: as TwinCriticNetwork.
  """

  action_size: int
  hidden_sizes: tuple[int, ...] = (256, 256)
  activation: str = "relu"
  kernel_init: str = "xavier_uniform"

  @nn.compact
  def __call__(self, states: jax.Array) -> tuple[jax.Array, jax.Array]:
    sizes = _check_sizes(type(self).__name__, self.hidden_sizes)
    init = networks.KERNEL_INITS[self.kernel_init]
    x = _mlp(self, _flat_states(states), sizes, networks.get_activation(self.activation),
             init)
    mean = nn.Dense(features=self.action_size, kernel_init=init, name="mean")(x)
    log_std = nn.Dense(features=self.action_size, kernel_init=init, name="log_std")(x)
    return mean, sac_losses.clamp_log_std(log_std)

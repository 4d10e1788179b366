"""Multi-head DQN: REM (Agarwal et al. 2020) and ensemble DQN, as google-research/batch_rl.

One network with K = `num_heads` outputs per action (`outputs_per_action=K`: a shared
torso and one Dense layer of A * K units, batch_rl's `MultiHeadQNetwork`).

* mixing="rem" (batch_rl `transform_strategy='STOCHASTIC'`, `num_convex_combinations=1`):
  each minibatch draws alpha on the simplex, alpha_k = u_k / sum_j u_j, u ~ U(0, 1)^K
  (batch_rl's `random_stochastic_matrix`), the same alpha for the online and the
  target network; Q_mix = sum_k alpha_k Q_k and the loss is
  Huber(r + discount * max_a' Q_mix_target(s', a') - Q_mix(s, a)).
  Here alpha = `random_convex_combination(key, num_heads)` with `key` the loss key
  exactly as `loss` receives it (see `MultiHeadDQNAgent.alpha`).
* mixing="ensemble" (batch_rl `transform_strategy='IDENTITY'`, its multi-head DQN):
  head k regresses on r + discount * max_a' Q_k_target(s', a'); loss = mean over
  heads and batch.

Acting uses the mean over heads in both cases, as batch_rl: `combine_q_functions`
sets `q_values = reduce_mean(q_heads, -1)` before any mixing, and the agent's argmax
(training and evaluation, without deep exploration) reads those q_values.

batch_rl's rem.gin / multi_head_dqn.gin: Adam lr 5e-5, eps 3.125e-4, 200 heads,
gamma 0.99, update_horizon 1, batch 32, target_update_period 8000 agent steps with
update_period 4 = 2000 gradient steps.
"""
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms

MIXINGS = ("rem", "ensemble")


def random_convex_combination(key: jax.Array, num_heads: int) -> jax.Array:
  """alpha [K] on the simplex: u / sum(u), u ~ U(0, 1)^K (batch_rl's REM draw)."""
  u = jax.random.uniform(key, (num_heads,), jnp.float32)
  return u / jnp.sum(u)


def mix_heads(head_q: jax.Array, alpha: jax.Array) -> jax.Array:
  """sum_k alpha_k head_q[..., k]: head_q [B, A, K], alpha [K] -> [B, A]."""
  return jnp.tensordot(head_q, alpha, axes=[[-1], [0]])


def _heads(out: networks.QNetworkOutput) -> jax.Array:
  """[B, A, K] head outputs; with K == 1 the network returns q_values only."""
  if out.head_outputs is None:
    return out.q_values[..., None]
  return out.head_outputs


@gin.configurable(denylist=["num_actions"])
class MultiHeadDQNAgent(common.ValueAgent):
  """REM or ensemble DQN over a K-head Q-network; the DQNAgent interface.

  Args:
    num_actions: size of the action set.
    network: Flax module class taking `num_actions` and `outputs_per_action`
      (`@NatureDQNNetwork`, `@MinAtarDQNNetwork`); built with outputs_per_action=K.
    num_heads: K >= 1 (batch_rl: 200).
    mixing: "rem" or "ensemble".
    optimizer_fn, gamma, update_horizon, batch_size, target_update_period,
    loss_type, huber_delta: as DQNAgent.
    regularizers: terms of regularizer_terms. Their `q_values` are the Q-values the
      loss regresses for one backup: Q_mix for REM, the head mean for ensemble;
      `next_action` is the argmax at s' of Q_mix_target (REM) or of the target's
      head mean (ensemble, whose heads each take their own max).
  """

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               num_heads: int = 200, mixing: str = "rem",
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000, loss_type: str = "huber",
               huber_delta: float = 1.0,
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
      raise ValueError(f"`MultiHeadDQNAgent.num_heads` must be an int >= 1, got {num_heads!r}.")
    if mixing not in MIXINGS:
      raise ValueError(f"`MultiHeadDQNAgent.mixing` must be one of {MIXINGS}, got {mixing!r}.")
    if loss_type not in ("huber", "mse"):
      raise ValueError(
          f"`MultiHeadDQNAgent.loss_type` must be 'huber' or 'mse', got {loss_type!r}.")
    self.num_heads = num_heads
    self.mixing = mixing
    self.loss_type = loss_type
    self.huber_delta = huber_delta
    # q_values from the network are the mean over heads (batch_rl's), which acting uses.
    self._setup(num_actions=num_actions, network=network, optimizer_fn=optimizer_fn,
                gamma=gamma, update_horizon=update_horizon, batch_size=batch_size,
                target_update_period=target_update_period, regularizers=regularizers,
                outputs_per_action=num_heads)

  def alpha(self, key: jax.Array) -> jax.Array:
    """The REM mixing weights `loss(..., key)` draws (from the key's agent part)."""
    return random_convex_combination(common.split_loss_key(key)[2], self.num_heads)

  def _elementwise(self, error):
    if self.loss_type == "huber":
      return losses.huber_loss(error, self.huber_delta)
    return losses.mse_loss(error)

  def loss(self, params, target_params, batch, key):
    """Mean TD loss of a Transition batch and its metrics; `key` draws REM's alpha."""
    forward_key, regularizer_key, _ = common.split_loss_key(key)
    online, next_online = common.online_outputs(self.apply, params, batch,
                                                self._needs_next_online, forward_key)
    heads = _heads(online)  # [B, A, K]
    next_target = self.apply(target_params, batch.next_state)
    next_heads = _heads(next_target)
    action = batch.action.astype(jnp.int32)
    if self.mixing == "rem":
      alpha = self.alpha(key)
      q_values = mix_heads(heads, alpha)
      next_q = mix_heads(next_heads, alpha)
      next_action = jnp.argmax(next_q, axis=1)
      q_data = losses.select(q_values, action)  # [B]
      target = losses.td_target(batch.reward, batch.discount, losses.select(next_q, next_action))
      error = target - q_data
    else:
      q_values = online.q_values
      next_action = jnp.argmax(next_target.q_values, axis=1)
      q_data = common.select_head(heads, action)  # [B, K]
      next_max = jnp.max(next_heads, axis=1)  # [B, K]
      target = jax.lax.stop_gradient(
          batch.reward[:, None] + batch.discount[:, None] * next_max)
      error = target - q_data
    td_loss = jnp.mean(self._elementwise(error))
    metrics = {"Train/TDError": jnp.mean(jnp.abs(error)), "Train/QData": jnp.mean(q_data)}
    loss = self.add_regularizers(td_loss, metrics, params=params,
                                 target_params=target_params, key=regularizer_key,
                                 q_values=q_values, online=online, next_online=next_online,
                                 batch=batch, next_action=next_action)
    return loss, metrics

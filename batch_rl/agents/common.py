"""Pieces every agent's loss and policy share, written once.

Agents are not a subclass chain: DQNAgent, C51Agent, QRDQNAgent, MultiHeadDQNAgent
and BCAgent each compose these functions with their own target and loss.
"""
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from batch_rl import networks
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


def init_state(network, optimizer: optax.GradientTransformation, key: jax.Array,
               state_shape: tuple[int, ...]) -> learner.TrainState:
  """Fresh TrainState for a Flax `network` on uint8 states of `state_shape`."""
  init_key, rng = jax.random.split(key)
  params = network.init(init_key, jnp.zeros((1,) + tuple(state_shape), jnp.uint8))
  return learner.init_train_state(params, optimizer, rng)


def epsilon_greedy(q_values: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
  """int32 [B] actions: argmax of q_values [B, A], uniform with probability epsilon.

  Dopamine's rule: a random action when u <= epsilon.
  """
  greedy = jnp.argmax(q_values, axis=1).astype(jnp.int32)
  explore_key, action_key = jax.random.split(key)
  explore = jax.random.uniform(explore_key, greedy.shape) <= epsilon
  random_action = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1])
  return jnp.where(explore, random_action, greedy)


def needs_next_online(double_dqn: bool,
                      regularizers: Sequence[regularizer_terms.Regularizer]) -> bool:
  """Whether the loss needs the online network at s' (double DQN, or e.g. DR3)."""
  return double_dqn or any(r.needs_next_representation for r in regularizers)


def online_outputs(apply_fn, params: Any, batch, with_next: bool
                   ) -> tuple[networks.QNetworkOutput, Optional[networks.QNetworkOutput]]:
  """Online outputs at s and, if `with_next`, at s' (one forward pass over both)."""
  if not with_next:
    return apply_fn(params, batch.state), None
  batch_size = batch.state.shape[0]
  both = apply_fn(params, jnp.concatenate([batch.state, batch.next_state]))
  return (jax.tree.map(lambda x: x[:batch_size], both),
          jax.tree.map(lambda x: x[batch_size:], both))


def add_regularizers(base_loss: jax.Array, metrics: dict[str, jax.Array],
                     regularizers: Sequence[regularizer_terms.Regularizer], *,
                     q_values: jax.Array, online: networks.QNetworkOutput,
                     next_online: Optional[networks.QNetworkOutput], batch,
                     next_action: jax.Array,
                     base_tag: Optional[str] = "Train/TDLoss") -> jax.Array:
  """base_loss + every regulariser term; fills `metrics` (and Train/Loss) in place.

  Args:
    q_values: [B, A] the agent's Q-values at s (expected values for distributional
      agents, the mixture for REM), which CQL reads.
    next_action: int [B] the action the agent's backup uses at s'.
    base_tag: tag under which base_loss is logged when regularisers are on (None: the
      agent logs it itself).
  """
  loss = base_loss
  if regularizers:
    inputs = regularizer_terms.LossInputs(
        q_values=q_values, phi=online.representation,
        phi_next=None if next_online is None else next_online.representation,
        action=batch.action, next_action=next_action, terminal=batch.terminal)
    for term in regularizers:
      value, term_metrics = term(inputs)
      loss = loss + value
      metrics.update(term_metrics)
    if base_tag is not None:
      metrics[base_tag] = base_loss
  metrics["Train/Loss"] = loss
  return loss


def select_head(head_outputs: jax.Array, action: jax.Array) -> jax.Array:
  """head_outputs[b, action[b], :] for [B, A, K] and int [B] -> [B, K]."""
  index = action.astype(jnp.int32)[:, None, None]
  return jnp.take_along_axis(head_outputs, index, axis=1)[:, 0, :]


class ValueAgent:
  """Structure every agent here shares; each agent subclasses only this.

  An agent's constructor keeps its own gin-configurable signature and calls `_setup`
  with the common hyperparameters; `init`, `apply` and `act` then come from here
  (an agent whose Q-value is not the network's `q_values`, like C51, overrides
  `apply`).
  """

  def _setup(self, *, num_actions: int, network, optimizer_fn, gamma: float,
             update_horizon: int, batch_size: int, target_update_period: int,
             regularizers: Sequence[regularizer_terms.Regularizer],
             double_dqn: bool = False, outputs_per_action: int = 1) -> None:
    self.num_actions = num_actions
    self.network = (network(num_actions=num_actions) if outputs_per_action == 1 else
                    network(num_actions=num_actions, outputs_per_action=outputs_per_action))
    self.optimizer = optimizer_fn()
    self.gamma = gamma
    self.update_horizon = update_horizon
    self.batch_size = batch_size
    self.target_update_period = target_update_period
    self.double_dqn = double_dqn
    self.regularizers = tuple(regularizers)
    # The online network's outputs at s' are computed only when something uses them.
    self._needs_next_online = needs_next_online(double_dqn, self.regularizers)

  def init(self, key: jax.Array, state_shape: tuple[int, ...]) -> learner.TrainState:
    """Fresh TrainState; `state_shape` is one agent state, e.g. (84, 84, 4)."""
    return init_state(self.network, self.optimizer, key, state_shape)

  def apply(self, params: Any, states: jax.Array) -> networks.QNetworkOutput:
    """Network outputs: q_values [B, A], representation [B, D] (and head outputs)."""
    return self.network.apply(params, states)

  def act(self, params: Any, states: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
    """Epsilon-greedy int32 [B] actions on `apply(...).q_values`."""
    return epsilon_greedy(self.apply(params, states).q_values, key, epsilon)

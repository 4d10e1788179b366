"""DQN (Adam), the core every offline value-based agent here builds on.

The agent object holds only structure (network module, optimizer, hyperparameters);
all that changes lives in `learner.TrainState`. Its three pure pieces are
`init`, `loss` and `act`; the Runner never looks inside.
"""
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


@gin.configurable(denylist=["num_actions"])
class DQNAgent:
  """Offline DQN with Dopamine/batch_rl defaults (IUP paper, Table B.1).

  Args:
    num_actions: size of the action set (from the environment).
    network: a Flax module class taking `num_actions` and returning
      `networks.QNetworkOutput` (bind e.g. `@networks.MinAtarDQNNetwork`).
    optimizer_fn: builds the optax optimizer (`create_optimizer`, gin-configurable).
    gamma: discount factor.
    update_horizon: n of n-step returns (1 for DQN).
    batch_size: minibatch size.
    target_update_period: gradient steps between target network syncs.
    loss_type: "huber" (Dopamine's DQN) or "mse".
    huber_delta: Huber loss threshold.
    double_dqn: bootstrap with the target network's value of the online argmax.
    backup: "q_learning" (a' = argmax, the control setting) or "sarsa" (a' = the
      dataset's next action: policy evaluation of the behaviour policy, IUP Fig. 4d).
    regularizers: loss terms added to the TD loss (regularizer_terms: Lp, DR3, CQL),
      e.g. `DQNAgent.regularizers = [@LpRegularizer()]` in gin.
  """

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000, loss_type: str = "huber",
               huber_delta: float = 1.0, double_dqn: bool = False,
               backup: str = "q_learning",
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    if backup not in ("q_learning", "sarsa"):
      raise ValueError(f"`DQNAgent.backup` must be 'q_learning' or 'sarsa', got {backup!r}.")
    if backup == "sarsa" and double_dqn:
      raise ValueError("`DQNAgent.double_dqn` applies to backup='q_learning' only.")
    if loss_type not in ("huber", "mse"):
      raise ValueError(f"`DQNAgent.loss_type` must be 'huber' or 'mse', got {loss_type!r}.")
    self.num_actions = num_actions
    self.network = network(num_actions=num_actions)
    self.optimizer = optimizer_fn()
    self.gamma = gamma
    self.update_horizon = update_horizon
    self.batch_size = batch_size
    self.target_update_period = target_update_period
    self.loss_type = loss_type
    self.huber_delta = huber_delta
    self.double_dqn = double_dqn
    self.backup = backup
    self.regularizers = tuple(regularizers)
    # The online network's features at s' are computed only when something uses them.
    self._needs_next_online = double_dqn or any(
        r.needs_next_representation for r in self.regularizers)

  def init(self, key: jax.Array, state_shape: tuple[int, ...]) -> learner.TrainState:
    """Fresh TrainState; `state_shape` is one agent state, e.g. (84, 84, 4)."""
    init_key, rng = jax.random.split(key)
    params = self.network.init(init_key, jnp.zeros((1,) + tuple(state_shape), jnp.uint8))
    return learner.init_train_state(params, self.optimizer, rng)

  def apply(self, params: Any, states: jax.Array) -> networks.QNetworkOutput:
    """Q-values [B, A] and representation [B, D] of a batch of states."""
    return self.network.apply(params, states)

  def loss(self, params, target_params, batch, key):
    """Mean TD loss of a `sampler.Transition` batch, and its metrics (TensorBoard tags)."""
    del key  # DQN's loss is deterministic.
    batch_size = batch.state.shape[0]
    if self._needs_next_online:
      # One forward pass over s and s' together.
      both = self.apply(params, jnp.concatenate([batch.state, batch.next_state]))
      online = jax.tree.map(lambda x: x[:batch_size], both)
      next_online = jax.tree.map(lambda x: x[batch_size:], both)
    else:
      online, next_online = self.apply(params, batch.state), None
    q_data = losses.select(online.q_values, batch.action)
    next_q_target = self.apply(target_params, batch.next_state).q_values
    if self.backup == "sarsa":
      next_action = batch.next_action
    elif self.double_dqn:
      next_action = jnp.argmax(next_online.q_values, axis=1)
    else:
      next_action = jnp.argmax(next_q_target, axis=1)
    next_value = losses.select(next_q_target, next_action)
    target = losses.td_target(batch.reward, batch.discount, next_value)
    error = target - q_data
    if self.loss_type == "huber":
      per_sample = losses.huber_loss(error, self.huber_delta)
    else:
      per_sample = losses.mse_loss(error)
    td_loss = jnp.mean(per_sample)
    metrics = {
        "Train/TDError": jnp.mean(jnp.abs(error)),
        "Train/QData": jnp.mean(q_data),
    }
    loss = td_loss
    if self.regularizers:
      inputs = regularizer_terms.LossInputs(
          q_values=online.q_values, phi=online.representation,
          phi_next=None if next_online is None else next_online.representation,
          action=batch.action, next_action=next_action, terminal=batch.terminal)
      for term in self.regularizers:
        value, term_metrics = term(inputs)
        loss = loss + value
        metrics.update(term_metrics)
      metrics["Train/TDLoss"] = td_loss
    metrics["Train/Loss"] = loss
    return loss, metrics

  def act(self, params: Any, states: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
    """Epsilon-greedy actions int32 [B] for states [B, ...] (Dopamine: random if u <= eps)."""
    greedy = jnp.argmax(self.apply(params, states).q_values, axis=1).astype(jnp.int32)
    explore_key, action_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key, greedy.shape) <= epsilon
    random_action = jax.random.randint(action_key, greedy.shape, 0, self.num_actions)
    return jnp.where(explore, random_action, greedy)

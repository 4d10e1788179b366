"""DQN (Adam), the core every offline value-based agent here builds on.

The agent object holds only structure (network module, optimizer, hyperparameters);
all that changes lives in `learner.TrainState`. Its three pure pieces are
`init`, `loss` and `act`; the Runner never looks inside.
"""
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import fixed_policy  # pylint: disable=unused-import (registers @CheckpointPolicy)
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


BACKUPS = ("q_learning", "sarsa", "fqe", "monte_carlo")


@gin.configurable(denylist=["num_actions"])
class DQNAgent(common.ValueAgent):
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
    backup: "q_learning" (a' = argmax, the control setting), "sarsa" (a' = the
      dataset's next action: policy evaluation of the behaviour policy, IUP Fig. 4d),
      "fqe" (fitted Q evaluation of a fixed policy: a' = evaluation_policy(s'),
      IUP Fig. 4d / A.9) or "monte_carlo" (regression onto the discounted return-to-go of the stored
      trajectory, no bootstrapping: IUP Fig. 4d / A.10; DR3 then pairs phi(s) with
      phi(s') under the dataset's next action).
    regularizers: loss terms added to the TD loss (regularizer_terms: Lp, DR3, CQL,
      CURL, VIB), e.g. `DQNAgent.regularizers = [@LpRegularizer()]` in gin.
    evaluation_policy: with backup="fqe", the policy evaluated: a constructor taking
      `num_actions` and `default_network` (gin: `@CheckpointPolicy`).
  """

  supports_prioritized_replay = True  # the loss applies batch.weight

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000, loss_type: str = "huber",
               huber_delta: float = 1.0, double_dqn: bool = False,
               backup: str = "q_learning",
               regularizers: Sequence[regularizer_terms.Regularizer] = (),
               evaluation_policy: Optional[Callable[..., Any]] = None):
    if backup not in BACKUPS:
      raise ValueError(f"`DQNAgent.backup` must be one of {BACKUPS}, got {backup!r}.")
    if backup != "q_learning" and double_dqn:
      raise ValueError("`DQNAgent.double_dqn` applies to backup='q_learning' only.")
    if loss_type not in ("huber", "mse"):
      raise ValueError(f"`DQNAgent.loss_type` must be 'huber' or 'mse', got {loss_type!r}.")
    if (backup == "fqe") != (evaluation_policy is not None):
      raise ValueError("`DQNAgent.evaluation_policy` (e.g. @CheckpointPolicy) is required "
                       "with backup='fqe' and meaningless otherwise; got backup="
                       f"{backup!r} and evaluation_policy={evaluation_policy!r}.")
    self._setup(num_actions=num_actions, network=network, optimizer_fn=optimizer_fn,
                gamma=gamma, update_horizon=update_horizon, batch_size=batch_size,
                target_update_period=target_update_period, regularizers=regularizers,
                double_dqn=double_dqn)
    self.loss_type = loss_type
    self.huber_delta = huber_delta
    self.backup = backup
    self.evaluation_policy = (None if evaluation_policy is None else
                              evaluation_policy(num_actions=num_actions,
                                                default_network=network))

  def init(self, key, state_shape):
    if self.evaluation_policy is not None:
      self.evaluation_policy.check(state_shape)
    return super().init(key, state_shape)

  def _next_action(self, batch, next_q_target, next_online, policy_key):
    if self.backup in ("sarsa", "monte_carlo"):
      return batch.next_action.astype(jnp.int32)
    if self.backup == "fqe":
      return self.evaluation_policy(batch.next_state, policy_key)
    source = next_online.q_values if self.double_dqn else next_q_target
    return jnp.argmax(source, axis=1).astype(jnp.int32)

  def backup_next_action(self, params, target_params, batch, key):
    """a' of the backup: argmax (Q-learning), dataset (SARSA, MC) or pi(s') (FQE)."""
    next_q_target = self.apply(target_params, batch.next_state).q_values
    next_online = self.apply(params, batch.next_state) if self.double_dqn else None
    return self._next_action(batch, next_q_target, next_online,
                             common.split_loss_key(key)[2])

  def loss(self, params, target_params, batch, key):
    """Mean TD loss of a `sampler.Transition` batch, and its metrics (TensorBoard tags)."""
    forward_key, regularizer_key, policy_key = common.split_loss_key(key)
    online, next_online = common.online_outputs(self.apply, params, batch,
                                                self._needs_next_online, forward_key)
    q_data = losses.select(online.q_values, batch.action)
    if self.backup == "monte_carlo":
      next_action = batch.next_action.astype(jnp.int32)
      target = jax.lax.stop_gradient(batch.return_to_go)
    else:
      next_q_target = self.apply(target_params, batch.next_state).q_values
      next_action = self._next_action(batch, next_q_target, next_online, policy_key)
      next_value = losses.select(next_q_target, next_action)
      target = losses.td_target(batch.reward, batch.discount, next_value)
    error = target - q_data
    if self.loss_type == "huber":
      per_sample = losses.huber_loss(error, self.huber_delta)
    else:
      per_sample = losses.mse_loss(error)
    metrics = {
        "Train/TDError": jnp.mean(jnp.abs(error)),
        "Train/QData": jnp.mean(q_data),
    }
    td_loss = learner.weighted_mean(per_sample, batch)  # PER-weighted if given
    loss = self.add_regularizers(td_loss, metrics, params=params,
                                 target_params=target_params, key=regularizer_key,
                                 q_values=online.q_values, online=online,
                                 next_online=next_online, batch=batch,
                                 next_action=next_action)
    return loss, metrics

"""QR-DQN (Dabney et al. 2018) as an offline agent, with batch_rl's settings.

batch_rl's fixed_replay/configs/quantile.gin: 200 quantiles, kappa 1, gamma 0.99,
update_horizon 1, batch 32, target update every 8000 agent steps (= 2000 gradient
steps), Adam lr 0.00005, epsilon 0.0003125 (also the CQL Atari code's QR-DQN).
The optimizer comes from `create_optimizer`, whose defaults are exactly these.

Shares init, acting and the loss plumbing with the other agents (agents/common.py).
"""
from typing import Any, Callable, Sequence

import gin
import jax.numpy as jnp
import optax

from batch_rl import distributional
from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


@gin.configurable(denylist=["num_actions"])
class QRDQNAgent(common.ValueAgent):
  """Offline QR-DQN: N quantile locations per action, quantile Huber loss.

  Args:
    num_actions: size of the action set (from the environment).
    network: Flax module class taking `num_actions` and `outputs_per_action`; its
      head outputs are the quantiles [B, A, N] and its q_values their mean.
    optimizer_fn: builds the optax optimizer (`create_optimizer`).
    num_quantiles: N (200).
    kappa: Huber threshold of the quantile Huber loss (1).
    gamma, update_horizon, batch_size, target_update_period: as DQNAgent.
    double_dqn: a* = argmax of the online mean at s' instead of the target's.
    regularizers: loss terms (regularizer_terms), given the mean Q-values.
  """

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               num_quantiles: int = 200, kappa: float = 1.0,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000, double_dqn: bool = False,
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    if not kappa > 0:
      raise ValueError(f"`QRDQNAgent.kappa` must be > 0, got {kappa}.")
    self.num_quantiles = num_quantiles
    self.kappa = kappa
    self._setup(num_actions=num_actions, network=network, optimizer_fn=optimizer_fn,
                gamma=gamma, update_horizon=update_horizon, batch_size=batch_size,
                target_update_period=target_update_period, regularizers=regularizers,
                double_dqn=double_dqn, outputs_per_action=num_quantiles)

  def loss(self, params, target_params, batch, key):
    """Mean quantile Huber loss to r + discount * theta(s', a*), and metrics."""
    forward_key, regularizer_key, _ = common.split_loss_key(key)
    online, next_online = common.online_outputs(self.apply, params, batch,
                                                self._needs_next_online, forward_key)
    target_out = self.apply(target_params, batch.next_state)
    next_action = common.greedy_next_action(self.double_dqn, next_online, target_out)
    target_quantiles = distributional.qr_target(
        batch.reward, batch.discount, common.select_head(target_out.head_outputs, next_action))
    quantiles = common.select_head(online.head_outputs, batch.action)
    td_loss = jnp.mean(distributional.quantile_huber_loss(quantiles, target_quantiles,
                                                          self.kappa))
    q_data = losses.select(online.q_values, batch.action)
    metrics = {
        "Train/TDError": jnp.mean(jnp.abs(jnp.mean(target_quantiles, axis=-1) - q_data)),
        "Train/QData": jnp.mean(q_data),
    }
    loss = self.add_regularizers(td_loss, metrics, params=params,
                                 target_params=target_params, key=regularizer_key,
                                 q_values=online.q_values, online=online,
                                 next_online=next_online, batch=batch,
                                 next_action=next_action)
    return loss, metrics

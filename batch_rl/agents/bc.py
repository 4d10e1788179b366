"""Behaviour cloning on the replay data, the BC baseline of the offline-RL studies.

The Q-network (same torso and head as DQN) outputs logits over actions; the loss is the
cross-entropy of softmax(logits) with the dataset actions. The target network is
unused but kept, so the agent runs in the same Runner / learner as the value agents.
"""
from typing import Any, Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


@gin.configurable(denylist=["num_actions"])
class BCAgent(common.ValueAgent):
  """Softmax behaviour cloning with the DQNAgent interface.

  Args:
    num_actions: size of the action set.
    network: Flax module class taking `num_actions` (its q_values are the logits).
    optimizer_fn, gamma, update_horizon, batch_size, target_update_period: as
      DQNAgent (gamma / update_horizon only shape the sampled Transitions; the
      target network is never read).
    regularizers: terms of regularizer_terms on the logits and features; their
      `next_action` is the dataset's next action.
  """

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000,
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    self._setup(num_actions=num_actions, network=network, optimizer_fn=optimizer_fn,
                gamma=gamma, update_horizon=update_horizon, batch_size=batch_size,
                target_update_period=target_update_period, regularizers=regularizers)

  def backup_next_action(self, params, target_params, batch, key):
    """BC has no backup; its regularisers pair s' with the dataset's next action."""
    del params, target_params, key
    return batch.next_action.astype(jnp.int32)

  def loss(self, params, target_params, batch, key):
    """Mean cross-entropy of the dataset actions; metrics Train/Loss, Train/Accuracy."""
    forward_key, regularizer_key, _ = common.split_loss_key(key)
    online, next_online = common.online_outputs(self.apply, params, batch,
                                                self._needs_next_online, forward_key)
    logits = online.q_values
    action = batch.action.astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, action[:, None], axis=1)[:, 0]
    ce = jnp.mean(nll)
    accuracy = jnp.mean((jnp.argmax(logits, axis=1) == action).astype(jnp.float32))
    metrics = {"Train/CrossEntropy": ce, "Train/Accuracy": accuracy}
    loss = self.add_regularizers(ce, metrics, params=params, target_params=target_params,
                                 key=regularizer_key, q_values=logits, online=online,
                                 next_online=next_online, batch=batch,
                                 next_action=batch.next_action.astype(jnp.int32),
                                 base_tag=None)  # Train/CrossEntropy is logged already
    return loss, metrics

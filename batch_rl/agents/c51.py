"""C51 (Bellemare et al. 2017) as an offline agent, with batch_rl's settings.

batch_rl's fixed_replay/configs/c51.gin (Dopamine's Rainbow agent reduced to C51):
51 atoms on [-10, 10], gamma 0.99, update_horizon 1, batch 32, target update every
8000 agent steps (= 2000 gradient steps at update_period 4), Adam lr 0.00025,
epsilon 0.0003125, uniform replay. Those are the defaults here except the optimizer,
which `create_optimizer` builds (gin_configs/offline/c51.gin sets lr 2.5e-4).

The agent has DQNAgent's interface (`init`, `apply`, `loss`, `act`, and the
attributes the Runner reads) without subclassing it; the pieces all agents share
(init, epsilon-greedy, the forward pass over s and s', the regulariser terms) are in
batch_rl/agents/common.py.
"""
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import distributional
from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms

# ------------------------------------------------------------------------- agent


@gin.configurable(denylist=["num_actions"])
class C51Agent(common.ValueAgent):
  """Offline C51: categorical return distribution on a fixed support.

  Args:
    num_actions: size of the action set (from the environment).
    network: Flax module class taking `num_actions` and `outputs_per_action`
      (e.g. `@NatureDQNNetwork`); its head outputs are the logits [B, A, N].
    optimizer_fn: builds the optax optimizer (`create_optimizer`).
    num_atoms, vmin, vmax: the support (51 atoms on [-10, 10]).
    gamma, update_horizon, batch_size, target_update_period: as DQNAgent
      (target period in gradient steps).
    double_dqn: a* = argmax of the online expected Q at s' instead of the target
      network's (C51 / Rainbow use the target network's: False).
    regularizers: loss terms (regularizer_terms), given the expected Q-values.
  """

  supports_prioritized_replay = True  # the loss applies batch.weight

  def __init__(self, num_actions: int, network: Callable[..., Any] = networks.NatureDQNNetwork,
               optimizer_fn: Callable[[], optax.GradientTransformation] = learner.create_optimizer,
               num_atoms: int = 51, vmin: float = -10.0, vmax: float = 10.0,
               gamma: float = 0.99, update_horizon: int = 1, batch_size: int = 32,
               target_update_period: int = 2000, double_dqn: bool = False,
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    self.num_atoms = num_atoms
    self.support = distributional.support(num_atoms, vmin, vmax)
    self._setup(num_actions=num_actions, network=network, optimizer_fn=optimizer_fn,
                gamma=gamma, update_horizon=update_horizon, batch_size=batch_size,
                target_update_period=target_update_period, regularizers=regularizers,
                double_dqn=double_dqn, outputs_per_action=num_atoms)

  def apply(self, params: Any, states: jax.Array,
            key: Optional[jax.Array] = None) -> networks.QNetworkOutput:
    """Network outputs with q_values [B, A] = expected value of the distribution."""
    out = super().apply(params, states, key)
    return out._replace(q_values=distributional.expected_q(out.head_outputs, self.support))

  def loss(self, params, target_params, batch, key):
    """Mean cross-entropy to the projected target distribution, and metrics."""
    forward_key, regularizer_key, _ = common.split_loss_key(key)
    online, next_online = common.online_outputs(self.apply, params, batch,
                                                self._needs_next_online, forward_key)
    target_out = self.apply(target_params, batch.next_state)
    next_action = common.greedy_next_action(self.double_dqn, next_online, target_out)
    next_probs = jax.nn.softmax(common.select_head(target_out.head_outputs, next_action), axis=-1)
    target_probs = distributional.c51_target(batch.reward, batch.discount, next_probs,
                                             self.support)
    logits = common.select_head(online.head_outputs, batch.action)
    q_data = losses.select(online.q_values, batch.action)
    target_mean = jnp.sum(target_probs * self.support, axis=-1)
    metrics = {
        "Train/TDError": jnp.mean(jnp.abs(target_mean - q_data)),
        "Train/QData": jnp.mean(q_data),
    }
    # Prioritized replay (Rainbow) weights the cross-entropies; uniform batches do not.
    td_loss = learner.weighted_mean(distributional.c51_loss(logits, target_probs), batch)
    loss = self.add_regularizers(td_loss, metrics, params=params,
                                 target_params=target_params, key=regularizer_key,
                                 q_values=online.q_values, online=online,
                                 next_online=next_online, batch=batch,
                                 next_action=next_action)
    return loss, metrics

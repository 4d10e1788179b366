"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications"): twin critics with clipped double-Q soft targets, a tanh-squashed
Gaussian policy, and a temperature learned towards the target entropy -|A|.

The agent keeps the shared core's shape: one TrainState whose `params` are
{"critic", "actor", "log_alpha"} (CQL-SAC's Lagrange variant adds "log_alpha_prime"),
one scalar `loss` whose terms each reach only their own parameters (the critic's
target and the policy's samples in the critic terms carry no gradient, the actor's
term sees the critics through stop_gradient, the temperature's term sees the policy's
log densities through it), one optax optimizer (`optax.multi_transform`, an Adam per
part), and the learner's train step with a Polyak-averaged target
(`target_update_tau`). The critics' target parameters are the ones read; the actor's
and temperature's copies in `target_params` are carried along unused.

Actions are float32 vectors in the environment's box (`action_spec`); the networks see
them scaled to [-1, 1]^|A| (sac_losses.from_box) and the policy's tanh output is
mapped back onto the box. phi(s, a), the first critic's penultimate features at the
dataset's (s, a), is the Phi of srank, every diagnostic and the regulariser terms
that read features only (Lp, DR3: `supports_continuous_actions`); DR3's phi(s', a')
takes a' ~ pi(.|s'), the action of the soft backup (DR3's actor-critic form).
"""
import math
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import actor_critic_networks
from batch_rl import networks
from batch_rl import validation
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms
from batch_rl.agents import sac_losses


def check_continuous_terms(owner: str, terms: Sequence[Any]) -> None:
  """ValueError naming each term that needs discrete actions or network options."""
  refused = [type(t).__name__ for t in terms
             if not getattr(t, "supports_continuous_actions", False)]
  if refused:
    raise ValueError(
        f"{owner} has continuous actions, but the regulariser term(s) {refused} are "
        "written for discrete Q-networks (they read per-action Q-values or change the "
        "network); the terms that read the features alone (LpRegularizer, "
        "DR3Regularizer) work here. CQL for continuous actions is CQLSACAgent.")


def _uniform_box_noise(key: jax.Array, shape) -> jax.Array:
  return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


@gin.configurable(denylist=["action_spec"])
class SACAgent:
  """SAC with twin critics, target entropy -|A| and a learned temperature.

  Defaults are the SAC paper's (Haarnoja et al. 2018, Table 1 of "Applications"):
  Adam 3e-4 for critics, policy and temperature, batch 256, two hidden layers of 256
  ReLU units per network, discount 0.99, target smoothing tau 0.005 after every
  gradient step, initial temperature 1.

  Args:
    action_spec: the environment's BoxActionSpec (the runner passes it).
    critic_network: Flax module class of the twin critics, (states, actions) ->
      (QNetworkOutput, QNetworkOutput) (`actor_critic_networks.TwinCriticNetwork`).
    policy_network: Flax module class taking `action_size`, states -> (mean,
      log_std) of the pre-tanh Gaussian.
    critic_learning_rate, actor_learning_rate, temperature_learning_rate: Adam step
      sizes of each part.
    gamma, update_horizon, batch_size: as the value agents.
    target_update_tau: Polyak rate of the critics' target.
    target_update_period: gradient steps between target updates (1).
    initial_temperature: alpha at initialisation.
    learn_temperature: False keeps alpha at `initial_temperature`.
    target_entropy: None for -|A|.
    regularizers: terms added to the critic's loss (Lp, DR3).
  """

  continuous_actions = True
  supports_prioritized_replay = False

  def __init__(self, action_spec,
               critic_network: Callable[..., Any] = actor_critic_networks.TwinCriticNetwork,
               policy_network: Callable[..., Any] = (
                   actor_critic_networks.GaussianPolicyNetwork),
               critic_learning_rate: float = 3e-4, actor_learning_rate: float = 3e-4,
               temperature_learning_rate: float = 3e-4, gamma: float = 0.99,
               update_horizon: int = 1, batch_size: int = 256,
               target_update_tau: float = 0.005, target_update_period: int = 1,
               initial_temperature: float = 1.0, learn_temperature: bool = True,
               target_entropy: Optional[float] = None,
               regularizers: Sequence[regularizer_terms.Regularizer] = ()):
    owner = type(self).__name__
    if getattr(action_spec, "low", None) is None:
      raise ValueError(f"{owner} needs a continuous action box (BoxActionSpec), got "
                       f"{action_spec!r}.")
    validation.check_int_at_least(f"{owner}.batch_size", batch_size, 1)
    validation.check_int_at_least(f"{owner}.update_horizon", update_horizon, 1)
    validation.check_int_at_least(f"{owner}.target_update_period", target_update_period, 1)
    validation.check_in_range(f"{owner}.gamma", gamma, 0.0, 1.0)
    validation.check_in_range(f"{owner}.target_update_tau", target_update_tau, 0.0, 1.0,
                              low_open=True)
    validation.check_positive(f"{owner}.initial_temperature", initial_temperature)
    for name, rate in (("critic_learning_rate", critic_learning_rate),
                       ("actor_learning_rate", actor_learning_rate),
                       ("temperature_learning_rate", temperature_learning_rate)):
      validation.check_positive(f"{owner}.{name}", rate)
    self.action_spec = action_spec
    self.action_shape = tuple(action_spec.shape)
    self.action_size = int(math.prod(self.action_shape))
    self._low = jnp.asarray(action_spec.low_array)
    self._high = jnp.asarray(action_spec.high_array)
    self.regularizers = tuple(regularizers) + regularizer_terms.regularization()
    check_continuous_terms(owner, self.regularizers)
    self._needs_next_features = any(t.needs_next_representation for t in self.regularizers)
    self.critic = critic_network()
    self.policy = policy_network(action_size=self.action_size)
    self.gamma = gamma
    self.update_horizon = update_horizon
    self.batch_size = batch_size
    self.target_update_tau = target_update_tau
    self.target_update_period = target_update_period
    self.initial_temperature = initial_temperature
    self.target_entropy = (sac_losses.default_target_entropy(self.action_shape)
                           if target_entropy is None else float(target_entropy))
    temperature = (optax.adam(temperature_learning_rate) if learn_temperature
                   else optax.set_to_zero())
    self._parts = {"critic": optax.adam(critic_learning_rate),
                   "actor": optax.adam(actor_learning_rate), "log_alpha": temperature}
    self._parts.update(self._extra_optimizers(critic_learning_rate))
    self.optimizer = optax.multi_transform(self._parts, {k: k for k in self._parts})

  def _extra_optimizers(self, critic_learning_rate: float) -> dict:
    """Optimizers of parameters a subclass adds (CQL's Lagrange multiplier)."""
    del critic_learning_rate
    return {}

  def _extra_params(self) -> dict:
    return {}

  # -------------------------------------------------------------- structure
  def init(self, key: jax.Array, state_shape: common.StateSpec) -> learner.TrainState:
    """Fresh TrainState for agent states of `state_shape` (common.state_spec)."""
    shape, dtype = common.shape_and_dtype(state_shape)
    critic_key, actor_key, rng = jax.random.split(key, 3)
    states = jnp.zeros((1,) + shape, dtype)
    actions = jnp.zeros((1,) + self.action_shape, jnp.float32)
    params = {"critic": self.critic.init(critic_key, states, actions),
              "actor": self.policy.init(actor_key, states),
              "log_alpha": jnp.asarray(math.log(self.initial_temperature), jnp.float32),
              **self._extra_params()}
    return learner.init_train_state(params, self.optimizer, rng)

  def to_unit(self, actions: jax.Array) -> jax.Array:
    """Box actions [B, *action_shape] -> [B, |A|] in [-1, 1] (what the networks see)."""
    flat = actions.astype(jnp.float32).reshape((actions.shape[0], self.action_size))
    return sac_losses.from_box(flat, self._low.reshape(-1), self._high.reshape(-1))

  def to_box(self, unit: jax.Array) -> jax.Array:
    """[..., |A|] in [-1, 1] -> box actions [..., *action_shape]."""
    box = sac_losses.to_box(unit, self._low.reshape(-1), self._high.reshape(-1))
    return box.reshape(unit.shape[:-1] + self.action_shape)

  def critics(self, critic_params: Any, states: jax.Array, unit_actions: jax.Array):
    """Both critics' outputs at (states, actions in [-1, 1])."""
    return self.critic.apply(critic_params, states, unit_actions)

  def policy_sample(self, actor_params: Any, states: jax.Array, key: jax.Array):
    """(a in [-1, 1]^|A|, log pi(a|s)) [B, |A|], [B], reparameterised."""
    mean, log_std = self.policy.apply(actor_params, states)
    return sac_losses.sample_tanh_gaussian(key, mean, log_std)

  def apply(self, params: Any, states: jax.Array, key: Optional[jax.Array] = None,
            actions: Optional[jax.Array] = None) -> networks.QNetworkOutput:
    """The first critic at (states, actions): q_values [B, 1] and phi(s, a) [B, D];
    `actions` (box) None: the policy's deterministic action tanh(mean)."""
    del key  # the critics are deterministic
    if actions is None:
      unit = jnp.tanh(self.policy.apply(params["actor"], states)[0])
    else:
      unit = self.to_unit(actions)
    return self.critics(params["critic"], states, unit)[0]

  def hidden_activations(self, params: Any, states: jax.Array,
                         actions: jax.Array) -> dict[str, jax.Array]:
    """{layer: activation} of the first critic (whose phi is Phi) at (states, box
    actions)."""
    return actor_critic_networks.first_critic_activations(
        self.critic, params["critic"], states, self.to_unit(actions))

  # -------------------------------------------------------------- acting
  def _explore(self, unit: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
    """Rows replaced by uniform actions with probability epsilon (u <= epsilon)."""
    if common.is_key_batch(key):
      def draw(row_key):
        explore_key, action_key = jax.random.split(row_key)
        return (jax.random.uniform(explore_key) <= epsilon,
                _uniform_box_noise(action_key, (self.action_size,)))
      explore, uniform = jax.vmap(draw)(key)
    else:
      explore_key, action_key = jax.random.split(key)
      explore = jax.random.uniform(explore_key, unit.shape[:1]) <= epsilon
      uniform = _uniform_box_noise(action_key, unit.shape)
    return self.to_box(jnp.where(explore[:, None], uniform, unit))

  def act(self, params: Any, states: jax.Array, key: jax.Array,
          epsilon: float) -> jax.Array:
    """Training actions: a ~ pi(.|s), uniform in the box with probability epsilon;
    `key` one key or one per row (then row b's draws depend on key b only)."""
    mean, log_std = self.policy.apply(params["actor"], states)
    if common.is_key_batch(key):
      keys = jax.vmap(jax.random.split)(key)
      noise = jax.vmap(lambda k: jax.random.normal(k, (self.action_size,)))(keys[:, 0])
      explore_keys = keys[:, 1]
    else:
      noise_key, explore_keys = jax.random.split(key)
      noise = jax.random.normal(noise_key, mean.shape)
    return self._explore(jnp.tanh(mean + jnp.exp(log_std) * noise), explore_keys, epsilon)

  def evaluation_act(self, params: Any, states: jax.Array, key: jax.Array,
                     epsilon: float) -> jax.Array:
    """The deterministic policy tanh(mean) in the box (uniform with probability
    epsilon; the configs evaluate at 0)."""
    mean, _ = self.policy.apply(params["actor"], states)
    return self._explore(jnp.tanh(mean), key, epsilon)

  def backup_next_action(self, params: Any, target_params: Any, batch,
                         key: jax.Array) -> jax.Array:
    """a' ~ pi(.|s') (box) with the online policy, as the soft backup draws it."""
    del target_params
    return self.to_box(self.policy_sample(params["actor"], batch.next_state, key)[0])

  # -------------------------------------------------------------- loss
  def loss(self, params, target_params, batch, key):
    """Critic, actor and temperature losses (and regularisers) summed; each part's
    gradient reaches only its own parameters."""
    next_key, actor_key, regularizer_key, extra_key = jax.random.split(key, 4)
    alpha = jnp.exp(params["log_alpha"])
    next_unit, next_log_prob = self.policy_sample(params["actor"], batch.next_state,
                                                  next_key)
    next_q1, next_q2 = self.critics(target_params["critic"], batch.next_state, next_unit)
    target = jax.lax.stop_gradient(sac_losses.soft_td_target(
        batch.reward, batch.discount, next_q1.q_values[:, 0], next_q2.q_values[:, 0],
        next_log_prob, alpha))
    data_unit = self.to_unit(batch.action)
    next_unit = jax.lax.stop_gradient(next_unit)
    phi_next = None
    if self._needs_next_features:  # one pass of the critics over (s, a) and (s', a')
      both_states = jnp.concatenate([batch.state, batch.next_state])
      both = self.critics(params["critic"], both_states,
                          jnp.concatenate([data_unit, next_unit]))
      size = batch.state.shape[0]
      q1, q2 = (jax.tree.map(lambda x: x[:size], out) for out in both)
      phi_next = both[0].representation[size:]
    else:
      q1, q2 = self.critics(params["critic"], batch.state, data_unit)
    critic = sac_losses.critic_loss(q1.q_values[:, 0], q2.q_values[:, 0], target)

    unit, log_prob = self.policy_sample(params["actor"], batch.state, actor_key)
    frozen = jax.lax.stop_gradient(params["critic"])
    policy_q1, policy_q2 = self.critics(frozen, batch.state, unit)
    actor = sac_losses.actor_loss(alpha, log_prob, policy_q1.q_values[:, 0],
                                  policy_q2.q_values[:, 0])
    temperature = sac_losses.temperature_loss(params["log_alpha"], log_prob,
                                              self.target_entropy)
    metrics = {"Train/TDLoss": critic, "Train/ActorLoss": actor,
               "Train/TemperatureLoss": temperature, "Train/Alpha": alpha,
               "Train/Entropy": -jnp.mean(log_prob), "Value/TDTarget": jnp.mean(target)}
    extra = self._extra_critic_loss(params, batch, q1, q2, extra_key, metrics)
    inputs = None
    if self.regularizers:
      # One "head": phi(s, a) is already action-dependent, so the action-aware
      # products DR3 may take reduce to the plain ones (a = a' = 0, one action).
      zeros = jnp.zeros(batch.reward.shape, jnp.int32)
      inputs = regularizer_terms.LossInputs(
          q_values=q1.q_values, phi=q1.representation, phi_next=phi_next, action=zeros,
          next_action=zeros, terminal=batch.terminal, state=batch.state)
    critic_total = common.add_terms(critic + extra, metrics, self.regularizers, inputs,
                                    regularizer_key, None)
    loss = critic_total + actor + temperature
    metrics["Train/Loss"] = loss  # the whole loss, not only the critics' part
    return loss, metrics

  def _extra_critic_loss(self, params, batch, q1, q2, key, metrics) -> jax.Array:
    """Terms a subclass adds to the critics' loss (CQL's); 0 for SAC."""
    del params, batch, q1, q2, key, metrics
    return jnp.zeros((), jnp.float32)

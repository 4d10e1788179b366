"""SAC's and CQL-SAC's pieces as pure functions of arrays, no network inside.

SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications": twin
critics, a tanh-squashed Gaussian policy, a learned temperature with target entropy
-|A|) and the continuous CQL(H) of Kumar et al. 2020, with its sampled log-sum-exp
(uniform and policy actions, importance-weighted by their densities) and both the
fixed-weight and the Lagrange variant. Shapes: B transitions, N sampled actions per
state, |A| action dimensions; `discount` is gamma^n * (1 - terminal) per transition,
as the replay gives it.
"""
import math

import jax
import jax.numpy as jnp

from batch_rl import losses

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the clamp of SAC's reference implementation


def _log1m_tanh_squared(pre_tanh: jax.Array) -> jax.Array:
  """log(1 - tanh(u)^2), stable for large |u|: 2 (log 2 - u - softplus(-2u))."""
  return 2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array,
                           pre_tanh: jax.Array) -> jax.Array:
  """log density of a = tanh(u) at u = pre_tanh, u ~ N(mean, exp(log_std)^2) per
  dimension, summed over the last (action) axis: the change of variables
  log N(u) - sum log(1 - tanh(u)^2). [...] for [..., |A|] inputs."""
  std = jnp.exp(log_std)
  z = (pre_tanh - mean) / std
  gaussian = -0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)
  return jnp.sum(gaussian - _log1m_tanh_squared(pre_tanh), axis=-1)


def sample_tanh_gaussian(key: jax.Array, mean: jax.Array,
                         log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(action in (-1, 1)^|A|, its log density), reparameterised: u = mean + std * eps."""
  pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
  return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(mean, log_std, pre_tanh)


def clamp_log_std(log_std: jax.Array) -> jax.Array:
  return jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


def to_box(action: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
  """An action in [-1, 1]^|A| mapped affinely onto the box [low, high]."""
  return low + 0.5 * (action + 1.0) * (high - low)


def from_box(action: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
  """The inverse of to_box: a box action mapped onto [-1, 1]^|A|."""
  return 2.0 * (action - low) / (high - low) - 1.0


def soft_td_target(reward: jax.Array, discount: jax.Array, next_q1: jax.Array,
                   next_q2: jax.Array, next_log_prob: jax.Array,
                   alpha: jax.Array) -> jax.Array:
  """r + discount * (min(Q1', Q2')(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s'),
  the target networks' values; no gradient. [B]."""
  next_value = jnp.minimum(next_q1, next_q2) - alpha * next_log_prob
  return losses.td_target(reward, discount, next_value)


def critic_loss(q1: jax.Array, q2: jax.Array, target: jax.Array) -> jax.Array:
  """Both critics' mean (Q_i(s, a) - target)^2, summed over the two. Scalar.

  The squared error as the reference implementations compute it (rlkit's
  `nn.MSELoss`, on which CQL's released code builds; jaxrl), twice the SAC paper's
  J_Q = 1/2 E[(Q - y)^2]: CQL's min_q_weight is calibrated against this scale. Adam
  makes SAC's own updates indifferent to the factor."""
  return jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2)


def actor_loss(alpha: jax.Array, log_prob: jax.Array, q1: jax.Array,
               q2: jax.Array) -> jax.Array:
  """mean(alpha log pi(a|s) - min(Q1, Q2)(s, a)), a ~ pi(.|s) reparameterised; the
  temperature is held fixed. Scalar."""
  return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - jnp.minimum(q1, q2))


def temperature_loss(log_alpha: jax.Array, log_prob: jax.Array,
                     target_entropy: float) -> jax.Array:
  """SAC's J(alpha) = mean(-alpha (log pi(a|s) + target entropy)), with alpha =
  exp(log_alpha) learned and the policy's log densities held fixed. Scalar."""
  return -jnp.mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(log_prob + target_entropy))


def default_target_entropy(action_shape) -> float:
  """-|A|, SAC's heuristic."""
  return -float(math.prod(action_shape))


def cql_logsumexp(q_random: jax.Array, q_current: jax.Array, q_next: jax.Array,
                  log_prob_current: jax.Array, log_prob_next: jax.Array,
                  action_size: int, temperature: float = 1.0) -> jax.Array:
  """CQL(H)'s estimate of log sum_a exp Q(s, a) per state, from N uniform actions
  on [-1, 1]^|A| and N actions each from pi(.|s) and pi(.|s') (all evaluated at s),
  each importance-weighted by its density: temperature * logsumexp over the 3N values
  (Q - log density) / temperature (Kumar et al. 2020's continuous code). The
  policies' densities carry no gradient. Inputs [B, N]; returns [B]."""
  uniform_log_density = -action_size * math.log(2.0)
  values = jnp.concatenate([
      q_random - uniform_log_density,
      q_current - jax.lax.stop_gradient(log_prob_current),
      q_next - jax.lax.stop_gradient(log_prob_next)], axis=1)
  return temperature * jax.scipy.special.logsumexp(values / temperature, axis=1)


def cql_penalty(logsumexp: jax.Array, q_data: jax.Array) -> jax.Array:
  """mean(log sum exp Q(s, .) - Q(s, a_data)): the gap CQL pushes down. Scalar."""
  return jnp.mean(logsumexp) - jnp.mean(q_data)


def cql_lagrange_losses(gap: jax.Array, log_alpha_prime: jax.Array,
                        target_action_gap: float) -> tuple[jax.Array, jax.Array]:
  """The Lagrange variant: (critic term, multiplier loss). The critics minimise
  alpha' (gap - target_action_gap) with alpha' = clip(exp(log_alpha_prime), 0, 1e6)
  held fixed; the multiplier minimises its negative with the gap held fixed, so
  alpha' grows while the gap exceeds the target and shrinks below it."""
  alpha_prime = jnp.clip(jnp.exp(log_alpha_prime), 0.0, 1e6)
  critic_term = jax.lax.stop_gradient(alpha_prime) * (gap - target_action_gap)
  multiplier_loss = -alpha_prime * jax.lax.stop_gradient(gap - target_action_gap)
  return critic_term, multiplier_loss

"""Exact tabular quantities in JAX (float32), for use inside the jitted FQI program.

Counterparts of `tabular` (numpy float64, the reference they are tested against):
Boltzmann policy, soft value, exact backup, soft Q^pi, exact H-step return.
Shapes: P [S, A, S], r [S], Q and pi [S, A].
"""
import jax
import jax.numpy as jnp


def soft_value(q: jax.Array, alpha: float) -> jax.Array:
  """[S]: alpha logsumexp(Q / alpha) (alpha > 0)."""
  return alpha * jax.nn.logsumexp(q / alpha, axis=-1)


def boltzmann_policy(q: jax.Array, alpha: float) -> jax.Array:
  return jax.nn.softmax(q / alpha, axis=-1)


def policy_value(q: jax.Array, policy: jax.Array, alpha: float) -> jax.Array:
  """[S]: sum_a pi(a|s) (Q(s, a) - alpha log pi(a|s))."""
  logp = jnp.log(jnp.where(policy > 0, policy, 1.0))
  return jnp.sum(policy * (q - alpha * logp), axis=-1)


def backup(values: jax.Array, transitions: jax.Array, rewards: jax.Array,
           gamma: float) -> jax.Array:
  """[S, A]: r(s) + gamma sum_s' P(s'|s, a) V(s')."""
  return rewards[:, None] + gamma * jnp.einsum("sat,t->sa", transitions, values)


def soft_q_pi(policy: jax.Array, transitions: jax.Array, rewards: jax.Array,
              gamma: float, alpha: float) -> jax.Array:
  """Soft Q^pi [S, A] by one linear solve in state space:
  V = (I - gamma P_pi)^-1 (r + alpha H_pi), Q = r + gamma P V."""
  logp = jnp.log(jnp.where(policy > 0, policy, 1.0))
  entropy = -jnp.sum(policy * logp, axis=-1)
  p_pi = jnp.einsum("sa,sat->st", policy, transitions)
  eye = jnp.eye(rewards.shape[0], dtype=p_pi.dtype)
  v = jnp.linalg.solve(eye - gamma * p_pi, rewards + alpha * entropy)
  return backup(v, transitions, rewards, gamma)


def expected_return(policy: jax.Array, transitions: jax.Array, rewards: jax.Array,
                    start_state: jax.Array, horizon: int) -> jax.Array:
  """Exact E[sum_{t<horizon} r(s_t)] from the start state under pi (scalar)."""
  p_pi = jnp.einsum("sa,sat->st", policy, transitions)
  d0 = jax.nn.one_hot(start_state, rewards.shape[0], dtype=p_pi.dtype)

  def step(d, _):
    return d @ p_pi, d @ rewards

  _, per_step = jax.lax.scan(step, d0, None, length=horizon)
  return jnp.sum(per_step)

"""TD targets and regression losses: pure functions of arrays, no network inside.

Agents combine these with coefficients; the regularisers' penalties (CQL, Lp, DR3, ...)
are in regularizers.py.
"""
import jax
import jax.numpy as jnp


def huber_loss(error: jax.Array, delta: float = 1.0) -> jax.Array:
  """Elementwise Huber loss: 0.5 e^2 for |e| <= delta, delta (|e| - 0.5 delta) beyond.

  Same as Dopamine's `losses.huber_loss` and TF's `tf.compat.v1.losses.huber_loss`
  with reduction NONE (the loss Dopamine's DQN uses).
  """
  abs_error = jnp.abs(error)
  quadratic = jnp.minimum(abs_error, delta)
  linear = abs_error - quadratic
  return 0.5 * quadratic**2 + delta * linear


def mse_loss(error: jax.Array) -> jax.Array:
  """Elementwise 0.5 e^2 (Dopamine's `losses.mse_loss`)."""
  return 0.5 * error**2


def td_target(reward: jax.Array, discount: jax.Array, next_value: jax.Array) -> jax.Array:
  """r + discount * V(s'); discount already holds gamma^n * (1 - terminal). [B]."""
  return jax.lax.stop_gradient(reward + discount * next_value)


def select(q_values: jax.Array, action: jax.Array) -> jax.Array:
  """q_values[b, action[b]] for q_values [B, A], action int [B] -> [B]."""
  return jnp.take_along_axis(q_values, action[:, None].astype(jnp.int32), axis=1)[:, 0]

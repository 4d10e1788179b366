"""Image augmentations for auxiliary losses (CURL), pure and jittable."""
import jax
import jax.numpy as jnp


def random_shift(states: jax.Array, key: jax.Array, pad: int) -> jax.Array:
  """Random shift of every state by up to `pad` pixels (DrQ / CURL-style crop).

  Each state [H, W, ...] is padded by `pad` on both sides of H and W by repeating its
  edge pixels, then an [H, W] window at an independent uniform offset in
  {0..2 pad}^2 is cut out, so the result has the input's shape and dtype.

  Args:
    states: [B, H, W, ...] (e.g. [B, 84, 84, 4] Atari or [B, 10, 10, C] MinAtar).
    key: PRNG key.
    pad: maximum shift in pixels; 0 returns `states` unchanged.
  """
  if pad == 0:
    return states
  batch, height, width = states.shape[:3]
  widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (states.ndim - 3)
  padded = jnp.pad(states, widths, mode="edge")
  offsets = jax.random.randint(key, (batch, 2), 0, 2 * pad + 1)

  def crop(image, offset):
    start = (offset[0], offset[1]) + (0,) * (image.ndim - 2)
    return jax.lax.dynamic_slice(image, start, (height, width) + image.shape[2:])

  return jax.vmap(crop)(padded, offsets)

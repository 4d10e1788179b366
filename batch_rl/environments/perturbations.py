"""Evaluation-time input perturbations: what the agent sees changes, nothing else does.

Gulcehre et al. 2022 (Section 11) evaluate agents trained on unperturbed data with
their observations perturbed at evaluation only: the environment plays as always, the
agent is handed a perturbed copy of its state. `perturb(kind, level, observations, key)`
is that copy, a pure function (jittable with `kind` and `level` static) of a batch of
agent states [N, H, W, ...] (Atari [N, 84, 84, 4]; MinAtar [N, 10, 10, C, 1]): every
trailing axis (channels, stacked frames) moves with H and W, so all frames of one
state get the same perturbation, and each state draws its own.

Kinds, and what a level means:

  shift   the random shift of DrQ (Yarats et al. 2020): the state is padded by `level`
          pixels on both sides of H and W by repeating its edge pixels, and an H x W
          window at a uniform offset in {0, ..., 2 level}^2 is cut out of it: a
          translation by -level..level pixels on each axis, edges replicated
          (`augmentation.random_shift`, which CURL trains with). `level` is an integer
          number of pixels, 0 <= level <= min(H, W) // 2: MinAtar 0..5, Atari 0..42
          (DrQ's training augmentation is 4 on 84 x 84).
  scale   random scaling as in Chen et al. 2017 (DeepLabv3, which draws factors in
          [0.5, 2]), as a zoom about the frame's centre resized back to H x W: a factor
          s = (1 + level)^u with u ~ Uniform[-1, 1] (log-uniform on [1/(1 + level),
          1 + level], zooming in and out alike; level 1 is DeepLabv3's [0.5, 2]); the
          output pixel at row y samples the input at c + (y - c) / s, c = (H - 1) / 2 (the
          same for columns), by bilinear interpolation, with coordinates outside the
          frame clamped to its edge (replicated, as the shift pads). s > 1 enlarges the
          centre and drops the border, s < 1 shrinks the picture and repeats its edge.
          0 <= level <= 1 for every frame size.

Level 0 is the identity for both. Results keep the input's dtype: uint8 values are
rounded to the nearest integer and clipped to [0, 255] (MinAtar's binary channels stay
0/1, since a bilinear mix of 0s and 1s rounds to one of them).

Randomness: `key` is one key per state (or one key, split into one per state), so a
state's perturbation depends on its own key only, not on the states beside it.
`perturbed_act` wraps an agent's `act` so that the evaluation's per-state keys drive
both the policy (unchanged, as in an unperturbed evaluation) and the perturbation
(the same keys folded with a number derived from the kind and level).
"""
import math
import zlib
from typing import Callable

import jax
import jax.numpy as jnp

from batch_rl import augmentation
from batch_rl.validation import ConfigError

KINDS = ("shift", "scale")
MAX_SCALE_LEVEL = 1.0


def level_range(kind: str, frame_shape) -> tuple[float, float]:
  """(lowest, highest) level of `kind` on frames of `frame_shape` (H, W, ...)."""
  check_kind(kind, "kind")
  if kind == "shift":
    return 0, min(frame_shape[0], frame_shape[1]) // 2
  return 0.0, MAX_SCALE_LEVEL


def check_kind(kind, binding: str) -> None:
  """ConfigError naming `binding` unless `kind` is one of KINDS."""
  if kind not in KINDS:
    raise ConfigError(f"`{binding}`: unknown perturbation {kind!r}; the perturbations are "
                      f"{', '.join(repr(k) for k in KINDS)}.")


def check_level(kind: str, level, frame_shape, binding: str) -> None:
  """ConfigError naming `binding` unless `level` is a valid level of `kind` on frames of
  `frame_shape` (an integer number of pixels for shift, a number for scale)."""
  check_kind(kind, binding)
  if len(frame_shape) < 2 or min(frame_shape[:2]) < 2:
    raise ConfigError(f"`{binding}`: the {kind!r} perturbation needs image observations "
                      f"(H, W, ...) of at least 2 x 2 pixels; this environment's have shape "
                      f"{tuple(frame_shape)}.")
  low, high = level_range(kind, frame_shape)
  frames = f"{frame_shape[0]} x {frame_shape[1]} frames"
  if kind == "shift":
    integral = isinstance(level, int) or (isinstance(level, float) and level.is_integer())
    if isinstance(level, bool) or not integral or not low <= level <= high:
      raise ConfigError(
          f"`{binding}`: a shift level is a whole number of pixels in [{low}, {high}] on "
          f"{frames} (at most half the frame), got {level!r}.")
    return
  valid = (isinstance(level, (int, float)) and not isinstance(level, bool)
           and math.isfinite(level) and low <= level <= high)
  if not valid:
    raise ConfigError(
        f"`{binding}`: a scale level is a number in [{low:g}, {high:g}] (zoom factors in "
        f"[1/(1 + level), 1 + level]), got {level!r}.")


def level_name(level) -> str:
  """The level as written in tags: 2 -> '2', 0.25 -> '0.25', 1.0 -> '1'."""
  return f"{float(level):g}"


def stream_id(kind: str, level) -> int:
  """A 31-bit number naming (kind, level), folded into the evaluation's keys to draw
  this perturbation: derived from the names alone, so a level's draws do not depend
  on which other levels are evaluated, or in what order."""
  return zlib.crc32(f"{kind}/{level_name(level)}".encode()) & 0x7FFFFFFF


def _row_keys(key: jax.Array, rows: int) -> jax.Array:
  """One key per row: `key` itself when it holds one per row, else split."""
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  single = key.ndim == (0 if typed else 1)
  return jax.random.split(key, rows) if single else key


def zoom(observations: jax.Array, factors: jax.Array) -> jax.Array:
  """Each state zoomed about its centre by its factor and resampled to its own size.

  Output row y of state n reads input row c + (y - c) / factors[n], c = (H - 1) / 2
  (columns likewise), interpolated bilinearly, coordinates clamped into the frame.
  Returns float32 [N, H, W, ...].

  Args:
    observations: [N, H, W, ...] of any real dtype.
    factors: [N] positive zoom factors (> 1 enlarges).
  """
  height, width = observations.shape[1:3]

  def one(image, factor):
    image = image.astype(jnp.float32)

    def axis(size):
      centre = (size - 1) / 2.0
      source = jnp.clip(centre + (jnp.arange(size, dtype=jnp.float32) - centre) / factor,
                        0.0, size - 1.0)
      low = jnp.floor(source).astype(jnp.int32)
      high = jnp.minimum(low + 1, size - 1)
      return low, high, source - low

    y0, y1, wy = axis(height)
    x0, x1, wx = axis(width)
    extra = (1,) * (image.ndim - 2)
    wy = wy.reshape((height, 1) + extra)
    wx = wx.reshape((1, width) + extra)
    rows0, rows1 = image[y0], image[y1]
    top = rows0[:, x0] * (1 - wx) + rows0[:, x1] * wx
    bottom = rows1[:, x0] * (1 - wx) + rows1[:, x1] * wx
    return top * (1 - wy) + bottom * wy

  return jax.vmap(one)(observations, factors)


def _as_dtype(values: jax.Array, dtype) -> jax.Array:
  """float `values` in `dtype`: integer types rounded and clipped to their range."""
  if jnp.issubdtype(dtype, jnp.integer):
    info = jnp.iinfo(dtype)
    return jnp.clip(jnp.round(values), info.min, info.max).astype(dtype)
  return values.astype(dtype)


def perturb(kind: str, level, observations: jax.Array, key: jax.Array) -> jax.Array:
  """`observations` [N, H, W, ...] perturbed by `kind` at `level` (module docstring).

  Pure and jittable with `kind` and `level` static; the result has the input's shape
  and dtype, and level 0 returns the input itself.

  Args:
    kind: one of KINDS.
    level: shift: pixels (an integer in [0, min(H, W) // 2]); scale: the range of the
      zoom factor, [1/(1 + level), 1 + level], level in [0, 1].
    observations: a batch of agent states, H and W first after the batch axis.
    key: one PRNG key per state ([N]), or one key for the batch.
  """
  check_level(kind, level, observations.shape[1:], "perturb level")
  if level == 0:
    return observations
  keys = _row_keys(key, observations.shape[0])
  if kind == "shift":
    pad = int(level)
    shift_one = lambda state, k: augmentation.random_shift(state[None], k, pad)[0]
    return jax.vmap(shift_one)(observations, keys)
  exponents = jax.vmap(lambda k: jax.random.uniform(k, (), minval=-1.0, maxval=1.0))(keys)
  factors = jnp.power(1.0 + float(level), exponents)
  return _as_dtype(zoom(observations, factors), observations.dtype)


def perturbed_act(act: Callable, kind: str, level) -> Callable:
  """`act(params, states, keys, epsilon)` that sees `perturb(kind, level, states, ...)`.

  The policy's keys are passed through unchanged (its epsilon-greedy draws are those of
  the unperturbed evaluation); the perturbation's are the same per-state keys folded
  with `stream_id(kind, level)`. Level 0 is `act` itself.
  """
  if level == 0:
    return act
  stream = stream_id(kind, level)

  def act_perturbed(params, states, keys, epsilon):
    rows = _row_keys(keys, states.shape[0])
    noise_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(rows, stream)
    return act(params, perturb(kind, level, states, noise_keys), keys, epsilon)

  return act_perturbed

"""The online replay buffer: Dopamine's circular buffer as a device pytree.

Same layout as the offline data (one shard of `sampler.ReplayArrays`: one frame per
entry, states are stacks of consecutive entries, S-1 zero entries before every
episode) and the same `add` semantics as `OutOfGraphReplayBuffer.add`, so the one
`sampler.gather_transitions` builds online and offline minibatches alike, and a
buffer can be written as a DQN Replay checkpoint unchanged.

What differs from offline is only how valid indices are found: the valid set changes
with every add, so instead of a precomputed list, `sample_indices` draws candidates
uniformly from the written range and keeps, per batch element, the first candidate
that passes Dopamine's `is_valid_transition` (which is what Dopamine's sampler does,
by rejection in a Python loop). With `candidates` draws per element the result is
uniform over valid indices unless all candidates of an element are invalid, which has
probability p^candidates for an invalid fraction p (p is a few percent on Atari:
(S-1+n) of every episode's entries, plus the cursor's neighbourhood); then the last
candidate is used anyway.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from batch_rl.replay import sampler


class CircularBuffer(NamedTuple):
  """A circular replay buffer (pytree). Shapes for capacity C.

  Attributes:
    observation: [1, C, *frame_shape] of the observation dtype (uint8 frames, or
      float32 vector observations).
    action: [1, C, *action_shape] of the action dtype (int32 scalars for discrete
      actions, float32 vectors for continuous ones).
    reward: float32 [1, C] (clipped to [-1, 1] by `add` when asked).
    terminal: uint8 [1, C].
    add_count: int32 scalar, entries added so far (padding included).
  """

  observation: jax.Array
  action: jax.Array
  reward: jax.Array
  terminal: jax.Array
  add_count: jax.Array

  @property
  def capacity(self) -> int:
    return self.action.shape[1]

  def as_replay_arrays(self) -> sampler.ReplayArrays:
    """The arrays sampler.gather_transitions reads (`valid` is unused online)."""
    return sampler.ReplayArrays(self.observation, self.action, self.reward, self.terminal,
                                valid=jnp.zeros((0,), jnp.int32))


def create(capacity: int, frame_shape: tuple[int, ...], observation_dtype=jnp.uint8,
           action_shape: tuple[int, ...] = (), action_dtype=jnp.int32) -> CircularBuffer:
  """An empty buffer of `capacity` entries.

  Args:
    capacity: entries C.
    frame_shape: shape of one observation (`observation_spec.shape`).
    observation_dtype: its dtype (`observation_spec.dtype`; uint8 for Atari/MinAtar).
    action_shape, action_dtype: of one action (`action_spec.shape` / `.dtype`):
      () int32 for discrete actions, (d,) float32 for continuous ones.
  """
  if capacity < 1:
    raise ValueError(f"replay capacity must be >= 1, got {capacity}")
  return CircularBuffer(
      observation=jnp.zeros((1, capacity) + tuple(frame_shape), observation_dtype),
      action=jnp.zeros((1, capacity) + tuple(action_shape), action_dtype),
      reward=jnp.zeros((1, capacity), jnp.float32),
      terminal=jnp.zeros((1, capacity), jnp.uint8),
      add_count=jnp.zeros((), jnp.int32))


def _put(buffer: CircularBuffer, frame, action, reward, terminal) -> CircularBuffer:
  cursor = buffer.add_count % buffer.capacity
  return CircularBuffer(
      observation=buffer.observation.at[0, cursor].set(
          frame.astype(buffer.observation.dtype)),
      action=buffer.action.at[0, cursor].set(action.astype(buffer.action.dtype)),
      reward=buffer.reward.at[0, cursor].set(reward.astype(jnp.float32)),
      terminal=buffer.terminal.at[0, cursor].set(terminal.astype(jnp.uint8)),
      add_count=buffer.add_count + 1)


def add(buffer: CircularBuffer, frame: jax.Array, action: jax.Array, reward: jax.Array,
        terminal: jax.Array, *, stack_size: int, clip_rewards: bool = True) -> CircularBuffer:
  """Adds (o_t, a_t, r_t, terminal_t) as OutOfGraphReplayBuffer.add (pure, jittable).

  Before the first entry and after every terminal, stack_size - 1 all-zero entries
  are added first, so an episode's first states are zero-padded stacks.
  """
  last = (buffer.add_count - 1) % buffer.capacity
  episode_start = (buffer.add_count == 0) | (buffer.terminal[0, last] == 1)
  zero_frame = jnp.zeros(buffer.observation.shape[2:], buffer.observation.dtype)
  zero_action = jnp.zeros(buffer.action.shape[2:], buffer.action.dtype)
  # Branch-free: each padding entry writes zeros at the cursor and advances it only
  # at an episode start, and rewrites the entry as it is otherwise. (A lax.cond would
  # choose between two whole buffers under vmap: a copy of the buffer per step.)
  for _ in range(stack_size - 1):
    cursor = buffer.add_count % buffer.capacity

    def pad_or_keep(field, zero_value, cursor=cursor):
      return field.at[0, cursor].set(jnp.where(episode_start, zero_value, field[0, cursor]))

    buffer = CircularBuffer(
        observation=pad_or_keep(buffer.observation, zero_frame),
        action=pad_or_keep(buffer.action, zero_action),
        reward=pad_or_keep(buffer.reward, jnp.float32(0)),
        terminal=pad_or_keep(buffer.terminal, jnp.uint8(0)),
        add_count=buffer.add_count + episode_start.astype(jnp.int32))
  reward = jnp.asarray(reward, jnp.float32)
  if clip_rewards:
    reward = jnp.clip(reward, -1.0, 1.0)
  return _put(buffer, jnp.asarray(frame), jnp.asarray(action), reward, jnp.asarray(terminal))


def is_valid(buffer: CircularBuffer, index: jax.Array, *, stack_size: int,
             update_horizon: int) -> jax.Array:
  """bool [B]: Dopamine's `is_valid_transition` for each index (pure, jittable).

  * out of [0, C): invalid;
  * not full (add_count < C): need stack_size - 1 <= i < cursor - update_horizon;
  * i in the invalid range around the cursor, cursor - n .. cursor + S - 1 (mod C):
    invalid (its n-step future or its stack is being overwritten);
  * a terminal among frames i-S+1 .. i-1: invalid (the stack straddles episodes).
  """
  capacity = buffer.capacity
  cursor = buffer.add_count % capacity
  full = buffer.add_count >= capacity
  valid = (index >= 0) & (index < capacity)
  valid &= full | ((index >= stack_size - 1) & (index < cursor - update_horizon))
  offsets = jnp.arange(stack_size + update_horizon)
  invalid_range = (cursor - update_horizon + offsets) % capacity  # [S + n]
  valid &= ~jnp.any(index[:, None] == invalid_range[None, :], axis=1)
  if stack_size > 1:
    previous = (index[:, None] + jnp.arange(-stack_size + 1, 0)[None, :]) % capacity
    valid &= ~jnp.any(buffer.terminal[0, previous] == 1, axis=1)
  return valid


def sample_indices(key: jax.Array, buffer: CircularBuffer, batch_size: int, *,
                   stack_size: int, update_horizon: int, candidates: int = 8) -> jax.Array:
  """int32 [B] valid indices, uniform over the valid set (see the module docstring)."""
  written = jnp.minimum(buffer.add_count, buffer.capacity)
  draws = jax.random.randint(key, (batch_size, candidates), 0, jnp.maximum(written, 1))
  ok = is_valid(buffer, draws.reshape(-1), stack_size=stack_size,
                update_horizon=update_horizon).reshape(batch_size, candidates)
  first = jnp.where(ok.any(axis=1), jnp.argmax(ok, axis=1), candidates - 1)
  return jnp.take_along_axis(draws, first[:, None], axis=1)[:, 0].astype(jnp.int32)


def sample_transitions(key: jax.Array, buffer: CircularBuffer, batch_size: int, *,
                       stack_size: int, update_horizon: int = 1, gamma: float = 0.99,
                       candidates: int = 8) -> sampler.Transition:
  """A uniform minibatch of valid transitions from the buffer (pure; use inside jit)."""
  index = sample_indices(key, buffer, batch_size, stack_size=stack_size,
                         update_horizon=update_horizon, candidates=candidates)
  return sampler.gather_transitions(buffer.as_replay_arrays(), index, stack_size=stack_size,
                                    update_horizon=update_horizon, gamma=gamma)


def to_numpy(buffer: CircularBuffer) -> dict[str, np.ndarray]:
  """Host copies of the buffer's arrays as DQN Replay's store (shard axis dropped)."""
  host = jax.device_get(buffer)
  return {"observation": host.observation[0], "action": host.action[0],
          "reward": host.reward[0], "terminal": host.terminal[0],
          "add_count": int(host.add_count)}

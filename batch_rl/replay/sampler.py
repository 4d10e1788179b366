"""Replay sampling as pure JAX functions, so it runs inside the jitted training loop.

The arrays follow Dopamine's circular-buffer layout (`OutOfGraphReplayBuffer`): one
frame per transition, a state at index i is the stack of frames i-S+1..i (modulo the
capacity), and after every terminal Dopamine stores S-1 all-zero "padding"
transitions, so the first state of an episode is [0, 0, 0, f0] with nothing masked at
sampling time. Several checkpoint shards of equal capacity C are held as a leading
shard axis. Which indices are valid states is decided once on the host (see
fixed_replay.valid_indices); this module only does index arithmetic, exactly as
`OutOfGraphReplayBuffer.sample_transition_batch` does for given indices:

  trajectory   = i, i+1, ..., i+n-1 (mod C), cut after the first terminal
  reward       = sum_j gamma^j r_{i+j} over the trajectory
  next state   = stack at i + len(trajectory) (mod C)
  terminal     = any terminal in the trajectory
  next_action  = action stored at i + len(trajectory)

Dtypes and shapes are the data's: frames are uint8 images (Atari, MinAtar) or float32
vectors (classic control), and a state keeps the frames' dtype with the stack on a new
trailing axis, so a stack of one CartPole observation (4,) is (4, 1). Actions are int32
scalars or float32 vectors [*action_shape] (continuous actions).
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp


class ReplayArrays(NamedTuple):
  """Fixed replay data, a pytree of (device) arrays.

  Attributes:
    observation: [num_shards, capacity, *frame_shape], one frame per transition
      (uint8, or float32 for vector observations).
    action: [num_shards, capacity, *action_shape], int32 scalars (discrete) or
      float32 vectors (continuous).
    reward: float32 [num_shards, capacity].
    terminal: uint8 [num_shards, capacity].
    valid: int32 [num_valid], flat indices shard * capacity + i of the states that
      may be sampled (uniformly).
    return_to_go: optional float32 [num_shards, capacity], discounted Monte-Carlo
      return from each entry to its episode's end (datasets/sources.py returns_to_go).
  """

  observation: jax.Array
  action: jax.Array
  reward: jax.Array
  terminal: jax.Array
  valid: jax.Array
  return_to_go: Optional[jax.Array] = None


class Transition(NamedTuple):
  """A batch of transitions, shapes for batch size B and stack size S.

  Attributes:
    state: [B, *frame_shape, S] of the observation dtype (frames stacked on the last
      axis, as Dopamine).
    action: [B, *action_shape] of the action dtype (int32 [B] for discrete actions).
    reward: float32 [B], discounted n-step sum of stored rewards.
    next_state: [B, *frame_shape, S], as state.
    next_action: [B, *action_shape], the action stored at the next state (SARSA-style
      backups).
    terminal: bool [B], a terminal occurred within the n-step trajectory.
    discount: float32 [B], gamma^n * (1 - terminal): multiplies the bootstrap value.
    index: int32 [B], flat index (shard * capacity + i) of each state.
    return_to_go: float32 [B], Monte-Carlo return from the state (None if the data
      has none).
    weight: float32 [B] importance weights of prioritized replay, else None.
  """

  state: jax.Array
  action: jax.Array
  reward: jax.Array
  next_state: jax.Array
  next_action: jax.Array
  terminal: jax.Array
  discount: jax.Array
  index: jax.Array
  return_to_go: Optional[jax.Array] = None
  weight: Optional[jax.Array] = None


def _frame_stack(observation, shard, index, stack_size):
  """Frames index-S+1..index of each shard, stacked last: [B, *frame_shape, S]."""
  capacity = observation.shape[1]
  offsets = jnp.arange(-stack_size + 1, 1)
  frames = (index[:, None] + offsets[None, :]) % capacity  # [B, S]
  stack = observation[shard[:, None], frames]  # [B, S, *frame_shape]
  return jnp.moveaxis(stack, 1, -1)


def gather_transitions(
    data: ReplayArrays,
    flat_index: jax.Array,
    *,
    stack_size: int,
    update_horizon: int = 1,
    gamma: float = 0.99,
) -> Transition:
  """Builds the transitions whose states sit at `flat_index` (int32 [B])."""
  capacity = data.action.shape[1]
  shard = flat_index // capacity
  index = flat_index % capacity

  steps = jnp.arange(update_horizon)
  trajectory = (index[:, None] + steps[None, :]) % capacity  # [B, n]
  trajectory_terminal = data.terminal[shard[:, None], trajectory] != 0
  terminal = trajectory_terminal.any(axis=1)
  # argmax of a bool row is the position of its first True.
  length = jnp.where(
      terminal, jnp.argmax(trajectory_terminal, axis=1) + 1, update_horizon)
  in_trajectory = steps[None, :] < length[:, None]
  discounts = jnp.asarray(gamma, jnp.float32) ** steps.astype(jnp.float32)
  rewards = data.reward[shard[:, None], trajectory]
  reward = jnp.sum(jnp.where(in_trajectory, discounts * rewards, 0.0), axis=1)

  next_index = (index + length) % capacity
  bootstrap = jnp.asarray(gamma, jnp.float32) ** update_horizon
  return Transition(
      state=_frame_stack(data.observation, shard, index, stack_size),
      action=data.action[shard, index],
      reward=reward,
      next_state=_frame_stack(data.observation, shard, next_index, stack_size),
      next_action=data.action[shard, next_index],
      terminal=terminal,
      discount=bootstrap * (1.0 - terminal.astype(jnp.float32)),
      index=flat_index.astype(jnp.int32),
      return_to_go=(None if data.return_to_go is None
                    else data.return_to_go[shard, index]),
  )


def sample_indices(key: jax.Array, data: ReplayArrays, batch_size: int) -> jax.Array:
  """Flat indices drawn uniformly, with replacement, from the valid states."""
  which = jax.random.randint(key, (batch_size,), 0, data.valid.shape[0])
  return data.valid[which]


def sample_transitions(
    key: jax.Array,
    data: ReplayArrays,
    batch_size: int,
    *,
    stack_size: int,
    update_horizon: int = 1,
    gamma: float = 0.99,
) -> Transition:
  """A uniform minibatch of valid transitions (pure; use inside jit)."""
  return gather_transitions(
      data, sample_indices(key, data, batch_size),
      stack_size=stack_size, update_horizon=update_horizon, gamma=gamma)

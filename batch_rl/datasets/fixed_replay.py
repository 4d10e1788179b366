"""Fixed (offline) replay: load DQN Replay checkpoint shards into one set of arrays.

Which checkpoints are loaded and which fraction of their transitions is used are
decided here, once, on the host; the result is a `ReplayArrays` pytree that the jitted
training loop samples from (sampler.py). Validity of a state index follows Dopamine's
`OutOfGraphReplayBuffer.is_valid_transition` exactly:

  * not full (add_count < capacity): stack_size - 1 <= i < cursor - update_horizon;
  * i is not in the invalid range around the write cursor (the one stored with the
    shard, united with the one for this reader's update horizon);
  * no terminal among frames i-S+1..i-1 (a stack may not straddle an episode end).
"""
import dataclasses
import logging
from typing import Optional, Sequence

import gin
import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import sources
from batch_rl.datasets import subsampling
from batch_rl.replay import sampler


@dataclasses.dataclass(frozen=True)
class FixedReplay:
  """Loaded offline data (host numpy arrays) and where it came from."""

  arrays: sampler.ReplayArrays
  replay_dir: str
  suffixes: tuple[int, ...]
  frame_shape: tuple[int, ...]
  stack_size: int
  update_horizon: int
  data_fraction: float
  subsample: str = "uniform_transitions"
  requested_transitions: Optional[int] = None  # `num_transitions` binding, if the size was a count

  @property
  def num_transitions(self) -> int:
    return int(self.arrays.valid.shape[0])

  @property
  def state_shape(self) -> tuple[int, ...]:
    return self.frame_shape + (self.stack_size,)

  @property
  def observation_dtype(self) -> np.dtype:
    """The frames' dtype: uint8, or float32 (vector observations); streamed frames
    (`arrays.observation` None) come from a store, which holds uint8."""
    if self.arrays.observation is None:
      return np.dtype(np.uint8)
    return np.dtype(self.arrays.observation.dtype)

  @property
  def action_shape(self) -> tuple[int, ...]:
    """Shape of one stored action: () for discrete actions, (d,) for continuous ones."""
    return tuple(self.arrays.action.shape[2:])

  def describe(self) -> str:
    return (f"{self.num_transitions:,} transitions from {self.replay_dir} "
            f"(checkpoints {list(self.suffixes)}, data_fraction {self.data_fraction}, "
            + (f"num_transitions {self.requested_transitions}, "
               if self.requested_transitions is not None else "")
            + (f"subsample {self.subsample}, " if self.subsample != "uniform_transitions" else "")
            + f"frames {self.frame_shape}"
            + (f" {self.observation_dtype}" if self.observation_dtype != np.uint8 else "")
            + f", stack {self.stack_size})")


def valid_indices(info: fmt.ShardInfo, terminal: np.ndarray, stack_size: int,
                  update_horizon: int) -> np.ndarray:
  """Indices of a shard that Dopamine's sampler may return, int64 ascending."""
  capacity = info.capacity
  index = np.arange(capacity)
  valid = np.ones(capacity, dtype=bool)
  if not info.is_full:
    valid &= (index >= stack_size - 1) & (index < info.cursor - update_horizon)
  invalid = fmt.invalid_range(info.cursor, capacity, stack_size, update_horizon)
  valid[np.asarray(info.invalid_range, dtype=np.int64) % capacity] = False
  valid[invalid] = False
  is_terminal = terminal != 0
  for back in range(1, stack_size):
    valid &= ~np.roll(is_terminal, back)  # roll(x, k)[i] == x[i - k], wrapping
  return np.flatnonzero(valid)


def choose_suffixes(available: Sequence[int], suffixes: Optional[Sequence[int]],
                    num_checkpoints: Optional[int], seed: int, replay_dir: str) -> list[int]:
  """Explicit suffixes, or `num_checkpoints` of the available ones drawn by seed."""
  if suffixes is not None and num_checkpoints is not None:
    raise ValueError("Bind at most one of `load_fixed_replay.suffixes` and "
                     "`load_fixed_replay.num_checkpoints`.")
  if suffixes is not None:
    missing = sorted(set(int(s) for s in suffixes) - set(available))
    if missing:
      raise fmt.ReplayFormatError(
          f"Checkpoint suffix(es) {missing} requested by `load_fixed_replay.suffixes` "
          f"are not complete in {replay_dir}; available: {list(available)}.")
    return sorted(set(int(s) for s in suffixes))
  if num_checkpoints is not None:
    if not 0 < num_checkpoints <= len(available):
      raise ValueError(
          f"`load_fixed_replay.num_checkpoints` = {num_checkpoints} but {replay_dir} "
          f"has {len(available)} complete checkpoints ({list(available)}).")
    rng = np.random.default_rng([seed, 0])
    return sorted(int(s) for s in rng.choice(available, num_checkpoints, replace=False))
  return list(available)


# The Runner passes these from the environment, agent and its own seed.
@gin.configurable(denylist=["game", "seed", "stack_size", "update_horizon", "gamma",
                            "stream"])
def load_fixed_replay(
    replay_dir: Optional[str] = None,
    *,
    data_root: Optional[str] = None,
    game: Optional[str] = None,
    run: int = 1,
    suffixes: Optional[Sequence[int]] = None,
    num_checkpoints: Optional[int] = None,
    data_fraction: float = 1.0,
    num_transitions: Optional[int] = None,
    subsample: str = "uniform_transitions",
    store_dir: Optional[str] = None,
    tfds_name: Optional[str] = None,
    tfds_data_dir: Optional[str] = None,
    seed: int = 0,
    stack_size: int = 4,
    update_horizon: int = 1,
    gamma: float = 0.99,
    num_workers: int = 4,
    stream: bool = False,
) -> FixedReplay:
  """Loads DQN Replay checkpoints into `ReplayArrays` (numpy, on the host).

  Args:
    replay_dir: a `replay_logs` directory (local or gs://), or its parent.
    data_root: alternative to replay_dir: <data_root>/<game>/<run>/replay_logs.
    game: game folder name as in the dataset ("Pong", "SpaceInvaders", ...).
    run: run folder (1..5 in the public dataset).
    suffixes: checkpoint suffixes to load (0..50 in the public dataset); default all.
    num_checkpoints: instead of suffixes, this many checkpoints chosen by `seed`.
    data_fraction: fraction of the loaded valid transitions to keep, chosen by
      `subsample` and `seed` (frames are all kept, so every kept state's stack and next
      state stay exactly as stored).
    num_transitions: instead of data_fraction, the number of valid transitions to keep.
    subsample: how the subset is chosen: 'uniform_transitions' (default; per
      checkpoint, uniformly without replacement), 'uniform_trajectories',
      'checkpoint_prefix' or 'first_fraction' (see datasets/subsampling.py).
    store_dir: read the checkpoints from a memory-mapped store made by
      `python -m batch_rl.data convert` instead of the .gz files (replay_dir,
      data_root and run are then not used).
    tfds_name: read RL Unplugged Atari from TFDS instead, e.g.
      'rlu_atari_checkpoints_ordered/Pong_run_1' (suffixes = its checkpoint_NN splits;
      datasets/rlu_tfds.py says how episodes map onto Dopamine's layout).
    tfds_data_dir: the TFDS data_dir (local or gs://) holding `tfds_name`.
    seed: seed of the checkpoint choice and of the subsample.
    stack_size: frames per state (4 for Atari, 1 for MinAtar).
    update_horizon: n of n-step returns; indices too close to the cursor are dropped.
    gamma: discount of the Monte-Carlo returns-to-go stored with the data.
    num_workers: shards decompressed in parallel.
    stream: the caller streams the frames from the store (datasets/streaming.py; set by
      the Runner's `stream_window_transitions`): they are not loaded or copied, and
      `arrays.observation` is None. Needs `store_dir`.

  Returns:
    FixedReplay whose arrays take the size of the loaded shards plus int32 indices;
    observation files are decompressed straight into one preallocated array, or, from
    a store, are a read-only memory map shared with every other process reading it.
  """
  scheme = subsampling.parse_scheme(subsample)
  if not 0.0 < data_fraction <= 1.0:
    raise ValueError(f"`load_fixed_replay.data_fraction` must be in (0, 1], got {data_fraction}.")
  source = sources.open_source(
      replay_dir=replay_dir, data_root=data_root, game=game, run=run, store_dir=store_dir,
      tfds_name=tfds_name, tfds_data_dir=tfds_data_dir, stack_size=stack_size,
      update_horizon=update_horizon, stream=stream, num_workers=num_workers)
  replay_dir = source.label
  available = source.available(require_complete=suffixes is None)
  chosen = choose_suffixes(available, suffixes, num_checkpoints, seed, replay_dir)
  infos = source.infos(chosen)
  fmt.check_same_layout(infos, replay_dir,
                        "Load them separately (`load_fixed_replay.suffixes`).")
  first = infos[0]
  if first.capacity <= stack_size + update_horizon:
    raise fmt.ReplayFormatError(
        f"Capacity {first.capacity} of {replay_dir} is too small for stack_size "
        f"{stack_size} and update_horizon {update_horizon}.")
  arrays = source.arrays(chosen, infos, gamma, frames=not stream)
  observation, action, reward, terminal, return_to_go = arrays
  shards = [
      subsampling.ShardData(info.suffix, info.capacity, info.add_count, terminal[slot],
                            valid_indices(info, terminal[slot], stack_size, update_horizon))
      for slot, info in enumerate(infos)]
  kept = subsampling.subsample(scheme, shards, data_fraction=data_fraction,
                               num_transitions=num_transitions, seed=seed,
                               stack_size=stack_size, update_horizon=update_horizon)
  capacity = first.capacity
  for slot, keep in enumerate(kept):
    logging.info("Checkpoint %d of %s: %d of %d valid transitions kept.", chosen[slot],
                 replay_dir, keep.size, shards[slot].valid.size)
  valid = np.concatenate([keep + slot * capacity for slot, keep in enumerate(kept)])
  valid = valid.astype(np.int32 if len(infos) * capacity < 2**31 else np.int64)
  if valid.size == 0:
    raise fmt.ReplayFormatError(
        f"No valid transitions in checkpoints {chosen} of {replay_dir} (every index is "
        "near the write cursor or straddles an episode end).")
  return FixedReplay(
      arrays=sampler.ReplayArrays(observation, action, reward, terminal, valid, return_to_go),
      replay_dir=replay_dir, suffixes=tuple(chosen), frame_shape=first.observation_shape,
      stack_size=stack_size, update_horizon=update_horizon, data_fraction=data_fraction,
      subsample=scheme.value, requested_transitions=num_transitions)

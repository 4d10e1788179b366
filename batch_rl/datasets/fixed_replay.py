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
import concurrent.futures
import dataclasses
import logging
import os
from typing import Optional, Sequence

import gin
import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import rlu_tfds
from batch_rl.replay import sampler
from batch_rl.datasets import store as store_lib
from batch_rl.datasets import subsampling
from batch_rl.tf_utils import gfile


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


def returns_to_go(info: fmt.ShardInfo, reward: np.ndarray, terminal: np.ndarray,
                  gamma: float) -> np.ndarray:
  """Discounted return from each entry to the end of its episode, float32 [capacity].

  G_t = r_t + gamma * G_{t+1} * (1 - terminal_t), accumulated backwards in time order
  (oldest entry first: index `cursor` of a full buffer, 0 otherwise). An episode still
  running at the newest entry of the checkpoint is cut there without bootstrapping, so
  its returns are truncated; in the public dataset a checkpoint is 1M consecutive
  steps, so this touches only its last episode (and the first episode's returns are
  complete because they start inside the checkpoint or are invalid states anyway).
  Entries past the cursor of a partial buffer get 0 (never sampled).
  """
  capacity = info.capacity
  order = (np.arange(capacity) + info.cursor) % capacity if info.is_full else np.arange(info.cursor)
  out = np.zeros(capacity, np.float32)
  g = 0.0
  rewards, terminals = reward[order].astype(np.float64), terminal[order] != 0
  values = np.empty(len(order))
  for t in range(len(order) - 1, -1, -1):
    g = rewards[t] + (0.0 if terminals[t] else gamma * g)
    values[t] = g
  out[order] = values
  return out


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
  """np.empty whose data starts on an `alignment`-byte boundary.

  jax.device_put on the CPU backend aliases an aligned numpy array instead of copying
  it, so loaded data is held once, not twice (benchmarks/memory.py measures the peak).
  """
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(nbytes + alignment, np.uint8)
  start = (-raw.ctypes.data) % alignment
  return raw[start:start + nbytes].view(dtype).reshape(shape)


def resolve_replay_dir(replay_dir: Optional[str], data_root: Optional[str],
                       game: Optional[str], run: int) -> str:
  """`replay_dir` if given, else <data_root>/<game>/<run>/replay_logs."""
  if replay_dir:
    nested = os.path.join(replay_dir, "replay_logs")
    # Accept <root>/<Game>/<run> as well as its replay_logs folder.
    if not gfile().glob(os.path.join(replay_dir, "add_count_ckpt.*")) and gfile().isdir(nested):
      return nested
    return replay_dir
  if not data_root or not game:
    raise ValueError(
        "No offline data given: bind `load_fixed_replay.replay_dir` to a DQN Replay "
        "directory (<root>/<Game>/<run>/replay_logs), or `load_fixed_replay.data_root` "
        "(the <root>) together with the game and `load_fixed_replay.run`.")
  return os.path.join(data_root, game, str(run), "replay_logs")


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


def _shard_arrays_from_files(replay_dir, chosen, infos, gamma, num_workers):
  """Decompresses the chosen checkpoints into preallocated aligned arrays."""
  num_shards, capacity = len(infos), infos[0].capacity
  observation = aligned_empty((num_shards, capacity) + infos[0].observation_shape,
                              infos[0].observation_dtype)
  action = aligned_empty((num_shards, capacity) + infos[0].action_shape,
                         infos[0].action_dtype)
  reward = aligned_empty((num_shards, capacity), np.float32)
  terminal = aligned_empty((num_shards, capacity), np.uint8)
  return_to_go = aligned_empty((num_shards, capacity), np.float32)

  def load(slot: int) -> None:
    shard = fmt.read_shard(replay_dir, chosen[slot], observation_out=observation[slot])
    action[slot] = shard.action
    reward[slot] = shard.reward
    terminal[slot] = shard.terminal
    return_to_go[slot] = returns_to_go(shard.info, shard.reward, shard.terminal, gamma)

  with concurrent.futures.ThreadPoolExecutor(max(1, min(num_workers, num_shards))) as pool:
    list(pool.map(load, range(num_shards)))
  return observation, action, reward, terminal, return_to_go


def _shard_arrays_from_store(opened: store_lib.Store, chosen, infos, gamma, frames=True):
  """Memory-mapped frames (no copy when the chosen slots are contiguous), small arrays copied.

  With frames=False the frames are left in the store (observation None; streaming.py
  reads them chunk by chunk).
  """
  slots = [opened.slot(s) for s in chosen]
  if not frames:
    observation = None
  elif slots == list(range(slots[0], slots[0] + len(slots))):
    observation = opened.observation[slots[0]:slots[0] + len(slots)]  # a view of the map
  else:
    logging.info("Checkpoints %s are not adjacent in store %s: copying their frames.",
                 chosen, opened.path)
    observation = aligned_empty((len(slots),) + opened.observation.shape[1:], np.uint8)
    for i, slot in enumerate(slots):
      observation[i] = opened.observation[slot]
  small = []
  for key, dtype in (("action", np.int32), ("reward", np.float32), ("terminal", np.uint8)):
    out = aligned_empty((len(slots), opened.capacity), dtype)
    out[:] = getattr(opened, key)[slots]
    small.append(out)
  action, reward, terminal = small
  return_to_go = aligned_empty((len(slots), opened.capacity), np.float32)
  for i, info in enumerate(infos):
    return_to_go[i] = returns_to_go(info, reward[i], terminal[i], gamma)
  return observation, action, reward, terminal, return_to_go


def _shard_arrays_from_tfds(builder, label, chosen, stack_size, update_horizon, gamma):
  """RL Unplugged checkpoints in Dopamine's layout, padded to one capacity (not full)."""
  pieces = [rlu_tfds.read_checkpoint(builder, s, stack_size) for s in chosen]
  capacity = max(p.action.size for p in pieces) + 1  # + 1: a cursor slot, as a partial buffer
  frame_shape = pieces[0].observation.shape[1:]
  observation = aligned_empty((len(pieces), capacity) + frame_shape, np.uint8)
  action = aligned_empty((len(pieces), capacity), np.int32)
  reward = aligned_empty((len(pieces), capacity), np.float32)
  terminal = aligned_empty((len(pieces), capacity), np.uint8)
  return_to_go = aligned_empty((len(pieces), capacity), np.float32)
  infos = []
  for slot, (suffix, piece) in enumerate(zip(chosen, pieces)):
    if piece.observation.shape[1:] != frame_shape:
      raise fmt.ReplayFormatError(f"{label}: checkpoint {suffix} has frames "
                                  f"{piece.observation.shape[1:]}, checkpoint {chosen[0]} "
                                  f"{frame_shape}.")
    n = piece.action.size
    for out, value in ((observation, piece.observation), (action, piece.action),
                       (reward, piece.reward), (terminal, piece.terminal)):
      out[slot, :n] = value
      out[slot, n:] = 0
    invalid = np.union1d(piece.never_valid, fmt.invalid_range(n, capacity, stack_size,
                                                             update_horizon))
    invalid.setflags(write=False)
    info = fmt.ShardInfo(replay_dir=label, suffix=int(suffix), capacity=capacity,
                         observation_shape=frame_shape, add_count=n, invalid_range=invalid,
                         dtypes={k: np.dtype(d) for k, d in (("observation", np.uint8),
                                 ("action", np.int32), ("reward", np.float32),
                                 ("terminal", np.uint8))})
    return_to_go[slot] = returns_to_go(info, reward[slot], terminal[slot], gamma)
    infos.append(info)
  return infos, (observation, action, reward, terminal, return_to_go)


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
  opened = builder = None
  if sum(bool(x) for x in (store_dir, tfds_name, replay_dir or data_root)) > 1:
    raise ValueError("Bind one data source: `load_fixed_replay.replay_dir` / `data_root` "
                     "(.gz files), `load_fixed_replay.store_dir` or "
                     "`load_fixed_replay.tfds_name`.")
  if stream and not store_dir:
    raise ValueError(
        "Streaming (`FixedReplayRunner.stream_window_transitions`) reads frames from a "
        "memory-mapped store, but `load_fixed_replay.store_dir` is not bound. Convert the "
        "data once with `python -m batch_rl.data convert REPLAY_DIR STORE` first and bind "
        "`load_fixed_replay.store_dir='STORE'`.")
  if store_dir:
    opened = store_lib.open_store(store_dir)
    replay_dir, available = store_dir, list(opened.suffixes)
    if opened.stack_size is not None and opened.stack_size != stack_size:
      raise ValueError(
          f"Store {store_dir!r} was converted from {opened.source} for stack_size "
          f"{opened.stack_size} (zero padding before each episode), but stack_size is "
          f"{stack_size}. Convert it again with `--stack_size {stack_size}`.")
  elif tfds_name:
    if not tfds_data_dir:
      raise ValueError("`load_fixed_replay.tfds_name` needs `load_fixed_replay.tfds_data_dir`"
                       " (the TFDS data_dir, local or gs://).")
    builder = rlu_tfds.open_builder(tfds_name, tfds_data_dir)
    replay_dir = f"tfds:{tfds_data_dir.rstrip('/')}/{tfds_name}"
    available = rlu_tfds.checkpoint_suffixes(builder)
  else:
    replay_dir = resolve_replay_dir(replay_dir, data_root, game, run)
    available = fmt.list_suffixes(replay_dir)
    incomplete = fmt.incomplete_suffixes(replay_dir)
    if incomplete and suffixes is None:
      # Silently training on fewer checkpoints than the folder holds would change the
      # experiment; an explicit suffix list is the way to leave some out.
      raise fmt.ReplayFormatError(
          f"Incomplete checkpoint(s) in {replay_dir}: " + "; ".join(
              f"suffix {s} is missing {missing}" for s, missing in incomplete.items()) +
          f". Complete checkpoints: {available}. Restore the files, or choose checkpoints "
          "with `load_fixed_replay.suffixes`.")
  chosen = choose_suffixes(available, suffixes, num_checkpoints, seed, replay_dir)
  tfds_arrays = None
  if opened is not None:
    infos = [opened.shard_info(s) for s in chosen]
  elif builder is not None:
    infos, tfds_arrays = _shard_arrays_from_tfds(builder, replay_dir, chosen, stack_size,
                                                 update_horizon, gamma)
  else:
    infos = [fmt.read_shard_info(replay_dir, s) for s in chosen]
  fmt.check_same_layout(infos, replay_dir,
                        "Load them separately (`load_fixed_replay.suffixes`).")
  first = infos[0]
  if first.capacity <= stack_size + update_horizon:
    raise fmt.ReplayFormatError(
        f"Capacity {first.capacity} of {replay_dir} is too small for stack_size "
        f"{stack_size} and update_horizon {update_horizon}.")

  if tfds_arrays is not None:
    arrays = tfds_arrays
  elif opened is not None:
    arrays = _shard_arrays_from_store(opened, chosen, infos, gamma, frames=not stream)
  else:
    arrays = _shard_arrays_from_files(replay_dir, chosen, infos, gamma, num_workers)
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

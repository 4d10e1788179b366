"""Where offline checkpoints come from: three sources behind one `Source` protocol.

  GzCheckpoints   Dopamine's .gz checkpoint files (local or gs://), the DQN Replay layout
  StoreCheckpoints  the memory-mapped store made by `python -m batch_rl.data convert`
  TfdsCheckpoints RL Unplugged Atari in TensorFlow Datasets, laid out as Dopamine's

Each lists its checkpoints, reads their headers (`ShardInfo`) and fills the arrays of
the chosen ones; `fixed_replay.load_fixed_replay` decides which checkpoints and which
transitions, the same way for all of them. `open_source` picks the source from the
bindings.
"""
import concurrent.futures
import logging
import os
from typing import Optional, Protocol, Sequence

import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import rlu_tfds
from batch_rl.datasets import store as store_lib
from batch_rl.host_arrays import aligned_empty
from batch_rl.tf_utils import gfile

# observation, action, reward, terminal, return_to_go: [S, C, ...] host arrays.
ShardArrays = tuple[Optional[np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


class Source(Protocol):
  """Checkpoints of one dataset.

  Attributes:
    label: what messages and the run's records name (a directory, a store, tfds:...).
  """

  label: str

  def available(self, require_complete: bool) -> list[int]:
    """The complete checkpoints' suffixes; with `require_complete`, incomplete ones
    are an error (choosing suffixes explicitly is the way to leave them out)."""

  def infos(self, chosen: Sequence[int]) -> list[fmt.ShardInfo]:
    """The headers of the chosen checkpoints."""

  def arrays(self, chosen: Sequence[int], infos: Sequence[fmt.ShardInfo], gamma: float,
             frames: bool = True) -> ShardArrays:
    """Their arrays; `frames=False` leaves the observations out (streaming)."""


class GzCheckpoints:
  """Dopamine's checkpoint files, decompressed into preallocated aligned arrays."""

  def __init__(self, replay_dir: str, num_workers: int = 4):
    self.label = replay_dir
    self.num_workers = num_workers

  def available(self, require_complete: bool) -> list[int]:
    available = fmt.list_suffixes(self.label)
    incomplete = fmt.incomplete_suffixes(self.label)
    if incomplete and require_complete:
      # Silently training on fewer checkpoints than the folder holds would change the
      # experiment; an explicit suffix list is the way to leave some out.
      raise fmt.ReplayFormatError(
          f"Incomplete checkpoint(s) in {self.label}: " + "; ".join(
              f"suffix {s} is missing {missing}" for s, missing in incomplete.items()) +
          f". Complete checkpoints: {available}. Restore the files, or choose checkpoints "
          "with `load_fixed_replay.suffixes`.")
    return available

  def infos(self, chosen):
    return [fmt.read_shard_info(self.label, s) for s in chosen]

  def arrays(self, chosen, infos, gamma, frames=True):
    del frames  # Streaming reads from a store only.
    return _arrays_from_files(self.label, chosen, infos, gamma, self.num_workers)


class StoreCheckpoints:
  """The memory-mapped store: frames are a view of the map when the slots are adjacent."""

  def __init__(self, store_dir: str, stack_size: int):
    self.opened = store_lib.open_store(store_dir)
    self.label = store_dir
    if self.opened.stack_size is not None and self.opened.stack_size != stack_size:
      raise ValueError(
          f"Store {store_dir!r} was converted from {self.opened.source} for stack_size "
          f"{self.opened.stack_size} (zero padding before each episode), but stack_size is "
          f"{stack_size}. Convert it again with `--stack_size {stack_size}`.")

  def available(self, require_complete):
    del require_complete  # A store holds complete checkpoints only.
    return list(self.opened.suffixes)

  def infos(self, chosen):
    return [self.opened.shard_info(s) for s in chosen]

  def arrays(self, chosen, infos, gamma, frames=True):
    return _arrays_from_store(self.opened, chosen, infos, gamma, frames)


class TfdsCheckpoints:
  """RL Unplugged checkpoints, read once when their headers are asked for."""

  def __init__(self, name: str, data_dir: str, stack_size: int, update_horizon: int):
    self.builder = rlu_tfds.open_builder(name, data_dir)
    self.label = f"tfds:{data_dir.rstrip('/')}/{name}"
    self.stack_size = stack_size
    self.update_horizon = update_horizon
    self._loaded = None

  def available(self, require_complete):
    del require_complete  # TFDS splits are complete or absent.
    return rlu_tfds.checkpoint_suffixes(self.builder)

  def infos(self, chosen):
    self._loaded = _arrays_from_tfds(self.builder, self.label, chosen, self.stack_size,
                                     self.update_horizon)
    return self._loaded[0]

  def arrays(self, chosen, infos, gamma, frames=True):
    del chosen, frames
    observation, action, reward, terminal = self._loaded[1]
    return_to_go = aligned_empty(terminal.shape, np.float32)
    for slot, info in enumerate(infos):
      return_to_go[slot] = returns_to_go(info, reward[slot], terminal[slot], gamma)
    return observation, action, reward, terminal, return_to_go


def open_source(*, replay_dir: Optional[str], data_root: Optional[str],
                game: Optional[str], run: int, store_dir: Optional[str],
                tfds_name: Optional[str], tfds_data_dir: Optional[str], stack_size: int,
                update_horizon: int, stream: bool, num_workers: int) -> Source:
  """The one source `load_fixed_replay`'s bindings name (ValueError naming them if
  they name none, several, or a combination that cannot work)."""
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
    return StoreCheckpoints(store_dir, stack_size)
  if tfds_name:
    if not tfds_data_dir:
      raise ValueError("`load_fixed_replay.tfds_name` needs `load_fixed_replay.tfds_data_dir`"
                       " (the TFDS data_dir, local or gs://).")
    return TfdsCheckpoints(tfds_name, tfds_data_dir, stack_size, update_horizon)
  return GzCheckpoints(resolve_replay_dir(replay_dir, data_root, game, run), num_workers)


def _arrays_from_files(replay_dir, chosen, infos, gamma, num_workers):
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


def _arrays_from_store(opened: store_lib.Store, chosen, infos, gamma, frames=True):
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


def _arrays_from_tfds(builder, label, chosen, stack_size, update_horizon):
  """RL Unplugged checkpoints in Dopamine's layout, padded to one capacity (not full)."""
  pieces = [rlu_tfds.read_checkpoint(builder, s, stack_size) for s in chosen]
  capacity = max(p.action.size for p in pieces) + 1  # + 1: a cursor slot, as a partial buffer
  frame_shape = pieces[0].observation.shape[1:]
  observation = aligned_empty((len(pieces), capacity) + frame_shape, np.uint8)
  action = aligned_empty((len(pieces), capacity), np.int32)
  reward = aligned_empty((len(pieces), capacity), np.float32)
  terminal = aligned_empty((len(pieces), capacity), np.uint8)
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
    infos.append(info)
  return infos, (observation, action, reward, terminal)

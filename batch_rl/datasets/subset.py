"""Dataset tools behind `python -m batch_rl.data`: inspect a dataset, write a subset.

`write_subset` writes the transitions a subsampling scheme keeps as a *smaller
Dopamine-format dataset* that Dopamine's own OutOfGraphReplayBuffer (and
load_fixed_replay) read with exactly the kept states valid and every kept transition
unchanged. Per checkpoint, each kept state i needs frames i-S+1 .. i+n (its stack, its
n-step trajectory and next state); those windows, merged where they overlap, are
copied in time order into a new buffer (capacity: the longest copy + 1, the same for
every checkpoint), saved as not full (add_count = copied entries), and every copied entry that is not a kept state is
listed in `invalid_range`, which both readers treat as never-sample. The subset supports
update horizons up to the `update_horizon` it was written with; its returns-to-go are
those of the copied pieces (episodes are cut where windows end).
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import sources
from batch_rl.datasets import store as store_lib
from batch_rl.datasets import subsampling
from batch_rl.datasets import verify


def compact_layout(shard: subsampling.ShardData, kept: np.ndarray, stack_size: int,
                   update_horizon: int) -> tuple[np.ndarray, np.ndarray]:
  """Where a subset's entries come from and which of them are its states.

  Returns (source, states): int64 storage indices of the source checkpoint to copy, in
  order, and the positions in that copy of the kept states (ascending).
  """
  pos = np.sort(subsampling.time_position(shard, kept))
  if pos.size == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  starts, ends = pos - (stack_size - 1), pos + update_horizon  # inclusive windows
  # A new piece starts where a window begins after the previous one ended (+1: adjacent
  # windows are one contiguous piece).
  new_piece = np.concatenate([[True], starts[1:] > np.maximum.accumulate(ends)[:-1] + 1])
  piece = np.cumsum(new_piece) - 1
  piece_start = starts[new_piece]
  piece_end = np.maximum.reduceat(ends, np.flatnonzero(new_piece))
  lengths = piece_end - piece_start + 1
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  time_source = np.concatenate([np.arange(a, b + 1) for a, b in zip(piece_start, piece_end)])
  states = offsets[piece] + (pos - piece_start[piece])
  source = (time_source + shard.cursor) % shard.capacity if shard.is_full else time_source
  return source.astype(np.int64), states.astype(np.int64)


def write_subset(replay_dir: str, out_dir: str, scheme: str, *, data_fraction: float = 1.0,
                 num_transitions: Optional[int] = None, seed: int = 0,
                 suffixes: Optional[Sequence[int]] = None, stack_size: int = 4,
                 update_horizon: int = 1,
                 on_checkpoint: Optional[Callable[[int], None]] = None) -> dict[int, int]:
  """Writes the subset chosen by `scheme` to `out_dir`; returns {suffix: states kept}.

  `replay_dir` is a replay_logs directory or a converted store (then nothing but the
  kept pieces is read into memory; from .gz files the chosen checkpoints are loaded).

  Checkpoints keep their suffixes; one from which nothing is kept is not written.
  """
  source_store = store_lib.open_store(replay_dir) if store_lib.is_store(replay_dir) else None
  data = fixed_replay.load_fixed_replay(
      None if source_store else replay_dir, store_dir=replay_dir if source_store else None,
      suffixes=suffixes, data_fraction=data_fraction,
      num_transitions=num_transitions, subsample=scheme, seed=seed, stack_size=stack_size,
      update_horizon=update_horizon)
  a = data.arrays
  capacity = a.observation.shape[1]
  valid = np.asarray(a.valid)
  layouts = {}
  for slot, suffix in enumerate(data.suffixes):
    kept = valid[(valid >= slot * capacity) & (valid < (slot + 1) * capacity)] - slot * capacity
    if kept.size:
      add_count = (source_store.add_counts[source_store.slot(suffix)] if source_store
                   else fmt.read_shard_info(replay_dir, suffix).add_count)
      shard = subsampling.ShardData(suffix, capacity, add_count, a.terminal[slot], kept)
      layouts[slot] = (kept.size,) + compact_layout(shard, kept, stack_size, update_horizon)
  # One capacity for all (load_fixed_replay stacks checkpoints of equal capacity): the
  # longest copy plus one unused entry; each buffer is saved as not full at its length.
  new_capacity = max((source.size for _, source, _ in layouts.values()), default=0) + 1
  written = {}
  for slot, suffix in enumerate(data.suffixes):
    if slot in layouts:
      count, source, states = layouts[slot]
      size = source.size
      invalid = np.setdiff1d(np.arange(size + 1), states)
      invalid = np.union1d(invalid, fmt.invalid_range(size, new_capacity, stack_size,
                                                      update_horizon))

      def padded(x):
        out = np.zeros((new_capacity,) + x.shape[1:], x.dtype)
        out[:size] = x[source]
        return out

      fmt.write_shard(out_dir, suffix, observation=padded(a.observation[slot]),
                      action=padded(a.action[slot]), reward=padded(a.reward[slot]),
                      terminal=padded(a.terminal[slot]), add_count=size,
                      invalid_range=invalid)
      written[int(suffix)] = int(count)
    if on_checkpoint is not None:
      on_checkpoint(suffix)
  return written


def inspect(path: str) -> str:
  """A human-readable summary of a replay directory or a converted store: headers, and
  the small arrays of partial checkpoints (notes on stale tails and add_counts that run
  backwards; frames are not read)."""
  if store_lib.is_store(path):
    s = store_lib.open_store(path)
    lines = [f"memory-mapped store {path} (converted from {s.source})",
             f"  checkpoints {list(s.suffixes)}, capacity {s.capacity:,}, frames {s.frame_shape}",
             f"  frames on disk {s.observation.nbytes / 1e9:.2f} GB"]
    for suffix, add_count in zip(s.suffixes, s.add_counts):
      lines.append(f"  ckpt {suffix}: add_count {add_count:,}")
    return "\n".join(lines)
  replay_dir = sources.resolve_replay_dir(path, None, None, 1)
  complete = fmt.list_suffixes(replay_dir)
  incomplete = fmt.incomplete_suffixes(replay_dir)
  lines = [f"DQN Replay directory {replay_dir}",
           f"  complete checkpoints ({len(complete)}): {complete}"]
  for suffix, missing in incomplete.items():
    lines.append(f"  INCOMPLETE checkpoint {suffix}: missing {[os.path.basename(m) for m in missing]}")
  total, notes, add_counts = 0, [], {}
  for suffix in complete:
    info = fmt.read_shard_info(replay_dir, suffix)
    add_counts[suffix] = info.add_count
    if not info.is_full:  # the small arrays past the cursor (frames are left unread)
      notes += verify.tail_notes(
          suffix, info, fmt.read_store_array(replay_dir, "terminal", suffix),
          [fmt.read_store_array(replay_dir, key, suffix) for key in ("action", "reward")])
    stored = info.capacity if info.is_full else info.cursor
    total += stored
    lines.append(f"  ckpt {suffix}: capacity {info.capacity:,}, add_count {info.add_count:,}"
                 f" ({'full' if info.is_full else 'partial'}, {stored:,} stored), frames "
                 f"{info.observation_shape}, dtypes "
                 f"{ {k: str(v) for k, v in info.dtypes.items()} }")
  lines.append(f"  stored transitions: {total:,}")
  lines += [f"  NOTE: {note}" for note in notes + verify.order_notes(add_counts)]
  return "\n".join(lines)

"""Integrity of a DQN Replay directory: per-file checksums and per-checkpoint statistics.

`verify(replay_dir)` decompresses every checkpoint completely (gzip then checks its CRC
and length trailer, so a truncated or corrupted file is found and named), hashes every
file (SHA-256 of the bytes on disk), and computes what a user checks a download
against: transitions stored and valid, episodes, and the histograms of the actions and
rewards of the valid transitions. The report is JSON; comparing it with an earlier one
(`changed_files`) names the files whose bytes changed since.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Optional, Sequence

import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.tf_utils import gfile

_HASH_CHUNK = 8 << 20
_MAX_DISTINCT_REWARDS = 32


def sha256(path: str) -> tuple[str, int]:
  """Hex SHA-256 and size in bytes of a file (local or gs://)."""
  digest, size = hashlib.sha256(), 0
  with gfile().GFile(path, "rb") as f:
    while chunk := f.read(_HASH_CHUNK):
      digest.update(chunk)
      size += len(chunk)
  return digest.hexdigest(), size


def checkpoint_files(replay_dir: str, suffix: int) -> list[str]:
  """Every `*_ckpt.<suffix>.gz` file of the checkpoint (pickles included: hashed, never opened)."""
  tail = f"_ckpt.{int(suffix)}.gz"
  return sorted(os.path.join(replay_dir, name) for name in gfile().listdir(replay_dir)
                if name.endswith(tail) and not name.startswith("."))


def histogram(values: np.ndarray) -> dict[str, int]:
  """{value: count} for few distinct values, else 20 equal-width bins {"[lo, hi)": count}."""
  values = np.asarray(values)
  distinct, counts = np.unique(values, return_counts=True)
  if distinct.size <= _MAX_DISTINCT_REWARDS:
    return {f"{v:g}" if values.dtype.kind == "f" else str(int(v)): int(c)
            for v, c in zip(distinct, counts)}
  counts, edges = np.histogram(values, bins=20)
  return {f"[{lo:g}, {hi:g})": int(c) for lo, hi, c in zip(edges[:-1], edges[1:], counts)}


def shard_stats(shard: fmt.Shard, stack_size: int = 4) -> dict:
  """Statistics of one checkpoint (valid = Dopamine-samplable with update_horizon 1)."""
  info = shard.info
  valid = fixed_replay.valid_indices(info, shard.terminal, stack_size, 1)
  stored = info.capacity if info.is_full else info.cursor  # entries holding this run's data
  return {
      "capacity": info.capacity,
      "add_count": info.add_count,
      "frame_shape": list(info.observation_shape),
      "stored_transitions": int(stored),
      "valid_transitions": int(valid.size),
      "episodes_ended": int(np.count_nonzero(shard.terminal[:stored])),
      "action_histogram": histogram(shard.action[valid]),
      "reward_histogram": histogram(shard.reward[valid]),
      "mean_frame": float(shard.observation[valid[::max(1, valid.size // 1000)]].mean())
      if valid.size else 0.0,
  }


def tail_notes(suffix: int, info: fmt.ShardInfo, terminal: np.ndarray,
               others: Sequence[np.ndarray] = ()) -> list[str]:
  """Information (not errors) about the entries of a partial checkpoint past its cursor.

  Dopamine's buffer is saved whole, so a checkpoint written before its buffer filled
  up can hold, past the cursor, entries of an earlier pass (a stale tail). They are
  never sampled (valid states end before the cursor), but they are data a reader
  should know is there. `others`: further arrays of the checkpoint to look at
  (actions, rewards, frames).
  """
  if info.is_full or info.cursor >= info.capacity:
    return []
  past = slice(info.cursor, info.capacity)
  held = terminal[past] != 0
  for array in others:
    tail = np.asarray(array[past])
    held |= tail.reshape(tail.shape[0], -1).any(axis=1)
  notes = []
  if held.any():
    notes.append(f"checkpoint {suffix}: {int(held.sum()):,} of the {info.capacity - info.cursor:,} "
                 f"entries past the cursor (add_count {info.add_count:,}, capacity "
                 f"{info.capacity:,}) hold data: a stale tail, never sampled.")
  ends = int(np.count_nonzero(terminal[past]))
  if ends:
    notes.append(f"checkpoint {suffix}: {ends:,} terminal flags past the cursor (in the "
                 "stale tail; not counted as episodes).")
  return notes


def order_notes(add_counts: dict[int, int]) -> list[str]:
  """Information about add_counts that run backwards from one checkpoint to the next
  (a partial last checkpoint, saved from a buffer that was emptied or restarted)."""
  suffixes = sorted(add_counts)
  return [f"checkpoint {b}: add_count {add_counts[b]:,} runs backwards from checkpoint "
          f"{a}'s {add_counts[a]:,}."
          for a, b in zip(suffixes, suffixes[1:]) if add_counts[b] < add_counts[a]]


def verify(replay_dir: str, suffixes: Optional[Sequence[int]] = None, stack_size: int = 4,
           on_checkpoint: Optional[Callable[[int], None]] = None) -> dict:
  """Checks every checkpoint of `replay_dir`; returns the JSON-able report.

  report["checkpoints"][str(suffix)] holds "files" ({path: {"sha256", "bytes"}}) and
  either "stats" (shard_stats) or "error" (the message naming the file at fault).
  report["errors"] lists those messages; report["notes"] what is unusual but not
  wrong (tail_notes, order_notes); report["totals"] sums the statistics.
  """
  found = fmt.incomplete_suffixes(replay_dir)  # also raises if the directory is missing
  try:
    complete = fmt.list_suffixes(replay_dir)
  except fmt.ReplayFormatError:
    complete = []
  every = sorted(set(complete) | set(found))
  chosen = every if suffixes is None else sorted(int(s) for s in suffixes)
  report = {"replay_dir": replay_dir, "stack_size": stack_size, "checkpoints": {},
            "errors": [], "notes": []}
  buffer = None  # one observation buffer reused across checkpoints of the same shape
  for suffix in chosen:
    entry = {"files": {}}
    for path in checkpoint_files(replay_dir, suffix):
      digest, size = sha256(path)
      entry["files"][os.path.basename(path)] = {"sha256": digest, "bytes": size}
    try:
      if suffix in found:
        raise fmt.ReplayFormatError(f"Checkpoint {suffix} of {replay_dir!r} is incomplete: "
                                    f"missing {found[suffix]}.")
      if suffix not in every:
        raise fmt.ReplayFormatError(f"Checkpoint {suffix} is not in {replay_dir!r}; "
                                    f"available: {every}.")
      info = fmt.read_shard_info(replay_dir, suffix)
      shape = (info.capacity,) + info.observation_shape
      if buffer is None or buffer.shape != shape:
        buffer = None
        buffer = np.empty(shape, np.uint8)
      shard = fmt.read_shard(replay_dir, suffix, observation_out=buffer)
      entry["stats"] = shard_stats(shard, stack_size)
      report["notes"] += tail_notes(suffix, info, shard.terminal,
                                    (shard.action, shard.reward, shard.observation))
    except fmt.ReplayFormatError as e:
      entry["error"] = str(e)
      report["errors"].append(str(e))
    report["checkpoints"][str(suffix)] = entry
    if on_checkpoint is not None:
      on_checkpoint(suffix)
  stats = [c["stats"] for c in report["checkpoints"].values() if "stats" in c]
  report["notes"] += order_notes({int(k): c["stats"]["add_count"]
                                  for k, c in report["checkpoints"].items() if "stats" in c})
  report["totals"] = {key: sum(s[key] for s in stats) for key in
                      ("stored_transitions", "valid_transitions", "episodes_ended")}
  return report


def changed_files(previous: dict, current: dict) -> list[str]:
  """Files whose checksum or size differs from `previous`, or that disappeared."""
  changed = []
  for suffix, old in previous.get("checkpoints", {}).items():
    new = current.get("checkpoints", {}).get(suffix)
    if new is None:
      continue  # not verified this time
    for name, meta in old.get("files", {}).items():
      if new["files"].get(name) != meta:
        changed.append(name)
  return sorted(changed)


def write_report(report: dict, path: str) -> None:
  """Writes the report as JSON atomically (temp file + rename)."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with gfile().GFile(tmp, "w") as f:
    f.write(json.dumps(report, indent=1, sort_keys=True))
  gfile().rename(tmp, path, overwrite=True)


def read_report(path: str) -> Optional[dict]:
  if not gfile().exists(path):
    return None
  with gfile().GFile(path, "r") as f:
    return json.loads(f.read())

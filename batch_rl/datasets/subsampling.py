"""Named ways of taking "X% of the dataset", deterministic by seed.

Papers that say "we train on 5% of DQN Replay" do not mean the same thing; at least
four constructions are in use, and they give different data (different episode
coverage, different behaviour-policy quality). Each is a pure function here, choosing
which *valid* state indices (fixed_replay.valid_indices) of each loaded checkpoint are
kept. Frames are never rewritten, so every kept state's stack, n-step trajectory and
next state are exactly as stored.

  uniform_transitions   uniform without replacement over the valid transitions of each
                        checkpoint (stratified by checkpoint). Kumar et al. 2021 (IUP,
                        "we randomly subsample the DQN Replay dataset", 5% and 20%),
                        Gulcehre et al. 2022 ("uniformly sampled different proportions
                        ... of the transitions" of RL Unplugged Atari). The default, and
                        exactly what `load_fixed_replay.data_fraction` always did.
  uniform_trajectories  whole episodes drawn uniformly at random, across all loaded
                        checkpoints, until the size is reached (the last one is kept
                        whole, so the size is reached or exceeded by less than one
                        episode). Agarwal et al. 2020 (batch_rl) subsample episodes for
                        their dataset-size experiments this way. An
                        episode cut by a checkpoint boundary counts as one trajectory
                        of each checkpoint.
  checkpoint_prefix     the first entries of each checkpoint *file*, in storage order
                        (index 0 upwards), as Dopamine's labs/offline_rl fixed replay
                        (which truncates each loaded buffer to `replay_capacity`) and the
                        CQL Atari code (Kumar et al. 2020, 1% / 10% runs) do. Only states
                        whose stack and n-step future lie inside the file are eligible
                        (no wrap-around at the file's ends).
  first_fraction        the earliest logged data: the loaded checkpoints in suffix order
                        (suffix = training time), each in time order (oldest entry first),
                        cut once the size is reached. Lower-quality initial data, as in
                        DR3's "first 10%" setting (Kumar et al. 2022). It applies to the checkpoints loaded: load them all for the
                        paper's setting.

Size: `data_fraction` (of the loaded checkpoints' valid transitions) or
`num_transitions` (an exact count of valid transitions, the trajectory scheme
rounding up to whole episodes). Per-checkpoint schemes split a transition count over
checkpoints in proportion to their valid transitions (largest remainder).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Optional, Sequence

import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt


class Scheme(str, enum.Enum):
  UNIFORM_TRANSITIONS = "uniform_transitions"
  UNIFORM_TRAJECTORIES = "uniform_trajectories"
  CHECKPOINT_PREFIX = "checkpoint_prefix"
  FIRST_FRACTION = "first_fraction"


SCHEMES = tuple(s.value for s in Scheme)


def parse_scheme(name, binding: str = "load_fixed_replay.subsample") -> Scheme:
  """The Scheme called `name`; ValueError naming `binding` and the choices otherwise."""
  try:
    return Scheme(name)
  except ValueError:
    raise ValueError(f"`{binding}` = {name!r} is not a subsampling scheme; choose one of "
                     f"{list(SCHEMES)}.") from None


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: ndarray fields break ==.
class ShardData(fmt.CircularPosition):
  """What the schemes need to know about one loaded checkpoint.

  Attributes:
    suffix: checkpoint suffix (training-time order of checkpoints).
    capacity: C, entries in the file.
    add_count: transitions ever added (full buffer when >= capacity).
    terminal: uint8/bool [C] terminal flags in storage order.
    valid: int64 [M] ascending storage indices of valid states.
  """

  suffix: int
  capacity: int
  add_count: int
  terminal: np.ndarray
  valid: np.ndarray



def time_position(shard: ShardData, index: np.ndarray) -> np.ndarray:
  """Age rank of storage indices: 0 = oldest entry of the checkpoint."""
  index = np.asarray(index, np.int64)
  return (index - shard.cursor) % shard.capacity if shard.is_full else index


def episode_ids(shard: ShardData) -> np.ndarray:
  """int64 [C]: episode number of each storage entry, counted in time order.

  An episode ends at its terminal entry; the next entry (Dopamine's zero padding, then
  the first frame) starts the next one. Stale entries of a partial buffer get -1.
  """
  cap = shard.capacity
  order = (np.arange(cap) + shard.cursor) % cap if shard.is_full else np.arange(shard.cursor)
  ends = np.asarray(shard.terminal)[order] != 0
  ids_in_time = np.concatenate([[0], np.cumsum(ends[:-1])]) if order.size else order
  out = np.full(cap, -1, np.int64)
  out[order] = ids_in_time
  return out


def split_count(total: int, weights: Sequence[int]) -> np.ndarray:
  """Integers summing to `total`, proportional to `weights` (largest remainder)."""
  weights = np.asarray(weights, np.float64)
  exact = total * weights / weights.sum()
  out = np.floor(exact).astype(np.int64)
  rest = int(total - out.sum())
  # Ties broken by position so the split is a pure function of its inputs.
  out[np.argsort(-(exact - out), kind="stable")[:rest]] += 1
  return out


def _per_shard_sizes(shards, data_fraction, num_transitions):
  counts = [s.valid.size for s in shards]
  if num_transitions is not None:
    return split_count(num_transitions, counts)
  # max(1, ...) and round() per checkpoint: data_fraction's historical definition.
  return np.array([max(1, int(round(data_fraction * c))) if c else 0 for c in counts])


def _total_size(shards, data_fraction, num_transitions) -> int:
  if num_transitions is not None:
    return int(num_transitions)
  return max(1, int(round(data_fraction * sum(s.valid.size for s in shards))))


def _uniform_transitions(shards, sizes, seed):
  kept = []
  for shard, size in zip(shards, sizes):
    if size >= shard.valid.size:
      kept.append(shard.valid)
      continue
    rng = np.random.default_rng([seed, 1, shard.suffix])
    kept.append(np.sort(rng.choice(shard.valid, size, replace=False)))
  return kept


def _uniform_trajectories(shards, total, seed):
  # One integer key per (checkpoint slot, episode) of every valid state.
  ids = [episode_ids(shard)[shard.valid] for shard in shards]
  stride = max((int(i.max()) for i in ids if i.size), default=0) + 1
  keys = np.concatenate([slot * stride + i for slot, i in enumerate(ids)])
  groups, sizes = np.unique(keys, return_counts=True)  # trajectories, valid states in each
  order = np.random.default_rng([seed, 2]).permutation(groups.size)
  take = int(np.searchsorted(np.cumsum(sizes[order]), total)) + 1  # first prefix >= total
  chosen = np.isin(keys, groups[order[:take]])
  kept, start = [], 0
  for shard in shards:
    kept.append(shard.valid[chosen[start:start + shard.valid.size]])
    start += shard.valid.size
  return kept


def _checkpoint_prefix(shards, sizes, stack_size, update_horizon):
  kept = []
  for shard, size in zip(shards, sizes):
    if size >= shard.valid.size:
      kept.append(shard.valid)
      continue
    v = shard.valid
    eligible = v[(v >= stack_size - 1) & (v + update_horizon < shard.capacity)]
    kept.append(eligible[:size])
  return kept


def _first_fraction(shards, total):
  kept, left = [], total
  for slot in np.argsort([s.suffix for s in shards], kind="stable"):
    shard = shards[slot]
    by_time = shard.valid[np.argsort(time_position(shard, shard.valid), kind="stable")]
    kept.append((slot, np.sort(by_time[:max(left, 0)])))
    left -= min(left, by_time.size)
  return [k for _, k in sorted(kept, key=lambda x: x[0])]


def check_size(data_fraction: float, num_transitions: Optional[int], available: int,
               prefix: str = "load_fixed_replay") -> None:
  """Validates the size bindings against the number of valid transitions."""
  if not 0.0 < data_fraction <= 1.0:
    raise ValueError(f"`{prefix}.data_fraction` must be in (0, 1], got {data_fraction}.")
  if num_transitions is None:
    return
  if data_fraction != 1.0:
    raise ValueError(f"Bind at most one of `{prefix}.data_fraction` and "
                     f"`{prefix}.num_transitions`.")
  if isinstance(num_transitions, bool) or int(num_transitions) != num_transitions or \
      not 0 < num_transitions <= available:
    raise ValueError(f"`{prefix}.num_transitions` = {num_transitions!r} must be an integer in "
                     f"[1, {available:,}] (the valid transitions loaded).")


def subsample(scheme, shards: Sequence[ShardData], *, data_fraction: float = 1.0,
              num_transitions: Optional[int] = None, seed: int = 0, stack_size: int = 4,
              update_horizon: int = 1) -> list[np.ndarray]:
  """Kept valid storage indices of each shard (int64 ascending), by `scheme`.

  The full data (data_fraction 1, no num_transitions) is returned unchanged by every
  scheme. Deterministic in (scheme, shards, size, seed).
  """
  scheme = parse_scheme(scheme)
  shards = list(shards)
  available = sum(s.valid.size for s in shards)
  check_size(data_fraction, num_transitions, available)
  if num_transitions is None and data_fraction == 1.0 or num_transitions == available:
    return [s.valid for s in shards]
  if scheme is Scheme.UNIFORM_TRANSITIONS:
    return _uniform_transitions(shards, _per_shard_sizes(shards, data_fraction,
                                                         num_transitions), seed)
  if scheme is Scheme.CHECKPOINT_PREFIX:
    return _checkpoint_prefix(shards, _per_shard_sizes(shards, data_fraction, num_transitions),
                              stack_size, update_horizon)
  total = _total_size(shards, data_fraction, num_transitions)
  if scheme is Scheme.UNIFORM_TRAJECTORIES:
    return _uniform_trajectories(shards, total, seed)
  return _first_fraction(shards, total)

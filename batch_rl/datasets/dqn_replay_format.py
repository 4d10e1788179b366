"""Reader and writer for the DQN Replay on-disk format (Dopamine replay checkpoints).

Dopamine's ``OutOfGraphReplayBuffer.save(dir, N)`` writes, into
``<root>/<Game>/<run>/replay_logs/``, one gzip-compressed ``.npy`` file per item:

  ``$store$_observation_ckpt.N.gz``  uint8   [capacity, *observation_shape]
  ``$store$_action_ckpt.N.gz``       int32   [capacity, *action_shape]
  ``$store$_reward_ckpt.N.gz``       float32 [capacity]
  ``$store$_terminal_ckpt.N.gz``     uint8   [capacity]
  ``add_count_ckpt.N.gz``            int64   [] (transitions ever added, padding included)
  ``invalid_range_ckpt.N.gz``        int64   [stack_size + update_horizon]

Recent Dopamine also writes ``episode_end_indices_ckpt.N.gz``, a *pickle* of a Python
set. It is never needed and never opened here: every file is parsed by our own ``.npy``
header reader, which refuses object dtypes, so nothing is ever unpickled.

The dtypes above are Dopamine's defaults. Its buffer takes ``observation_dtype``,
``action_shape`` and ``action_dtype`` arguments and saves whatever its arrays hold, so
a domain with vector observations writes float32 observations, and one with continuous
actions float32 actions [capacity, *action_shape]; both are read and written here
(``write_shard(..., observation_dtype=, action_shape=, action_dtype=)``), with uint8
observations and int32 scalar actions the default.

Dtype policy when reading: an on-disk store array is accepted if its dtype casts to the
canonical dtype with ``np.can_cast(..., casting="safe")`` (e.g. a bool terminal, an
int16 or big-endian int32 action); the canonical dtype of an integer (or bool) action
is int32, of a float action float32; ``read_shard`` returns canonical dtypes. The
observation must be exactly uint8 or float32 (``OBSERVATION_DTYPES``), since it is
streamed straight into a buffer of that dtype. Reward and terminal are scalars per
entry; the action may have trailing dimensions (a continuous action vector).
``add_count`` must be an integer scalar; ``invalid_range`` an integer vector, or a float
vector of whole numbers (Dopamine's never-filled buffer saves ``np.zeros(stack_size)``,
float64).

Paths may be local or ``gs://``: all I/O goes through ``tf.io.gfile``.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import uuid
from typing import NamedTuple

import numpy as np

from batch_rl.datasets.npy_gz import NpyStream, ReplayFormatError, read_array
from batch_rl.tf_utils import tensorflow

STORE_KEYS = ("observation", "action", "reward", "terminal")
_STORE_PREFIX = "$store$_"
_REQUIRED_NAMES = tuple(_STORE_PREFIX + k for k in STORE_KEYS) + ("add_count", "invalid_range")
# Dopamine's defaults (and the DQN Replay dataset's dtypes).
_CANONICAL_DTYPES = {
    "observation": np.dtype(np.uint8),
    "action": np.dtype(np.int32),
    "reward": np.dtype(np.float32),
    "terminal": np.dtype(np.uint8),
}
# Observation dtypes read and written: image frames, and float vector observations.
OBSERVATION_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32))
# Action dtypes read and written: discrete actions, and continuous action vectors.
ACTION_DTYPES = (np.dtype(np.int32), np.dtype(np.float32))
_LAYOUT = (
    "expected a Dopamine replay directory <root>/<Game>/<run>/replay_logs/ holding, for each "
    "checkpoint suffix N, the files "
    + ", ".join(f"{n}_ckpt.N.gz" for n in _REQUIRED_NAMES)
)
_FILE_RE = re.compile(r"^(?P<name>.+)_ckpt\.(?P<suffix>\d+)\.gz$")
class CircularPosition:
    """Where a circular buffer of `capacity` entries with `add_count` adds stands."""

    capacity: int
    add_count: int

    @property
    def cursor(self) -> int:
        """Index the next transition would be written to: add_count % capacity."""
        return self.add_count % self.capacity

    @property
    def is_full(self) -> bool:
        """True once the circular buffer has wrapped (every index holds real data)."""
        return self.add_count >= self.capacity


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: ndarray fields break ==.
class ShardInfo(CircularPosition):
    """Metadata of one checkpoint, read from the ``.npy`` headers (store files are not decompressed).

    Attributes:
      replay_dir: the ``replay_logs`` directory.
      suffix: checkpoint suffix N.
      capacity: leading length C of every store array.
      observation_shape: per-transition observation shape, e.g. (84, 84) or (10, 10, 4).
      add_count: transitions ever added (zero padding included); may exceed capacity.
      invalid_range: int64 [stack_size + update_horizon], read-only; indices around the
        cursor that Dopamine never samples.
      dtypes: on-disk dtype per STORE_KEYS entry (read_shard returns canonical dtypes).
      action_shape: per-transition action shape: () for discrete actions, (d,) for a
        continuous action vector.
    """

    replay_dir: str
    suffix: int
    capacity: int
    observation_shape: tuple[int, ...]
    add_count: int
    invalid_range: np.ndarray
    dtypes: dict[str, np.dtype]
    action_shape: tuple[int, ...] = ()

    @property
    def observation_dtype(self) -> np.dtype:
        """Dtype of the observations (uint8 or float32), as stored and as read."""
        return np.dtype(self.dtypes["observation"])

    @property
    def action_dtype(self) -> np.dtype:
        """Dtype read_shard returns the actions in: int32, or float32 for float actions."""
        return canonical_action_dtype(self.dtypes["action"])


def canonical_action_dtype(dtype) -> np.dtype:
    """int32 for integer (and bool) actions, float32 for float (continuous) ones."""
    return np.dtype(np.float32) if np.dtype(dtype).kind == "f" else _CANONICAL_DTYPES["action"]



def check_same_layout(infos, replay_dir: str, remedy: str) -> None:
    """ReplayFormatError naming the two checkpoints if `infos` differ in capacity or frames."""
    first = infos[0]
    for info in infos[1:]:
        if (info.capacity, info.observation_shape) != (first.capacity, first.observation_shape):
            raise ReplayFormatError(
                f"Checkpoints in {replay_dir} differ in shape: suffix {first.suffix} has "
                f"capacity {first.capacity} and frames {first.observation_shape}, suffix "
                f"{info.suffix} has {info.capacity} and {info.observation_shape}. {remedy}")
        kinds = lambda i: (i.observation_dtype, i.action_shape, i.action_dtype)
        if kinds(info) != kinds(first):
            raise ReplayFormatError(
                f"Checkpoints in {replay_dir} differ in dtypes: suffix {first.suffix} has "
                f"{first.observation_dtype} frames and {first.action_dtype} actions of shape "
                f"{first.action_shape}, suffix {info.suffix} {info.observation_dtype} and "
                f"{info.action_dtype} {info.action_shape}. {remedy}")


class Shard(NamedTuple):
    """One checkpoint's contents.

    observation: uint8 or float32 [C, *observation_shape]; action: int32 [C] (or
    float32 [C, *action_shape]); reward: float32 [C]; terminal: uint8 [C]. Entries at
    index >= add_count (when not full) are stale leftovers.
    """

    info: ShardInfo
    observation: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray


def _filename(replay_dir: str, name: str, suffix: int) -> str:
    # Dopamine's _generate_filename: os.path.join(dir, '{name}_ckpt.{suffix}.gz').
    return os.path.join(replay_dir, f"{name}_ckpt.{suffix}.gz")


def invalid_range(cursor: int, capacity: int, stack_size: int, update_horizon: int) -> np.ndarray:
    """Dopamine's cursor-related invalid indices, as int64 [stack_size + update_horizon].

    The update_horizon indices before the cursor lack a complete N-step future, and the
    stack_size indices from the cursor on would stack frames of two different fill passes:
    ``(cursor - update_horizon + i) % capacity for i in range(stack_size + update_horizon)``.
    """
    if not 0 <= cursor < capacity:
        raise ValueError(f"cursor must be in [0, capacity={capacity}), got {cursor}")
    i = np.arange(stack_size + update_horizon, dtype=np.int64)
    return (cursor - update_horizon + i) % capacity


_invalid_range = invalid_range  # write_shard's keyword argument shadows the name.


# ----------------------------------------------------------------------------- listing


def _check_dir(replay_dir: str) -> None:
    if not tensorflow().io.gfile.isdir(replay_dir):
        raise ReplayFormatError(f"Replay directory {replay_dir!r} does not exist; {_LAYOUT}.")


def _files_by_suffix(replay_dir: str) -> dict[int, set[str]]:
    """Maps each suffix to the set of required item names present for it."""
    found: dict[int, set[str]] = {}
    for entry in tensorflow().io.gfile.listdir(replay_dir):
        m = _FILE_RE.match(entry.rstrip("/"))
        if m:
            names = found.setdefault(int(m["suffix"]), set())
            if m["name"] in _REQUIRED_NAMES:
                names.add(m["name"])
    return found


def _complete(found: dict[int, set[str]]) -> list[int]:
    return sorted(s for s, names in found.items() if len(names) == len(_REQUIRED_NAMES))


def incomplete_suffixes(replay_dir: str) -> dict[int, list[str]]:
    """Suffixes that have some of the six required files but not all: {suffix: missing paths}."""
    _check_dir(replay_dir)
    return {
        s: [_filename(replay_dir, n, s) for n in _REQUIRED_NAMES if n not in names]
        for s, names in sorted(_files_by_suffix(replay_dir).items())
        if len(names) < len(_REQUIRED_NAMES)
    }


def list_suffixes(replay_dir: str) -> list[int]:
    """Sorted checkpoint suffixes of ``replay_dir`` that have all six required files.

    Raises ReplayFormatError if the directory does not exist or holds no complete checkpoint
    (the message lists, for each incomplete suffix, the files found and missing).
    """
    _check_dir(replay_dir)
    found = _files_by_suffix(replay_dir)
    suffixes = _complete(found)
    if suffixes:
        return suffixes
    if not found:
        detail = "it holds no *_ckpt.N.gz file at all"
    else:
        detail = "; ".join(
            f"suffix {s}: found {sorted(n + f'_ckpt.{s}.gz' for n in names)}, missing "
            f"{[n + f'_ckpt.{s}.gz' for n in _REQUIRED_NAMES if n not in names]}"
            for s, names in sorted(found.items())
        )
    raise ReplayFormatError(
        f"Replay directory {replay_dir!r} has no complete checkpoint ({detail}); {_LAYOUT}."
    )


# ----------------------------------------------------------------------------- reading


def read_store_array(replay_dir: str, key: str, suffix: int) -> np.ndarray:
    """One small stored array of a checkpoint ("terminal", "action", "reward")."""
    return read_array(_filename(replay_dir, _STORE_PREFIX + key, suffix))


def _check_store_dtype(path: str, key: str, dtype: np.dtype) -> None:
    if key == "observation":
        ok = dtype in OBSERVATION_DTYPES
        rule = "exactly " + " or ".join(str(d) for d in OBSERVATION_DTYPES)
    elif key == "action":
        ok = np.can_cast(dtype, canonical_action_dtype(dtype), casting="safe")
        rule = ("a dtype safely castable to int32 (discrete actions) or float32 "
                "(continuous actions)")
    else:
        want = _CANONICAL_DTYPES[key]
        ok = np.can_cast(dtype, want, casting="safe")
        rule = f"a dtype safely castable to {want}"
    if not ok:
        raise ReplayFormatError(
            f"Replay file {path!r}: {key} has dtype {dtype}; expected {rule}."
        )


def read_shard_info(replay_dir: str, suffix: int) -> ShardInfo:
    """Validates checkpoint ``suffix`` of ``replay_dir`` and returns its ShardInfo.

    Reads only the headers of the four store files (the observation file is not
    decompressed past its header) plus the tiny add_count and invalid_range arrays.
    Raises ReplayFormatError naming the offending path for: a missing suffix (listing the
    available ones) or file, an unparsable header, a wrong dtype, store arrays of
    different leading lengths, or a malformed add_count / invalid_range.
    """
    _check_dir(replay_dir)
    suffix = int(suffix)
    found = _files_by_suffix(replay_dir)
    names = found.get(suffix, set())
    if not names:
        raise ReplayFormatError(
            f"Replay directory {replay_dir!r} has no checkpoint with suffix {suffix}; available "
            f"complete suffixes: {_complete(found)}; {_LAYOUT}."
        )
    missing = [_filename(replay_dir, n, suffix) for n in _REQUIRED_NAMES if n not in names]
    if missing:
        raise ReplayFormatError(
            f"Checkpoint {suffix} in {replay_dir!r} is incomplete: missing {missing}; available "
            f"complete suffixes: {_complete(found)}; {_LAYOUT}."
        )

    shapes, dtypes = {}, {}
    for key in STORE_KEYS:
        path = _filename(replay_dir, _STORE_PREFIX + key, suffix)
        with NpyStream(path) as s:
            shapes[key], dtypes[key] = s.shape, s.dtype
        _check_store_dtype(path, key, s.dtype)
        # Scalar reward/terminal per transition (Dopamine's); the action may be a vector.
        if len(s.shape) < 1 or (key in ("reward", "terminal") and len(s.shape) != 1):
            want = {"observation": "[capacity, *observation_shape]",
                    "action": "[capacity, *action_shape]"}.get(key, "[capacity]")
            raise ReplayFormatError(
                f"Replay file {path!r}: {key} has shape {s.shape}; expected {want}."
            )
    obs_path = _filename(replay_dir, _STORE_PREFIX + "observation", suffix)
    capacity = shapes["observation"][0]
    if capacity < 1:
        raise ReplayFormatError(f"Replay file {obs_path!r}: capacity is 0; expected >= 1.")
    for key in STORE_KEYS[1:]:
        if shapes[key][0] != capacity:
            path = _filename(replay_dir, _STORE_PREFIX + key, suffix)
            raise ReplayFormatError(
                f"Replay files {obs_path!r} and {path!r} disagree on the buffer capacity: "
                f"{capacity} vs {shapes[key][0]} entries; expected all four store arrays to "
                "have the same leading length."
            )

    path = _filename(replay_dir, "add_count", suffix)
    add_count = read_array(path)
    if add_count.size != 1 or add_count.dtype.kind not in "iu" or int(add_count.ravel()[0]) < 0:
        raise ReplayFormatError(
            f"Replay file {path!r}: add_count is {add_count.dtype} {add_count.shape} = "
            f"{add_count.ravel()[:4]}; expected a non-negative integer scalar."
        )
    path = _filename(replay_dir, "invalid_range", suffix)
    inv = read_array(path)
    ok = inv.ndim == 1 and (
        inv.dtype.kind in "iu"
        or (inv.dtype.kind == "f" and np.all(np.isfinite(inv)) and np.all(inv == np.round(inv)))
    )
    if ok:
        inv = inv.astype(np.int64)
        ok = bool(np.all((inv >= 0) & (inv < capacity)))
    if not ok:
        raise ReplayFormatError(
            f"Replay file {path!r}: invalid_range is {inv.dtype} {inv.shape}; expected a 1-D "
            f"integer array of indices in [0, {capacity})."
        )
    inv.setflags(write=False)
    return ShardInfo(
        replay_dir=replay_dir,
        suffix=suffix,
        capacity=int(capacity),
        observation_shape=tuple(int(d) for d in shapes["observation"][1:]),
        add_count=int(add_count.ravel()[0]),
        invalid_range=inv,
        dtypes=dtypes,
        action_shape=tuple(int(d) for d in shapes["action"][1:]),
    )


def _expect_header(s: NpyStream, shape: tuple, dtype: np.dtype) -> None:
    # The headers were validated by read_shard_info; a change means a concurrent rewrite.
    if s.shape != shape or s.dtype != dtype:
        s._fail(f"header changed while reading: now {s.dtype} {s.shape}, expected {dtype} {shape}")


def read_shard(replay_dir: str, suffix: int, observation_out: np.ndarray | None = None) -> Shard:
    """Reads checkpoint ``suffix`` of ``replay_dir`` with peak memory near the arrays' size.

    The observation is decompressed chunk by chunk straight into ``observation_out`` (a
    C-contiguous, writeable array of the stored dtype (``info.observation_dtype``: uint8,
    or float32) and shape [capacity, *observation_shape], e.g. a slice of a larger
    preallocated array) or into a fresh ``np.empty``; there is never a second full copy.
    Returns a Shard with observation [C, *obs_shape] of the stored dtype (the very
    ``observation_out`` object when given), action int32 [C] (float32 [C,
    *action_shape] for float actions), reward float32 [C] and terminal uint8 [C].
    Raises ReplayFormatError naming the file on any format problem, including truncated
    or corrupt gzip data.
    """
    info = read_shard_info(replay_dir, suffix)
    obs_shape = (info.capacity, *info.observation_shape)
    obs_dtype = info.observation_dtype
    obs_path = _filename(replay_dir, _STORE_PREFIX + "observation", info.suffix)
    if observation_out is None:
        observation_out = np.empty(obs_shape, dtype=obs_dtype)
    else:
        if not isinstance(observation_out, np.ndarray):
            raise TypeError(f"observation_out must be a numpy array, got {type(observation_out)}")
        if observation_out.dtype != obs_dtype or observation_out.shape != obs_shape:
            raise ReplayFormatError(
                f"Replay file {obs_path!r} holds {obs_dtype} {obs_shape}, but observation_out "
                f"is {observation_out.dtype} {observation_out.shape}; expected them to match."
            )
        if not (observation_out.flags.c_contiguous and observation_out.flags.writeable):
            raise ValueError("observation_out must be C-contiguous and writeable")
    with NpyStream(obs_path) as s:
        _expect_header(s, obs_shape, info.dtypes["observation"])
        s.read_into(observation_out)

    arrays = {}
    for key in STORE_KEYS[1:]:
        shape = (info.capacity, *info.action_shape) if key == "action" else (info.capacity,)
        want = info.action_dtype if key == "action" else _CANONICAL_DTYPES[key]
        with NpyStream(_filename(replay_dir, _STORE_PREFIX + key, info.suffix)) as s:
            _expect_header(s, shape, info.dtypes[key])
            arrays[key] = s.read().astype(want, copy=False)
    return Shard(info, observation_out, arrays["action"], arrays["reward"], arrays["terminal"])


# ----------------------------------------------------------------------------- writing


def _coerce(name: str, value, dtype: np.dtype) -> np.ndarray:
    """Returns ``value`` as a C-contiguous ``dtype`` array, refusing lossy integer casts.

    Accepted: safe casts; any integer array whose values fit ``dtype`` (e.g. int64
    actions); float -> float32 rounding (as Dopamine's own store assignment does).
    C order matters: np.save writes Fortran-ordered arrays with fortran_order=True.
    """
    a = np.asarray(value)
    ok = np.can_cast(a.dtype, dtype, casting="safe")
    if not ok and a.dtype.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        ok = a.size == 0 or (int(a.min()) >= info.min and int(a.max()) <= info.max)
    if not ok and a.dtype.kind == "f" and dtype.kind == "f":
        ok = True
    if not ok:
        raise ValueError(f"{name} of dtype {a.dtype} cannot be stored as {dtype} without loss")
    return np.ascontiguousarray(a, dtype=dtype)


def write_shard(
    replay_dir: str,
    suffix: int,
    *,
    observation,
    action,
    reward,
    terminal,
    add_count: int,
    invalid_range: np.ndarray | None = None,
    stack_size: int = 4,
    update_horizon: int = 1,
    observation_dtype=np.uint8,
    action_shape: tuple[int, ...] = (),
    action_dtype=np.int32,
) -> None:
    """Writes checkpoint ``suffix`` exactly as Dopamine's ``OutOfGraphReplayBuffer.save``.

    Args:
      observation: [C, *observation_shape], stored as ``observation_dtype``: uint8
        (the default; bool or integers that fit also accepted) or float32 (float
        vector observations; Dopamine's ``observation_dtype=np.float32``).
      action: [C, *action_shape], stored as ``action_dtype``: int32 (the default;
        integer values must fit) or float32 (continuous actions; Dopamine's
        ``action_shape=(d,), action_dtype=np.float32``).
      reward: float [C], stored float32.
      terminal: integer/bool [C], stored uint8 (values must fit).
      add_count: transitions ever added, >= 0; stored as an int64 scalar.
      invalid_range: int64 [K], indices in [0, C); default is
        ``invalid_range(add_count % C, C, stack_size, update_horizon)``.

    Each file is gzip(np.save(..., allow_pickle=False)) written to a hidden temporary name in
    ``replay_dir`` and renamed into place; ``add_count`` goes last, so a reader that finds it
    sees a complete shard. An existing checkpoint with this suffix first loses its
    ``add_count`` (marking it incomplete while it is rewritten) and any
    ``episode_end_indices`` pickle (which would describe the old data). All inputs are
    validated before anything is written; the directory is created if needed.
    """
    suffix = int(suffix)
    observation_dtype, action_dtype = np.dtype(observation_dtype), np.dtype(action_dtype)
    for name, dtype, allowed in (("observation_dtype", observation_dtype, OBSERVATION_DTYPES),
                                 ("action_dtype", action_dtype, ACTION_DTYPES)):
        if dtype not in allowed:
            raise ValueError(f"{name} must be one of {[str(d) for d in allowed]}, got {dtype}")
    obs = _coerce("observation", observation, observation_dtype)
    if obs.ndim < 1 or obs.shape[0] < 1:
        raise ValueError(f"observation must be [capacity >= 1, ...], got shape {obs.shape}")
    capacity = obs.shape[0]
    arrays = {"observation": obs}
    dtypes = {"action": action_dtype, "reward": _CANONICAL_DTYPES["reward"],
              "terminal": _CANONICAL_DTYPES["terminal"]}
    for key, value in (("action", action), ("reward", reward), ("terminal", terminal)):
        a = _coerce(key, value, dtypes[key])
        want = (capacity, *action_shape) if key == "action" else (capacity,)
        if a.shape != want:
            raise ValueError(
                f"{key} has shape {a.shape}; expected {want} to match observation {obs.shape}"
            )
        arrays[key] = a
    if isinstance(add_count, (bool, np.bool_)) or int(add_count) != add_count or add_count < 0:
        raise ValueError(f"add_count must be a non-negative integer, got {add_count!r}")
    add_count_arr = np.asarray(int(add_count), dtype=np.int64)  # What Dopamine's np.array(0) becomes.
    if invalid_range is None:
        inv = _invalid_range(int(add_count) % capacity, capacity, stack_size, update_horizon)
    else:
        inv = _coerce("invalid_range", invalid_range, np.dtype(np.int64))
        if inv.ndim != 1 or np.any((inv < 0) | (inv >= capacity)):
            raise ValueError(f"invalid_range must be 1-D indices in [0, {capacity}), got {inv}")

    gfile = tensorflow().io.gfile
    gfile.makedirs(replay_dir)
    for name in ("add_count", "episode_end_indices"):
        stale = _filename(replay_dir, name, suffix)
        if gfile.exists(stale):
            gfile.remove(stale)
    items = [(_STORE_PREFIX + k, arrays[k]) for k in STORE_KEYS]
    items += [("invalid_range", inv), ("add_count", add_count_arr)]
    for name, array in items:
        _atomic_save(_filename(replay_dir, name, suffix), array)


def _atomic_save(path: str, array: np.ndarray) -> None:
    gfile = tensorflow().io.gfile
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.tmp-{uuid.uuid4().hex}")
    try:
        with gfile.GFile(tmp, "wb") as f:
            # filename= puts the final name (not the temp one) in the gzip header, as
            # Dopamine's files have; GzipFile defaults to compresslevel 9 like Dopamine.
            with gzip.GzipFile(filename=base[: -len(".gz")], fileobj=f, mode="wb") as gz:
                np.save(gz, array, allow_pickle=False)
        gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp):
            gfile.remove(tmp)
        raise

"""A memory-mapped copy of DQN Replay checkpoints on local disk, converted once.

Sources: Dopamine-format .gz checkpoints (`convert`) or RL Unplugged Atari in TFDS
(`convert_tfds`, laid out as datasets/rlu_tfds.py lays out a TFDS load).

Format: a directory of plain, uncompressed `.npy` files plus a JSON manifest:

  <store>/manifest.json     format tag, source directory, suffixes in slot order,
                            capacity, frame shape, add_count and invalid_range per slot
                            (and stack_size, for a store converted from RL Unplugged)
  <store>/observation.npy   uint8   [K, C, *frame_shape]   one frame per transition
  <store>/action.npy        int32   [K, C]
  <store>/reward.npy        float32 [K, C]
  <store>/terminal.npy      uint8   [K, C]

for K converted checkpoints of capacity C. Why plain `.npy`: it needs no new dependency,
`np.load(mmap_mode='r')` opens it in microseconds, its data starts 64-byte aligned so
`jax.device_put` on the CPU aliases it instead of copying (checked with jax 0.10), and
the kernel's page cache is shared by every process that maps the same file: several
runs on one machine read one copy of the frames, and pages a run never touches are
never read. zarr / tensorstore / array_record add chunking and compression, which is
what we are removing (frames are sampled at random, one 7 KB frame at a time).
Frames are stored once, as in the source files (stacks are built when sampling).

Conversion is atomic: everything is written into `<store>.partial/` (preallocated
with posix_fallocate, so a full disk fails up front with ENOSPC and not later with
SIGBUS on a mapped page), flushed, and renamed to `<store>` only when complete. A
directory named `<store>` is therefore always a finished store; an interrupted
conversion leaves `<store>.partial/`, which the next `convert` removes and redoes.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import shutil
from typing import Callable, Optional, Sequence

import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt

FORMAT = "batch_rl.memmap_store"
VERSION = 1
MANIFEST = "manifest.json"
_PARTIAL_MARKER = ".batch_rl_partial_store"
_DTYPES = {"observation": np.uint8, "action": np.int32, "reward": np.float32,
           "terminal": np.uint8}


class StoreError(ValueError):
  """A store directory is missing, incomplete, or does not match its manifest."""


class InsufficientSpaceError(StoreError):
  """The disk cannot hold the converted store."""


@dataclasses.dataclass(frozen=True, eq=False)
class Store:
  """An opened store: read-only memmaps and the manifest's metadata."""

  path: str
  source: str
  suffixes: tuple[int, ...]
  capacity: int
  frame_shape: tuple[int, ...]
  add_counts: tuple[int, ...]
  invalid_ranges: tuple[np.ndarray, ...]
  observation: np.ndarray  # uint8 [K, C, *frame_shape], memmap
  action: np.ndarray       # int32 [K, C]
  reward: np.ndarray       # float32 [K, C]
  terminal: np.ndarray     # uint8 [K, C]
  # Converted from RL Unplugged: the stack size its episode padding is laid out for.
  stack_size: Optional[int] = None

  def slot(self, suffix: int) -> int:
    return self.suffixes.index(int(suffix))

  def shard_info(self, suffix: int) -> fmt.ShardInfo:
    k = self.slot(suffix)
    return fmt.ShardInfo(replay_dir=self.path, suffix=int(suffix), capacity=self.capacity,
                         observation_shape=self.frame_shape, add_count=self.add_counts[k],
                         invalid_range=self.invalid_ranges[k],
                         dtypes={key: np.dtype(d) for key, d in _DTYPES.items()})


def _shapes(num: int, capacity: int, frame_shape: Sequence[int]) -> dict[str, tuple]:
  return {"observation": (num, capacity, *frame_shape), "action": (num, capacity),
          "reward": (num, capacity), "terminal": (num, capacity)}


def required_bytes(num: int, capacity: int, frame_shape: Sequence[int]) -> int:
  """Bytes the store's arrays take on disk (headers and manifest add < 1 MB)."""
  return sum(int(np.prod(shape)) * np.dtype(_DTYPES[k]).itemsize
             for k, shape in _shapes(num, capacity, frame_shape).items())


def is_store(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MANIFEST))


def open_store(path: str) -> Store:
  """Opens a converted store read-only; StoreError naming the file if anything is off."""
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.isfile(manifest_path):
    hint = (f" An interrupted conversion left {path}.partial; rerun `python -m batch_rl.data "
            "convert` to redo it." if os.path.isdir(path.rstrip("/") + ".partial") else "")
    raise StoreError(f"{path!r} is not a converted replay store (no {MANIFEST}).{hint} "
                     "Create one with `python -m batch_rl.data convert REPLAY_DIR STORE`.")
  try:
    with open(manifest_path) as f:
      m = json.load(f)
    if m.get("format") != FORMAT or m.get("version") != VERSION:
      raise StoreError(f"{manifest_path!r}: format {m.get('format')!r} version "
                       f"{m.get('version')!r}; expected {FORMAT!r} version {VERSION}.")
    suffixes = tuple(int(s) for s in m["suffixes"])
    capacity, frame_shape = int(m["capacity"]), tuple(int(d) for d in m["frame_shape"])
    add_counts = tuple(int(a) for a in m["add_counts"])
    invalid = tuple(np.asarray(r, np.int64) for r in m["invalid_ranges"])
    stack_size = None if m.get("stack_size") is None else int(m["stack_size"])
  except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
    raise StoreError(f"{manifest_path!r} is unreadable ({type(e).__name__}: {e}).") from e
  for r in invalid:
    r.setflags(write=False)
  arrays = {}
  for key, shape in _shapes(len(suffixes), capacity, frame_shape).items():
    file = os.path.join(path, f"{key}.npy")
    try:
      a = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
      raise StoreError(f"Store file {file!r} is missing or truncated ({e}); reconvert the "
                       "store.") from e
    if a.shape != shape or a.dtype != _DTYPES[key]:
      raise StoreError(f"Store file {file!r} holds {a.dtype} {a.shape}; the manifest says "
                       f"{np.dtype(_DTYPES[key])} {shape}. Reconvert the store.")
    arrays[key] = a
  return Store(path=path, source=m.get("source", ""), suffixes=suffixes, capacity=capacity,
               frame_shape=frame_shape, add_counts=add_counts, invalid_ranges=invalid,
               stack_size=stack_size, **arrays)


def free_bytes(path: str) -> int:
  """Free bytes on the file system that holds `path` (or its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def _gb(n: int) -> str:
  return f"{n / 1e9:.2f} GB"


def _preallocated(file: str, dtype, shape) -> np.ndarray:
  array = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
  fd = os.open(file, os.O_RDWR)
  try:
    os.posix_fallocate(fd, 0, os.path.getsize(file))
  finally:
    os.close(fd)
  return array


def _fsync(file: str) -> None:
  fd = os.open(file, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write_json(file: str, obj) -> None:
  tmp = file + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, file)


def _remove_partial(partial: str) -> None:
  if not os.path.exists(partial):
    return
  if not os.path.isfile(os.path.join(partial, _PARTIAL_MARKER)):
    raise StoreError(f"{partial!r} exists but was not made by an interrupted conversion; "
                     "move it away before converting.")
  logging.warning("Removing %s, left by an interrupted conversion; converting again.", partial)
  shutil.rmtree(partial)


def _check_available(suffixes, available, where: str, error) -> None:
  """`error` naming the chosen suffixes that are not among `available`."""
  missing = sorted(set(suffixes) - set(available))
  if missing:
    raise error(f"Checkpoint suffix(es) {missing} are not {where}; available: {available}.")


def _existing(store_dir: str, suffixes: Sequence[int]) -> Optional[Store]:
  """The finished store at `store_dir` if it holds `suffixes`; None if there is none."""
  if not os.path.exists(store_dir):
    return None
  if not is_store(store_dir):
    raise StoreError(f"{store_dir!r} exists and is not a converted store; choose a new "
                     "path or remove it.")
  store = open_store(store_dir)
  if list(store.suffixes) != list(suffixes):
    raise StoreError(f"{store_dir!r} already holds checkpoints {list(store.suffixes)}, not "
                     f"{list(suffixes)}; choose another path.")
  logging.info("%s is already converted.", store_dir)
  return store


def _write_store(store_dir: str, source: str, suffixes: Sequence[int], capacity: int,
                 frame_shape: Sequence[int], add_counts: Sequence[int],
                 invalid_ranges: Sequence[np.ndarray], fill: Callable[[int, dict], None], *,
                 num_workers: int, progress: bool, extra: Optional[dict] = None) -> Store:
  """Checks free space, then writes a store atomically via `<store_dir>.partial`.

  `fill(slot, arrays)` writes checkpoint `suffixes[slot]` into the preallocated, zeroed
  memmaps `arrays[key][slot]`; slots are filled by `num_workers` threads.
  """
  num = len(suffixes)
  partial = store_dir + ".partial"
  _remove_partial(partial)
  need = required_bytes(num, capacity, frame_shape) + (1 << 20)
  free = free_bytes(os.path.dirname(os.path.abspath(store_dir)))
  if need > free:
    raise InsufficientSpaceError(
        f"Converting {num} checkpoint(s) of {source} to {store_dir} needs "
        f"{_gb(need)} of disk; only {_gb(free)} is free there. Free space or choose a store "
        "path on a larger disk.")

  os.makedirs(partial)
  open(os.path.join(partial, _PARTIAL_MARKER), "w").close()
  try:
    arrays = {k: _preallocated(os.path.join(partial, f"{k}.npy"), _DTYPES[k], shape)
              for k, shape in _shapes(num, capacity, frame_shape).items()}
    bar = _progress(num, "convert", progress)
    with concurrent.futures.ThreadPoolExecutor(max(1, min(num_workers, num))) as pool:
      futures = [pool.submit(fill, k, arrays) for k in range(num)]
      for future in concurrent.futures.as_completed(futures):
        future.result()
        bar.update(1)
    bar.close()
    for key, array in arrays.items():
      array.flush()
      del array
      _fsync(os.path.join(partial, f"{key}.npy"))
    arrays.clear()
    _write_json(os.path.join(partial, MANIFEST), {
        "format": FORMAT, "version": VERSION, "source": source,
        "suffixes": [int(x) for x in suffixes], "capacity": int(capacity),
        "frame_shape": [int(d) for d in frame_shape],
        "add_counts": [int(a) for a in add_counts],
        "invalid_ranges": [[int(x) for x in r] for r in invalid_ranges], **(extra or {})})
    os.rename(partial, store_dir)
  except BaseException:
    # Nothing half-written survives under the final name; the partial dir is removed
    # (or, if we were killed, removed by the next convert).
    shutil.rmtree(partial, ignore_errors=True)
    raise
  os.remove(os.path.join(store_dir, _PARTIAL_MARKER))  # Complete: the manifest decides.
  return open_store(store_dir)


def convert(replay_dir: str, store_dir: str, suffixes: Optional[Sequence[int]] = None, *,
            num_workers: int = 2, progress: bool = False) -> Store:
  """Converts checkpoints of `replay_dir` (local or gs://) into a store at `store_dir`.

  Args:
    replay_dir: a DQN Replay `replay_logs` directory.
    store_dir: local directory to create; must not exist yet (an existing complete
      store of the same suffixes is opened and returned instead).
    suffixes: checkpoints to convert; default every complete one (an incomplete
      checkpoint in the folder is then an error, as in load_fixed_replay).
    num_workers: checkpoints decompressed in parallel.
    progress: show a progress bar (tqdm) on stderr.

  Raises:
    InsufficientSpaceError: before writing anything, if the disk is too small.
    fmt.ReplayFormatError: naming the file, for any unreadable source file.
    StoreError: `store_dir` exists and is something else.
  """
  store_dir = store_dir.rstrip("/")
  available = fmt.list_suffixes(replay_dir)
  if suffixes is None:
    incomplete = fmt.incomplete_suffixes(replay_dir)
    if incomplete:
      raise fmt.ReplayFormatError(
          f"Incomplete checkpoint(s) in {replay_dir}: {incomplete}. Restore the files or "
          "choose the checkpoints to convert (--suffixes).")
    suffixes = available
  suffixes = sorted(int(s) for s in suffixes)
  _check_available(suffixes, available, f"complete in {replay_dir}", fmt.ReplayFormatError)
  existing = _existing(store_dir, suffixes)
  if existing is not None:
    return existing

  infos = [fmt.read_shard_info(replay_dir, s) for s in suffixes]
  fmt.check_same_layout(infos, replay_dir, "Convert them into separate stores (--suffixes).")

  def fill(slot: int, arrays: dict) -> None:
    # Decompressed straight into the mapped file: no copy of the frames in RAM.
    shard = fmt.read_shard(replay_dir, suffixes[slot], observation_out=arrays["observation"][slot])
    for key in ("action", "reward", "terminal"):
      arrays[key][slot] = getattr(shard, key)

  return _write_store(store_dir, replay_dir, suffixes, infos[0].capacity,
                      infos[0].observation_shape, [i.add_count for i in infos],
                      [i.invalid_range for i in infos], fill, num_workers=num_workers,
                      progress=progress)


def convert_tfds(tfds_name: str, tfds_data_dir: str, store_dir: str,
                 suffixes: Optional[Sequence[int]] = None, *, stack_size: int = 4,
                 num_workers: int = 1, progress: bool = False) -> Store:
  """Converts RL Unplugged Atari checkpoints (TFDS splits) into a store at `store_dir`.

  The store holds what `load_fixed_replay(tfds_name=..., tfds_data_dir=...)` builds
  (datasets/rlu_tfds.py): each checkpoint in Dopamine's layout, padded to one capacity
  (the longest checkpoint plus one entry) and saved as a not-full buffer, so loading
  the store gives the same arrays and valid indices as the TFDS load of the same
  checkpoints (of all of them; a subset loaded from TFDS is padded to its own longest
  checkpoint, so its arrays are shorter, with the same transitions).

  Two passes: the first reads every chosen checkpoint's episodes without decoding a
  frame, to size the store; the free-space check is made on that size before any frame
  is decoded. The second decodes one checkpoint per worker, episode by episode,
  straight into the mapped files.

  Args:
    tfds_name: e.g. 'rlu_atari_checkpoints_ordered/Pong_run_1'.
    tfds_data_dir: the TFDS data_dir (local or gs://) holding it.
    store_dir: local directory to create (as in `convert`).
    suffixes: checkpoints (split numbers) to convert; default all.
    stack_size: the frame stack the zero padding before each episode is laid out for;
      recorded in the manifest, and load_fixed_replay refuses another stack_size.
    num_workers: checkpoints decoded at once.
    progress: show progress bars (tqdm) on stderr.

  Raises:
    rlu_tfds.RLUError (a ValueError): unknown TFDS name, config, split or data_dir, with
      the loader's message.
    InsufficientSpaceError, StoreError: as `convert`.
  """
  from batch_rl.datasets import rlu_tfds  # pylint: disable=g-import-not-at-top
  store_dir = store_dir.rstrip("/")
  builder = rlu_tfds.open_builder(tfds_name, tfds_data_dir)
  source = f"tfds:{tfds_data_dir.rstrip('/')}/{tfds_name}"
  available = rlu_tfds.checkpoint_suffixes(builder)
  suffixes = available if suffixes is None else sorted(set(int(s) for s in suffixes))
  _check_available(suffixes, available, f"in {source}", rlu_tfds.RLUError)
  existing = _existing(store_dir, suffixes)
  if existing is not None:
    return existing

  layouts = []
  bar = _progress(len(suffixes), "count steps", progress)
  for s in suffixes:
    layouts.append(rlu_tfds.checkpoint_layout(builder, s, stack_size))
    bar.update(1)
  bar.close()
  for s, (size, _) in zip(suffixes, layouts):
    if size == 0:
      raise rlu_tfds.RLUError(f"{source}: checkpoint {s} holds no steps.")
  capacity = max(size for size, _ in layouts) + 1  # + 1: a cursor slot, as the loader
  frame_shape = rlu_tfds.frame_shape(builder)

  def fill(slot: int, arrays: dict) -> None:
    size, never = layouts[slot]
    pos, seen = 0, []
    for piece in rlu_tfds.iter_checkpoint(builder, suffixes[slot], stack_size):
      n = piece.action.size
      if pos + n > size:
        pos = -1  # more entries than counted
        break
      if piece.observation.shape[1:] != tuple(frame_shape):
        raise rlu_tfds.RLUError(f"{source}: checkpoint {suffixes[slot]} has frames "
                                f"{piece.observation.shape[1:]}; its info says {frame_shape}.")
      for key in ("observation", "action", "reward", "terminal"):
        arrays[key][slot, pos:pos + n] = getattr(piece, key)
      seen.append(piece.never_valid + pos)
      pos += n
    if pos != size or not np.array_equal(np.concatenate(seen), never):
      raise rlu_tfds.RLUError(f"{source}: checkpoint {suffixes[slot]} read differently in the "
                              "two passes (changed while converting?); convert again.")

  return _write_store(store_dir, source, suffixes, capacity, frame_shape,
                      [size for size, _ in layouts], [never for _, never in layouts], fill,
                      num_workers=num_workers, progress=progress,
                      extra={"stack_size": int(stack_size)})


def _progress(total: int, desc: str, enabled: bool):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit="ckpt", disable=not enabled)

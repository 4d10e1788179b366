"""Atomic checkpoints of the training state pytree, one file per completed iteration.

A checkpoint is written to a temporary name and renamed into place, so a run killed at
any moment leaves either the previous checkpoint or the new one, never half of one.
Files under <checkpoint_dir>:
  ckpt_<iteration>.msgpack           the state after `iteration` completed (flax msgpack)
  ckpt_<iteration>.arrays.npz        large host arrays beside it (an online run's replay
                                     buffer), written first: the .msgpack is the commit
  partial_<iteration>.msgpack (+ .arrays.npz)  a graceful stop's position inside
                                     `iteration` (runners/stop_signal.py); removed once
                                     that iteration's own checkpoint is written
"""
import os
import re
import shutil
import tempfile
from typing import Any, Optional, Sequence
import zipfile

import flax.serialization
import jax
import numpy as np

from batch_rl import host_arrays
from batch_rl.tf_utils import gfile

_PATTERN = re.compile(r"^ckpt_(\d+)\.msgpack$")
_PARTIAL = re.compile(r"^partial_(\d+)\.msgpack$")
_READ_CHUNK = 64 << 20  # bytes of an arrays file read at a time


def _path(checkpoint_dir: str, iteration: int, prefix: str = "ckpt") -> str:
  return os.path.join(checkpoint_dir, f"{prefix}_{iteration:06d}.msgpack")


def _arrays_path(path: str) -> str:
  return path[:-len(".msgpack")] + ".arrays.npz"


def list_iterations(checkpoint_dir: str) -> list[int]:
  """Iterations with a complete checkpoint, ascending."""
  if not gfile().isdir(checkpoint_dir):
    return []
  found = (_PATTERN.match(name) for name in gfile().listdir(checkpoint_dir))
  return sorted(int(m.group(1)) for m in found if m)


class WriteError(OSError):
  """A run's file could not be written (disk full, permission); nothing partial is left."""


def _free_bytes(directory: str) -> Optional[int]:
  """Free bytes of a local directory's file system; None for remote (gs://) paths."""
  if "://" in directory:
    return None
  return shutil.disk_usage(directory).free


def write_atomically(path: str, payload: bytes) -> None:
  """Writes `payload` to `path` through a temporary file renamed into place.

  Free space is checked first where the file system is local; a failed write removes
  its temporary file and raises WriteError naming the path and the bytes needed.
  """
  tmp = path + ".tmp"
  directory = os.path.dirname(path) or "."
  try:
    gfile().makedirs(directory)
    free = _free_bytes(directory)
    if free is not None and free < len(payload):
      raise OSError(f"{free / 1e6:.1f} MB free on that file system")
    with gfile().GFile(tmp, "wb") as f:
      f.write(payload)
    gfile().rename(tmp, path, overwrite=True)
  except Exception as e:  # pylint: disable=broad-except  (OSError or TensorFlow's errors)
    try:
      if gfile().exists(tmp):
        gfile().remove(tmp)
    except Exception:  # pylint: disable=broad-except
      pass
    reason = getattr(e, "message", None) or str(e)
    raise WriteError(f"Could not write {path} ({len(payload) / 1e6:.1f} MB needed): "
                     f"{reason}. Nothing partial was left behind; free space or fix the "
                     "permissions and rerun the same command to resume.") from e


def _remove(path: str) -> None:
  for name in (path, _arrays_path(path)):
    if gfile().exists(name):
      gfile().remove(name)


def _write_arrays(path: str, arrays: dict[str, np.ndarray], compress: bool) -> None:
  """`arrays` as one .npz (zip64; deflated with `compress`), atomically like
  write_atomically but streamed, so an array is never held twice in memory."""
  tmp = path + ".tmp"
  needed = sum(np.asarray(a).nbytes for a in arrays.values())
  method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
  try:
    gfile().makedirs(os.path.dirname(path) or ".")
    free = _free_bytes(os.path.dirname(path) or ".")
    if free is not None and not compress and free < needed:
      raise OSError(f"{free / 1e6:.1f} MB free on that file system")
    # zipfile seeks in what it writes: a local file, copied when the path is remote.
    local = tmp if "://" not in path else tempfile.mkstemp(suffix=".npz")[1]
    try:
      with zipfile.ZipFile(local, "w", compression=method,
                           compresslevel=1 if compress else None, allowZip64=True) as archive:
        for name, value in arrays.items():
          with archive.open(name + ".npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
      if local != tmp:
        gfile().copy(local, tmp, overwrite=True)
    finally:
      if local != tmp and os.path.exists(local):
        os.remove(local)
    gfile().rename(tmp, path, overwrite=True)
  except Exception as e:  # pylint: disable=broad-except
    if gfile().exists(tmp):
      gfile().remove(tmp)
    reason = getattr(e, "message", None) or str(e)
    raise WriteError(f"Could not write {path} ({needed / 1e6:.1f} MB of arrays): {reason}. "
                     "Nothing partial was left behind; free space or fix the permissions "
                     "and rerun the same command to resume.") from e


def _save(path: str, iteration: int, tree: Any, arrays: Optional[dict[str, np.ndarray]],
          compress: bool) -> None:
  if arrays:
    _write_arrays(_arrays_path(path), arrays, compress)
  payload = flax.serialization.to_bytes(
      {"iteration": np.int64(iteration), "state": jax.device_get(tree)})
  write_atomically(path, payload)


def save(checkpoint_dir: str, iteration: int, tree: Any, keep: int = 2,
         arrays: Optional[dict[str, np.ndarray]] = None, compress: bool = False) -> str:
  """Writes `tree` (and `arrays`, large host arrays) as the checkpoint of `iteration`.

  Keeps the newest `keep` checkpoints and removes the partial checkpoints of
  iterations up to this one.
  """
  path = _path(checkpoint_dir, iteration)
  _save(path, iteration, tree, arrays, compress)
  for old in list_iterations(checkpoint_dir)[:-keep]:
    _remove(_path(checkpoint_dir, old))
  for old in list_partial(checkpoint_dir):
    if old <= iteration:
      _remove(_path(checkpoint_dir, old, "partial"))
  return path


def list_partial(checkpoint_dir: str) -> list[int]:
  """Iterations with a partial checkpoint (a graceful stop inside them), ascending."""
  if not gfile().isdir(checkpoint_dir):
    return []
  found = (_PARTIAL.match(name) for name in gfile().listdir(checkpoint_dir))
  return sorted(int(m.group(1)) for m in found if m)


def save_partial(checkpoint_dir: str, iteration: int, tree: Any,
                 arrays: Optional[dict[str, np.ndarray]] = None,
                 compress: bool = False) -> str:
  """Writes the position of a run stopped inside `iteration` (not yet complete)."""
  path = _path(checkpoint_dir, iteration, "partial")
  _save(path, iteration, tree, arrays, compress)
  return path


def read_partial(checkpoint_dir: str, iteration: int) -> Optional[dict[str, Any]]:
  """The state dict of `iteration`'s partial checkpoint (no template), or None."""
  path = _path(checkpoint_dir, iteration, "partial")
  if not gfile().exists(path):
    return None
  with gfile().GFile(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())["state"]


def read_arrays(checkpoint_dir: str, iteration: int, partial: bool = False
                ) -> dict[str, np.ndarray]:
  """The arrays saved beside checkpoint `iteration` (or its partial checkpoint)."""
  path = _arrays_path(_path(checkpoint_dir, iteration, "partial" if partial else "ckpt"))
  out = {}
  with gfile().GFile(path, "rb") as f, zipfile.ZipFile(f) as archive:
    for member in archive.namelist():
      with archive.open(member) as stream:
        out[member[:-len(".npy")]] = _read_aligned(stream)
  return out


def _read_aligned(stream) -> np.ndarray:
  """One .npy stream read into a 64-byte-aligned array (which jax.device_put on the CPU
  aliases instead of copying, so a restored replay buffer is held once)."""
  version = np.lib.format.read_magic(stream)
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                 np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(stream)
  array = host_arrays.aligned_empty(shape, dtype)
  view = memoryview(array.reshape(-1).view(np.uint8))
  filled = 0
  while filled < len(view):  # in chunks: a zip member's readinto reads its whole size
    n = stream.readinto(view[filled:filled + _READ_CHUNK])
    if not n:
      raise ValueError(f"{stream.name}: the array ends after {filled} of {len(view)} bytes.")
    filled += n
  return array.T if fortran else array


def newest_common_iteration(checkpoint_dirs: Sequence[str]) -> int:
  """The newest iteration checkpointed in every one of the directories (the seeds of
  a vmapped run: a stop between their writes leaves some one ahead); -1 if none."""
  done = [set(list_iterations(d)) for d in checkpoint_dirs]
  common = set.intersection(*done) if done else set()
  return max(common) if common else -1


def restore_latest(checkpoint_dir: str, template: Any) -> Optional[tuple[int, Any]]:
  """(iteration, tree) of the newest checkpoint, shaped like `template`; None if none."""
  iterations = list_iterations(checkpoint_dir)
  if not iterations:
    return None
  return iterations[-1], restore(checkpoint_dir, iterations[-1], template)


def restore(checkpoint_dir: str, iteration: int, template: Any) -> Any:
  """The tree of `iteration`'s checkpoint, shaped like `template`."""
  path = _path(checkpoint_dir, iteration)
  with gfile().GFile(path, "rb") as f:
    payload = f.read()
  try:
    restored = flax.serialization.from_bytes(
        {"iteration": np.int64(0), "state": jax.device_get(template)}, payload)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"Checkpoint {path} does not match this run's agent state ({e}). It was written "
        "by a different configuration: use a new --base_dir, or the gin config in "
        f"{os.path.dirname(checkpoint_dir)}/config.gin.") from e
  return restored["state"]


def agent_state_dict(state: dict[str, Any]) -> dict[str, Any]:
  """The (active) agent's TrainState fields in a checkpoint's state dict: the state
  itself (offline, gridworld), or its "agent" entry (online; the active agent "0" of a
  tandem pair)."""
  if "params" in state or "agent" not in state:
    return state
  agent = state["agent"]
  return agent if "params" in agent else agent["0"]


def read_state_dict(checkpoint_dir: str, iteration: Optional[int] = None
                    ) -> tuple[int, dict[str, Any]]:
  """(iteration, state as nested dicts of numpy arrays) without a template.

  For reading another run's parameters (e.g. the policy FQE evaluates), whose agent
  is not this run's. `iteration` None = the newest checkpoint. FileNotFoundError
  naming the directory if there is no such checkpoint.
  """
  iterations = list_iterations(checkpoint_dir)
  if not iterations:
    raise FileNotFoundError(f"No checkpoint (ckpt_<iteration>.msgpack) in {checkpoint_dir}.")
  if iteration is None:
    iteration = iterations[-1]
  elif iteration not in iterations:
    raise FileNotFoundError(f"No checkpoint of iteration {iteration} in {checkpoint_dir}; "
                            f"it holds iterations {iterations}.")
  path = _path(checkpoint_dir, iteration)
  with gfile().GFile(path, "rb") as f:
    payload = flax.serialization.msgpack_restore(f.read())
  return iteration, payload["state"]


"""Atomic checkpoints of the training state pytree, one file per completed iteration.

A checkpoint is written to a temporary name and renamed into place, so a run killed at
any moment leaves either the previous checkpoint or the new one, never half of one.
Files: <checkpoint_dir>/ckpt_<iteration>.msgpack (flax msgpack serialization).
"""
import os
import re
import shutil
from typing import Any, Optional

import flax.serialization
import jax
import numpy as np

from batch_rl.tf_utils import gfile

_PATTERN = re.compile(r"^ckpt_(\d+)\.msgpack$")


def _path(checkpoint_dir: str, iteration: int) -> str:
  return os.path.join(checkpoint_dir, f"ckpt_{iteration:06d}.msgpack")


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


def save(checkpoint_dir: str, iteration: int, tree: Any, keep: int = 2) -> str:
  """Writes `tree` as the checkpoint of `iteration`; keeps the newest `keep` files."""
  payload = flax.serialization.to_bytes(
      {"iteration": np.int64(iteration), "state": jax.device_get(tree)})
  path = _path(checkpoint_dir, iteration)
  write_atomically(path, payload)
  for old in list_iterations(checkpoint_dir)[:-keep]:
    gfile().remove(_path(checkpoint_dir, old))
  return path


def restore_latest(checkpoint_dir: str, template: Any) -> Optional[tuple[int, Any]]:
  """(iteration, tree) of the newest checkpoint, shaped like `template`; None if none."""
  iterations = list_iterations(checkpoint_dir)
  if not iterations:
    return None
  path = _path(checkpoint_dir, iterations[-1])
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
  return int(restored["iteration"]), restored["state"]


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


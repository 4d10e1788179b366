"""The study's small JSON files, written atomically and read without raising.

Status files are rewritten while `status` reads them from another process (or
another machine on a shared file system), so each write goes to a temporary name in
the same directory and is renamed into place: a reader sees the old file or the new
one, never half of one. These are local files written by a process that supervises
train.py for hours, so this stays on the standard library (checkpointing's writer
imports JAX and TensorFlow, ~800 MB held for the whole run).
"""
import json
import os
from typing import Any, Optional


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through `<path>.tmp.<pid>` renamed into place.

  A failed write removes its temporary file and raises OSError naming the path.
  """
  directory = os.path.dirname(path) or "."
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    os.makedirs(directory, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise OSError(f"Could not write {path}: {e.strerror or e}.") from e


def write_json(path: str, value: Any) -> None:
  write_text(path, json.dumps(value, indent=1, sort_keys=True) + "\n")


def read_json(path: str) -> Optional[Any]:
  """The file's JSON value; None if it is missing or not JSON (a torn copy on a file
  system that does not rename atomically, or a hand edit)."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return None

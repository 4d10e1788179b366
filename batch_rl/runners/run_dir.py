"""One run per directory: a rerun continues the run it finds, never another one.

A run records its explicit gin bindings (`gin.config_str()`, canonical: order, comments
and include paths do not show) in <base_dir>/bindings.gin beside the operative
config.gin. A rerun into that directory compares its own bindings with them and stops
with the differing ones listed, before it loads data or compiles; `train.py --restart`
moves the old run aside (renamed, never deleted) and starts afresh.
"""
import datetime
import logging
import os
from typing import Optional

import gin

from batch_rl import checkpointing
from batch_rl import gin_bindings
from batch_rl.tf_utils import gfile
from batch_rl.validation import ConfigError

log = logging.getLogger("batch_rl")

BINDINGS_FILE = "bindings.gin"
OPERATIVE_FILE = "config.gin"
# Bindings a rerun may change without being another run: how long it trains, and
# how the data is read (not which data).
RESUMABLE_CHANGES = ("num_iterations", "num_workers")


def differences(stored: dict[str, object], current: dict[str, object],
                compare_missing: bool = True) -> list[str]:
  """'binding: stored value -> current value' for every binding that differs (values
  compared as parsed: 1e-4 and 0.0001 are the same)."""
  out = []
  for name in sorted(set(stored) | set(current)):
    if name.rsplit(".", 1)[-1] in RESUMABLE_CHANGES:
      continue
    old, new = stored.get(name), current.get(name)
    if old == new or (not compare_missing and (old is None or new is None)):
      continue
    out.append(f"{name}: {'(not bound)' if old is None else repr(old)} -> "
               f"{'(not bound)' if new is None else repr(new)}")
  return out


def _read(path: str) -> Optional[str]:
  if not gfile().exists(path):
    return None
  with gfile().GFile(path, "r") as f:
    return f.read()


def check_same_run(base_dir: str) -> None:
  """ConfigError listing the differing bindings when base_dir holds another run.

  A directory without a recorded config is new (or holds no run yet). Runs recorded
  before bindings.gin existed are compared on the bindings both configs name.
  """
  stored_text = _read(os.path.join(base_dir, BINDINGS_FILE))
  compare_missing = stored_text is not None
  if stored_text is None:
    stored_text = _read(os.path.join(base_dir, OPERATIVE_FILE))
  if stored_text is None:
    return
  found = differences(gin_bindings.bindings(stored_text),
                      gin_bindings.bindings(gin.config_str()), compare_missing)
  if found:
    raise ConfigError(
        f"--base_dir={base_dir} holds a run made with other settings; these bindings "
        "differ (stored -> now): " + "; ".join(found) + ". Use a new --base_dir, or "
        "rerun with --restart to move the old run aside (it is renamed, not deleted) "
        "and start afresh.")


def record_bindings(base_dir: str, rewrite=lambda text: text) -> None:
  """Writes this run's explicit bindings (mapped by `rewrite`) to
  <base_dir>/bindings.gin (atomically)."""
  checkpointing.write_atomically(os.path.join(base_dir, BINDINGS_FILE),
                                 rewrite(gin.config_str()).encode())


def move_aside(base_dir: str) -> Optional[str]:
  """Renames an existing base_dir to <base_dir>.old-<UTC time>; returns the new name."""
  if not gfile().exists(base_dir):
    return None
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
  target = f"{base_dir.rstrip('/')}.old-{stamp}"
  gfile().rename(base_dir, target)
  log.info("Moved the earlier run in %s aside to %s.", base_dir, target)
  return target

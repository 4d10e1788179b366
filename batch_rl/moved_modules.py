"""Module paths that moved, still importable under their old names.

Gin files name modules in `import` lines, so a user's gin file written for an older
layout keeps working: importing an old name logs which module to import instead and
returns the new module itself (one module object under both names, so gin sees each
configurable once).
"""
import importlib
import importlib.abc
import importlib.machinery
import logging
import sys

_DATASETS = ("dqn_replay_format", "fixed_replay", "replay_logger", "rlu_tfds", "store",
             "streaming", "subsampling", "verify")
MOVED = {
    "batch_rl.run_experiment": "batch_rl.runners.offline",
    "batch_rl.online_runner": "batch_rl.runners.online",
    "batch_rl.gridworld.runner": "batch_rl.runners.gridworld",
    "batch_rl.quickstart": "batch_rl.datasets.quickstart",
    **{f"batch_rl.replay.{name}": f"batch_rl.datasets.{name}" for name in _DATASETS},
}


class _Alias(importlib.abc.Loader):

  def __init__(self, target: str):
    self.target = target

  def create_module(self, spec):
    logging.getLogger("batch_rl").warning(
        "`%s` has moved to `%s`; importing it under its old name still works, but "
        "update the import (in gin files: `import %s`).", spec.name, self.target,
        self.target)
    module = importlib.import_module(self.target)
    self._spec = module.__spec__
    return module

  def exec_module(self, module):
    # Already executed under its new name; the import machinery has just set the
    # alias's spec on it, so its own is put back.
    module.__spec__ = self._spec


class _MovedFinder(importlib.abc.MetaPathFinder):

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name not in MOVED:
      return None
    return importlib.machinery.ModuleSpec(name, _Alias(MOVED[name]))


def install() -> None:
  if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())

"""Gin parsing with messages that name the file or binding at fault.

Gin files compose along the axes a run varies: a domain/agent file (e.g.
gin_configs/quickstart.gin, gin_configs/offline/dqn.gin), then regulariser and
intervention files that bind only their own parameters (gin_configs/regularizers/,
gin_configs/interventions/). gin lets a later file silently override an earlier one,
so `parse_gin` logs a WARNING for every parameter that a --gin_files entry (with its
includes) binds to a value other than the one an earlier entry gave it: stacking an
agent file that includes another domain shows up in the log instead of silently
changing the run.
"""
import logging
import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import gin
from gin import config_parser

from batch_rl import gin_bindings
# Importing these modules registers every configurable a gin file may name.
from batch_rl import networks  # pylint: disable=unused-import
from batch_rl.agents import bc  # pylint: disable=unused-import
from batch_rl.agents import c51  # pylint: disable=unused-import
from batch_rl.agents import dqn  # pylint: disable=unused-import
from batch_rl.agents import qr_dqn  # pylint: disable=unused-import
from batch_rl.agents import rem  # pylint: disable=unused-import
from batch_rl.agents import learner  # pylint: disable=unused-import
from batch_rl.datasets import dqn_replay_format
from batch_rl.datasets import fixed_replay  # pylint: disable=unused-import
from batch_rl.datasets import bsuite_data  # pylint: disable=unused-import
from batch_rl.datasets import quickstart  # pylint: disable=unused-import
from batch_rl.environments import factory  # pylint: disable=unused-import
from batch_rl.runners import registry  # pylint: disable=unused-import
from batch_rl.runners.common import ConfigError

log = logging.getLogger("batch_rl")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Errors that are the user's input, reported as one message without a traceback.
USER_ERRORS = (ConfigError, dqn_replay_format.ReplayFormatError, ValueError, FileNotFoundError)


def parse_gin(files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses gin files then bindings; raises ConfigError naming what is wrong."""
  gin.clear_config()
  # Includes such as `include 'gin_configs/offline/dqn.gin'` resolve against the
  # repository root, from any working directory.
  # The root goes first: gin logs an ERROR line for every prefix that misses.
  prefixes = getattr(gin.config, "_LOCATION_PREFIXES", None)
  if prefixes is None:
    gin.add_config_file_search_path(_REPO_ROOT)
  elif _REPO_ROOT not in prefixes:
    prefixes.insert(0, _REPO_ROOT)
  # Parameter -> the binding that the --gin_files entries parsed so far left in force.
  earlier: Dict[Tuple[str, str, str], "_Binding"] = {}
  for path in files:
    if not os.path.isfile(path):
      raise ConfigError(f"--gin_files={path}: no such file (working directory "
                        f"{os.getcwd()}).")
    try:
      gin.parse_config_file(path)
    except (ValueError, SyntaxError, KeyError, IOError) as e:
      raise ConfigError(f"--gin_files={path}: {e}") from e
    earlier = _warn_about_rebindings(path, earlier)
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError, KeyError) as e:
      raise ConfigError(f"--gin_bindings=\"{binding}\": {e}") from e
  gin.finalize()


class _Binding(NamedTuple):
  """One `name = value` of a --gin_files entry, where it was written."""
  name: str              # as written, e.g. 'FixedReplayRunner.game' or 'scope/X.y'
  value: Any
  entry: str             # the --gin_files entry
  source: str            # the file holding the line: the entry or one of its includes


def _find_config_file(path: str) -> Optional[str]:
  """The file gin opens for `path`: as is if absolute, else under each search prefix."""
  prefixes = [""] if os.path.isabs(path) else getattr(gin.config, "_LOCATION_PREFIXES", [""])
  for prefix in prefixes:
    candidate = os.path.join(prefix, path)
    if os.path.isfile(candidate):
      return candidate
  return None


def _file_bindings(entry: str, path: str, opened: Tuple[str, ...] = ()
                   ) -> Dict[Tuple[str, str, str], _Binding]:
  """Bindings that parsing `path` makes, through its includes too, the last one winning.

  Keys are (scope, complete selector, parameter); a macro's parameter is ''.
  """
  found = _find_config_file(path)
  if found is None or os.path.realpath(found) in opened:
    return {}  # gin itself reports missing files; an include cycle is not followed.
  with open(found) as f:
    text = f.read()
  bindings = {}
  for statement in gin_bindings.statements(text):
    if isinstance(statement, config_parser.BindingStatement):
      scope, selector, arg_name = statement.scope, statement.selector, statement.arg_name
      name = f"{selector}.{arg_name}" if arg_name else selector
      if scope:
        name = f"{scope}/{name}"
      complete = gin_bindings.complete_selector(selector) if arg_name else selector
      bindings[(scope, complete, arg_name)] = _Binding(name, statement.value, entry, path)
    elif isinstance(statement, config_parser.IncludeStatement):
      bindings.update(_file_bindings(entry, statement.filename,
                                     opened + (os.path.realpath(found),)))
  return bindings


def _warn_about_rebindings(path: str, earlier: Dict[Tuple[str, str, str], _Binding]
                           ) -> Dict[Tuple[str, str, str], _Binding]:
  """Logs each binding of the --gin_files entry `path` that changes an earlier entry's.

  Returns `earlier` updated with this entry's bindings. Bindings within one entry (its
  own includes among them) never warn; neither do --gin_bindings. Only a diagnostic:
  a file this cannot read is left for gin, which has already parsed it.
  """
  try:
    bindings = _file_bindings(path, path)
  except Exception as e:  # pylint: disable=broad-except
    log.debug("Could not list the bindings of %s for rebinding warnings: %s", path, e)
    return earlier
  for key, new in bindings.items():
    old = earlier.get(key)
    if old is None:
      continue
    try:
      same = bool(old.value == new.value)
    except Exception:  # pylint: disable=broad-except
      same = repr(old.value) == repr(new.value)
    if same:
      continue
    where = "" if new.source == new.entry else f" (through its include {new.source})"
    old_where = "" if old.source == old.entry else f" (through its include {old.source})"
    log.warning("%s rebinds %s = %r%s; the earlier --gin_files entry %s set %r%s.",
                new.entry, new.name, new.value, where, old.entry, old.value, old_where)
  return {**earlier, **bindings}

"""Gin parsing with messages that name the file or binding at fault."""
import os
from typing import Sequence

import gin

# Importing these modules registers every configurable a gin file may name.
from batch_rl import networks  # pylint: disable=unused-import
from batch_rl import online_runner  # pylint: disable=unused-import
from batch_rl import quickstart  # pylint: disable=unused-import
from batch_rl import run_experiment
from batch_rl.agents import bc  # pylint: disable=unused-import
from batch_rl.agents import c51  # pylint: disable=unused-import
from batch_rl.agents import dqn  # pylint: disable=unused-import
from batch_rl.agents import qr_dqn  # pylint: disable=unused-import
from batch_rl.agents import rem  # pylint: disable=unused-import
from batch_rl.agents import learner  # pylint: disable=unused-import
from batch_rl.environments import factory  # pylint: disable=unused-import
from batch_rl.gridworld import runner as gridworld_runner  # pylint: disable=unused-import
from batch_rl.replay import dqn_replay_format
from batch_rl.replay import fixed_replay  # pylint: disable=unused-import

ConfigError = run_experiment.ConfigError
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
  for path in files:
    if not os.path.isfile(path):
      raise ConfigError(f"--gin_files={path}: no such file (working directory "
                        f"{os.getcwd()}).")
    try:
      gin.parse_config_file(path)
    except (ValueError, SyntaxError, KeyError, IOError) as e:
      raise ConfigError(f"--gin_files={path}: {e}") from e
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, SyntaxError, KeyError) as e:
      raise ConfigError(f"--gin_bindings=\"{binding}\": {e}") from e
  gin.finalize()

"""The engines that run a study's runs (local, slurm, ray), and what they share."""
from typing import Sequence

from batch_rl.validation import ConfigError


def reject_unknown_options(engine: str, options: dict, own: Sequence[str],
                           others: Sequence[str]) -> None:
  """ConfigError for an option no executor knows (the other executors' are ignored)."""
  unknown = sorted(set(options) - set(others))
  if unknown:
    raise ConfigError(f"--executor {engine} does not know the option(s) "
                      f"{', '.join('--' + k for k in unknown)}; it takes "
                      f"{', '.join('--' + k for k in own)}.")

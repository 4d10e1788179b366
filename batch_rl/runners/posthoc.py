"""What the post-hoc commands on a finished offline run share (evaluate_perturbed.py,
hessian_spectrum.py): opening the run from its own config.gin.

`open_offline_run` refuses, with a message naming the run, what is not one solo
offline run with a checkpoint (a vmapped run's top directory, an online or gridworld
run, a run that has not checkpointed yet) before anything is read or written.
"""
import inspect
import glob
import os
from typing import NamedTuple, Sequence


class OfflineRun(NamedTuple):
  """A solo offline run opened for a post-hoc command (its config.gin parsed)."""

  settings: dict          # FixedReplayRunner's arguments, defaults included
  checkpoint_dir: str
  iterations: list        # its checkpoints' iterations, oldest first


def runner_settings() -> dict:
  """FixedReplayRunner's arguments as the parsed gin config gives them (defaults
  included), without building the runner (which would load the data)."""
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import offline  # pylint: disable=g-import-not-at-top
  signature = inspect.signature(offline.FixedReplayRunner.__init__)
  settings = {name: p.default for name, p in signature.parameters.items()
              if p.default is not inspect.Parameter.empty}
  settings.update(gin.get_bindings("FixedReplayRunner"))
  return settings


def open_offline_run(run_dir: str, gin_files: Sequence[str], bindings: Sequence[str],
                     command: str, without_checkpoint: str) -> OfflineRun:
  """Parses the run's config.gin, then `gin_files` and `bindings`, and checks the run.

  Args:
    run_dir: the run's base_dir (a seed_<k>/ directory of a vmapped run).
    gin_files, bindings: applied after the run's own config.
    command: the command's name, for the messages.
    without_checkpoint: what a run without a checkpoint lacks, for its message.

  Raises:
    ConfigError naming the run: no config.gin (with the seed directories to pass
    instead, for a vmapped run), no checkpoint, not a FixedReplayRunner run, or a
    run of several vmapped seeds.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import offline  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import run_dir as run_dir_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(run_dir, run_dir_lib.OPERATIVE_FILE)
  if not os.path.isfile(config_path):
    seeds = sorted(os.path.relpath(d, run_dir) for pattern in ("seed_*", "lr_*/seed_*")
                   for d in glob.glob(os.path.join(run_dir, pattern)))
    hint = (f" It holds the members of a vmapped run: pass one of {', '.join(seeds)}."
            if seeds else "")
    raise ConfigError(f"--run_dir={run_dir} is not a run directory: it has no "
                      f"{run_dir_lib.OPERATIVE_FILE}.{hint}")
  checkpoint_dir = os.path.join(run_dir, "checkpoints")
  iterations = checkpointing.list_iterations(checkpoint_dir)
  if not iterations:
    raise ConfigError(f"--run_dir={run_dir} has no checkpoint ({checkpoint_dir}/ckpt_"
                      f"<iteration>.msgpack): {without_checkpoint}.")
  config_lib.parse_gin([config_path, *gin_files], bindings)
  runner_fn = gin.get_bindings("create_runner").get("runner_fn", offline.FixedReplayRunner)
  if runner_fn is not offline.FixedReplayRunner:
    raise ConfigError(f"--run_dir={run_dir} is a {getattr(runner_fn, '__name__', runner_fn)} "
                      f"run; {command} reads offline runs (FixedReplayRunner).")
  settings = runner_settings()
  if settings["num_seeds"] != 1:
    raise ConfigError(f"--run_dir={run_dir} holds a run of {settings['num_seeds']} vmapped "
                      "seeds: pass one of its seed directories (seed_<k>).")
  return OfflineRun(settings, checkpoint_dir, list(iterations))


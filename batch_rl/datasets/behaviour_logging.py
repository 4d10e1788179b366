"""Datasets made by logging an online run's replay: the cache, its lock, and the run.

A behaviour run is the project's `OnlineRunner` with `log_dataset=True` and a replay
large enough to hold every transition of the run, started from gin bindings alone in
its own process (`python -m batch_rl.runners.behaviour_data`), so that nothing of the
run that asked for the dataset reaches the behaviour agent. Its last checkpoint holds
the whole run in order (the earlier ones are prefixes of it) and is kept as checkpoint
0. The dataset is made once, under a lock (a second process asking for it meanwhile
waits), into a temporary folder renamed into place when complete, with the run's
config.gin beside it. bsuite_data.py and mujoco_data.py say what each logs.
"""
import collections
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

from batch_rl.datasets import dqn_replay_format as fmt

log = logging.getLogger("batch_rl")


def cached_dataset(root: str, log_run: Callable[[str], None]) -> str:
  """<root>/replay_logs, first made by `log_run(run_dir)` (a behaviour run writing
  run_dir/replay_logs and run_dir/config.gin) if it is not there yet."""
  replay_dir = os.path.join(root, "replay_logs")
  if os.path.isdir(replay_dir):
    return replay_dir
  os.makedirs(os.path.dirname(root), exist_ok=True)
  # One process logs a dataset; another that asks for it meanwhile (runs of a study
  # launched together) waits for it instead of logging it a second time.
  with open(root + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.isdir(replay_dir):
      _log_into_place(root, log_run)
  return replay_dir


def _log_into_place(root: str, log_run: Callable[[str], None]) -> None:
  """Logs the dataset into a temporary folder renamed to `root` when complete."""
  tmp_root = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(root))
  try:
    log_run(os.path.join(tmp_root, "run"))
    os.makedirs(os.path.join(tmp_root, "final"))
    shutil.move(os.path.join(tmp_root, "run", "replay_logs"),
                os.path.join(tmp_root, "final", "replay_logs"))
    # What made the data, kept beside it.
    shutil.copy(os.path.join(tmp_root, "run", "config.gin"),
                os.path.join(tmp_root, "final", "config.gin"))
    os.rename(os.path.join(tmp_root, "final"), root)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)


def log_behaviour_run(base_dir: str, bindings: Sequence[str], label: str,
                      iterations: int) -> None:
  """Runs the online run of `bindings` (`iterations` of them, log_dataset on) into
  base_dir, and keeps its last replay checkpoint as checkpoint 0. `label` names the
  dataset in the progress lines and in the error raised if the run fails."""
  log.info("Logging %s with an online run ...", label)
  start = time.perf_counter()
  command = [sys.executable, "-m", "batch_rl.runners.behaviour_data", base_dir, *bindings]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
       os.environ.get("PYTHONPATH", "")]))
  # The behaviour run's progress lines (iteration, steps/s, ETA) pass through to the log;
  # the last ones are kept for the message if it fails.
  tail = collections.deque(maxlen=40)
  with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as process:
    for line in process.stdout:
      tail.append(line)
      if "env steps/s" in line or "error" in line.lower():
        log.info("behaviour run: %s", line.rstrip())
  if process.returncode != 0:
    raise RuntimeError(f"The behaviour run that logs {label} failed "
                       f"(exit {process.returncode}):\n{''.join(tail)}")
  replay_dir = os.path.join(base_dir, "replay_logs")
  last = iterations - 1
  if fmt.list_suffixes(replay_dir) != list(range(iterations)):
    raise RuntimeError(f"The behaviour run wrote checkpoints {fmt.list_suffixes(replay_dir)} "
                       f"in {replay_dir}; expected 0 ... {last}.")
  # Earlier checkpoints are prefixes of the last one's buffer: only the last is kept,
  # as checkpoint 0.
  files = {}  # name -> suffix
  for name in os.listdir(replay_dir):
    _, dot, rest = name.partition("_ckpt.")
    if dot and rest.split(".")[0].isdigit():
      files[name] = int(rest.split(".")[0])
  for name, suffix in files.items():
    if suffix != last:
      os.remove(os.path.join(replay_dir, name))
  for name, suffix in files.items():
    if suffix == last:
      stem, _, rest = name.partition("_ckpt.")
      os.rename(os.path.join(replay_dir, name),
                os.path.join(replay_dir, f"{stem}_ckpt.0{rest[len(str(last)):]}"))
  log.info("Logged %s in %.0f s.", label, time.perf_counter() - start)

"""One run of a study: what it trains, where, and the files that say how it went.

A `Run` is fully described by its gin files and bindings; the study's executors
(local subprocesses, SLURM through submitit, Ray tasks) all call `job.run_one(run)`,
which runs `train.py` for it in a subprocess and keeps the run's status file. The
study's state is read back from the run directories alone (`status.py`), so it can be
inspected while the study runs, from any machine that sees the files.

Files of a run, under `run_dir`:
  config.gin, bindings.gin, events.out.tfevents.*, checkpoints/   written by train.py
  study_run.json      the Run itself (name, gin files, bindings), written at launch
  study_status.json   {"state", "attempt", "rc", "host", "pid", "job_id", "started",
                       "ended", "error", "log"}, rewritten atomically by run_one
  logs/attempt_<k>.log  stdout and stderr of attempt k of train.py
"""
import dataclasses
import json
import os
import sys
from typing import Optional

RUN_FILE = "study_run.json"
STATUS_FILE = "study_status.json"
LOG_DIR = "logs"
# The file a study directory keeps of the study it was launched with.
STUDY_FILE = "study.json"

# States in study_status.json. "interrupted": the train.py process was stopped by a
# signal (preempted, killed); rerunning resumes it. "failed": train.py exited 1 or 2.
PENDING, RUNNING, DONE, FAILED, INTERRUPTED = (
    "pending", "running", "done", "failed", "interrupted")
# Submitted to a scheduler's queue and not started yet ("job_id" says where); a relaunch
# skips it while the scheduler still lists the job.
QUEUED = "queued"

# train.py's exit status after a graceful stop (SIGTERM or SIGUSR2): it finished its
# current jitted call, wrote a checkpoint with its position inside the iteration, and
# rerunning the same command continues from there.
PREEMPTED_EXIT = 3

# The repository root: train.py and the gin_configs/ paths of study files are found here.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study.

  name: the run's path relative to the study directory ("breakout/dqn-lr1e-4/seed_2").
  run_dir: absolute path of its directory (train.py's --base_dir).
  gin_files: the gin files, in order (paths relative to REPO_ROOT or absolute).
  bindings: gin bindings applied after the files, in order ("FixedReplayRunner.seed = 2").
  axes: {axis name: value label} of the axes that vary in the study.
  """
  name: str
  run_dir: str
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]
  axes: tuple[tuple[str, str], ...] = ()

  def command(self, python: Optional[str] = None) -> list[str]:
    """The train.py command line of this run."""
    argv = [python or sys.executable, os.path.join(REPO_ROOT, "train.py"),
            f"--base_dir={self.run_dir}"]
    argv += [f"--gin_files={f}" for f in self.gin_files]
    argv += [f"--gin_bindings={b}" for b in self.bindings]
    return argv

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "Run":
    d = json.loads(text)
    return cls(name=d["name"], run_dir=d["run_dir"], gin_files=tuple(d["gin_files"]),
               bindings=tuple(d["bindings"]),
               axes=tuple(tuple(pair) for pair in d.get("axes", ())))

"""One attempt at one run: train.py in a subprocess, the run's status file kept.

    python -m batch_rl.study.job RUN_DIR [--threads N] [--cpus 0,1]

runs the run described by RUN_DIR/study_run.json (what the executors start on a
worker); `run_one(run)` is the same from Python. The attempt's number k is one more
than the logs/attempt_*.log files already there; train.py's stdout and stderr go to
logs/attempt_<k>.log. study_status.json is written (atomically) when train.py has
started, as "running" with this host, this process's pid (`pid`), train.py's
(`train_pid`), the job id (`BATCH_RL_STUDY_JOB_ID`, else SLURM's array or job id),
the start time, the attempt and the log; and again when train.py exits:

  exit 0                                  -> done
  exit 3 (run.PREEMPTED_EXIT) or a signal -> interrupted (rerunning resumes it)
  any other exit                          -> failed, with `error` = the log's first
                                             line starting "error:" (train.py's one
                                             paragraph), else its last non-empty line

SIGTERM and SIGUSR2 sent to this process are passed on to train.py (which then
checkpoints and exits 3), SIGINT as SIGTERM; this process waits for train.py either
way and records how it ended. train.py runs in its own session, so a Ctrl-C at a
terminal reaches it only through this process. The command exits 0 done, 1 failed,
3 interrupted, 2 if RUN_DIR holds no study_run.json.

Threads (`threads`): OMP_NUM_THREADS, MKL_NUM_THREADS and TensorFlow's
TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS are set to N, and with N = 1 XLA_FLAGS
gains --xla_cpu_multi_thread_eigen=false (XLA:CPU's Eigen matmuls and convolutions on
one thread). OPENBLAS_NUM_THREADS is 1 whatever N is, unless the environment already
sets it: JAX's CPU SVD and eigh run LAPACK in scipy's OpenBLAS, whose threads fight
XLA's (an Lp gradient step was 66x slower with OpenBLAS's default threads;
docs/gridworld.md, "Lp cost"). XLA has no flag for the size of its own thread pool
(`intra_op_parallelism_threads=N`, often quoted, is silently ignored by XLA_FLAGS):
it sizes the pool from the CPUs the process may run on, so `cpus` (a CPU affinity set
that train.py inherits) is what bounds it. Both are set by the local executor.
"""
import argparse
import datetime
import glob
import os
import signal
import socket
import subprocess
import sys
from typing import Mapping, Optional, Sequence

from batch_rl.study import files
from batch_rl.study import run as run_lib

# Set by an executor that knows its task's id better than SLURM's variables (Ray).
JOB_ID_ENV = "BATCH_RL_STUDY_JOB_ID"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS")
_SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"
# Exit status of `python -m batch_rl.study.job` for each final state.
EXIT_STATUS = {run_lib.DONE: 0, run_lib.FAILED: 1, run_lib.INTERRUPTED: 3}


def now() -> str:
  """The current UTC time, ISO 8601 to the second ('2025-01-31T12:00:00Z')."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def thread_env(threads: int, base: Mapping[str, str]) -> dict[str, str]:
  """The variables that hold train.py's libraries to `threads` threads each."""
  env = {name: str(threads) for name in _THREAD_VARS}
  env["OPENBLAS_NUM_THREADS"] = base.get("OPENBLAS_NUM_THREADS") or "1"
  if threads == 1:
    flags = base.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
      env["XLA_FLAGS"] = f"{flags} {_SINGLE_THREAD_XLA}".strip()
  return env


def job_id(env: Mapping[str, str]) -> Optional[str]:
  """BATCH_RL_STUDY_JOB_ID, else SLURM's '<array job>_<task>', else SLURM_JOB_ID."""
  if env.get(JOB_ID_ENV):
    return env[JOB_ID_ENV]
  if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
  return env.get("SLURM_JOB_ID")


def status_path(run_dir: str) -> str:
  return os.path.join(run_dir, run_lib.STATUS_FILE)


def next_attempt(run_dir: str) -> int:
  return len(glob.glob(os.path.join(run_dir, run_lib.LOG_DIR, "attempt_*.log"))) + 1


def error_line(log_path: str) -> Optional[str]:
  """The log's first line starting with 'error:' (its text after that), else its last
  non-empty line other than the context lines gin appends to an exception raised in a
  configurable ("In call to configurable ..."), i.e. the exception itself; None for an
  empty or missing log."""
  last = None
  try:
    with open(log_path, encoding="utf-8", errors="replace") as f:
      for line in f:
        line = line.strip()
        if line.startswith("error:"):
          return line[len("error:"):].strip()
        if line and not line.startswith("In call to configurable"):
          last = line
  except OSError:
    return None
  return last


def final_state(rc: int) -> str:
  if rc == 0:
    return run_lib.DONE
  if rc == run_lib.PREEMPTED_EXIT or rc < 0:
    return run_lib.INTERRUPTED
  return run_lib.FAILED


def _signal_name(number: int) -> str:
  try:
    return signal.Signals(number).name
  except ValueError:
    return f"signal {number}"


def run_one(run: run_lib.Run, attempt_env: Optional[Mapping[str, str]] = None,
            threads: Optional[int] = None, cpus: Optional[Sequence[int]] = None,
            python: Optional[str] = None) -> str:
  """Runs train.py for `run` once, keeping its status file; returns the final state.

  attempt_env: variables added to train.py's environment for this attempt.
  threads: per-library thread count (see the module docstring); None leaves them.
  cpus: CPU affinity of train.py (None: this process's).
  python: the interpreter (default this one).
  """
  os.makedirs(os.path.join(run.run_dir, run_lib.LOG_DIR), exist_ok=True)
  run_file = os.path.join(run.run_dir, run_lib.RUN_FILE)
  if not os.path.exists(run_file):
    files.write_text(run_file, run.to_json() + "\n")
  attempt = next_attempt(run.run_dir)
  log_path = os.path.join(run.run_dir, run_lib.LOG_DIR, f"attempt_{attempt}.log")
  env = dict(os.environ)
  env.update(attempt_env or {})
  if threads is not None:
    env.update(thread_env(threads, env))
  status = {"state": run_lib.RUNNING, "attempt": attempt, "rc": None,
            "host": socket.gethostname(), "pid": os.getpid(), "train_pid": None,
            "job_id": job_id(env), "started": now(), "ended": None, "error": None,
            "log": log_path}
  command = run.command(python)
  child: list[subprocess.Popen] = []
  stop: list[int] = []

  def forward(signum, frame):  # pylint: disable=unused-argument
    send = signal.SIGTERM if signum == signal.SIGINT else signum
    stop.append(send)
    if child and child[0].poll() is None:
      child[0].send_signal(send)

  handled = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)
  previous = {s: signal.signal(s, forward) for s in handled}
  try:
    with open(log_path, "wb") as log:
      log.write(("command: " + " ".join(command) + "\n").encode())
      log.flush()
      if stop:  # stopped before train.py started: nothing to resume from yet
        rc = -stop[0]
      else:
        try:
          child.append(subprocess.Popen(
              command, cwd=run_lib.REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
              env=env, start_new_session=True,
              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None))
        except OSError as e:
          status.update(state=run_lib.FAILED, ended=now(), error=f"could not start "
                        f"train.py: {e}")
          files.write_json(status_path(run.run_dir), status)
          return run_lib.FAILED
        status["train_pid"] = child[0].pid
        files.write_json(status_path(run.run_dir), status)
        if stop:  # a signal between the start and the handler seeing the child
          child[0].send_signal(stop[-1])
        rc = child[0].wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  state = final_state(rc)
  error = None
  if state == run_lib.FAILED:
    error = error_line(log_path) or f"train.py exited with status {rc}"
  elif rc < 0:
    error = f"train.py was stopped by {_signal_name(-rc)}"
  status.update(state=state, rc=rc, ended=now(), error=error)
  files.write_json(status_path(run.run_dir), status)
  return state


def load_run(run_dir: str) -> run_lib.Run:
  """The Run recorded in run_dir/study_run.json, with run_dir as found (the study
  directory may have moved since launch)."""
  path = os.path.join(run_dir, run_lib.RUN_FILE)
  with open(path, encoding="utf-8") as f:
    run = run_lib.Run.from_json(f.read())
  return run_lib.Run(name=run.name, run_dir=os.path.abspath(run_dir),
                     gin_files=run.gin_files, bindings=run.bindings, axes=run.axes)


def _cpu_list(text: str) -> list[int]:
  """'0,2-3' -> [0, 2, 3]."""
  out = []
  for part in text.split(","):
    low, _, high = part.partition("-")
    out.extend(range(int(low), int(high or low) + 1))
  return out


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m batch_rl.study.job",
      description="Runs one run of a study from its study_run.json.")
  parser.add_argument("run_dir")
  parser.add_argument("--threads", type=int, default=None,
                      help="threads per library in train.py (default: unset)")
  parser.add_argument("--cpus", type=_cpu_list, default=None,
                      help="CPU affinity of train.py, e.g. 0,1 or 0-3")
  args = parser.parse_args(argv)
  try:
    run = load_run(args.run_dir)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: {args.run_dir} holds no readable {run_lib.RUN_FILE} ({e}); launch "
          "the study to write it.", file=sys.stderr)
    return 2
  return EXIT_STATUS[run_one(run, threads=args.threads, cpus=args.cpus)]


if __name__ == "__main__":
  sys.exit(main())

"""The local executor: the study's runs as subprocesses of this machine, N at a time.

Each run is `python -m batch_rl.study.job RUN_DIR --threads T [--cpus ...]` (job.py:
train.py under a process that keeps the run's status file), in its own session so
that a terminal's Ctrl-C reaches it only through this process. T = the CPUs this
process may use // max_parallel (at least 1); with `pin_cpus` and at least
max_parallel CPUs, slot i of the max_parallel slots is also pinned to its own T CPUs,
which is what bounds XLA's thread pool (job.py says why). A line is printed as each
run ends; `launch` returns when all have ended.

SIGINT (Ctrl-C) or SIGTERM stops the study: no further run starts, SIGTERM goes to
every running job (which passes it to train.py: it checkpoints and exits), and once
they have ended `launch` returns with those runs counted as interrupted and the runs
never started as pending. A second signal sends SIGTERM again.
"""
import os
import signal
import subprocess
import sys
import time
from typing import Optional, TextIO

from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import run as run_lib


def _format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _slots(max_parallel: int, pin_cpus: bool) -> tuple[int, list[Optional[list[int]]]]:
  """(threads per run, the CPUs of each slot or None)."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
      range(os.cpu_count() or 1))
  threads = max(1, len(cpus) // max_parallel)
  if not pin_cpus or len(cpus) < max_parallel:
    return threads, [None] * max_parallel
  return threads, [cpus[i * threads:(i + 1) * threads] for i in range(max_parallel)]


def _state_of(run: run_lib.Run, rc: int) -> str:
  status = files.read_json(os.path.join(run.run_dir, run_lib.STATUS_FILE)) or {}
  state = status.get("state")
  if state in (run_lib.DONE, run_lib.FAILED, run_lib.INTERRUPTED):
    return state
  by_exit = {rc: state for state, rc in job.EXIT_STATUS.items()}
  return by_exit.get(rc, run_lib.FAILED)


def launch(runs: list[run_lib.Run], study_dir: str, max_parallel: int = 1,
           pin_cpus: bool = True, python: Optional[str] = None,
           out: Optional[TextIO] = None, poll_s: float = 0.2) -> dict[str, int]:
  """Runs `runs` to their end, max_parallel at a time; {state: count} of them.

  study_dir: the study directory (the runs' directories are in their Run).
  pin_cpus: give each parallel slot its own CPUs (see the module docstring).
  python: the interpreter of the jobs (default this one).
  out: where progress lines go (default stdout).
  """
  del study_dir  # the runs carry their directories
  out = out or sys.stdout
  max_parallel = max(1, int(max_parallel))
  threads, slot_cpus = _slots(max_parallel, pin_cpus)
  queue = list(runs)
  free = list(range(max_parallel))
  running: dict[int, tuple[subprocess.Popen, run_lib.Run, int, float]] = {}
  counts = {run_lib.DONE: 0, run_lib.FAILED: 0, run_lib.INTERRUPTED: 0}
  stopping: list[int] = []
  start = time.monotonic()

  def stop(signum, frame):  # pylint: disable=unused-argument
    stopping.append(signum)
    for proc, _, _, _ in running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
  print(f"Launching {len(runs)} run(s), {max_parallel} at a time, {threads} thread(s) "
        "each.", file=out, flush=True)
  try:
    while running or (queue and not stopping):
      while queue and free and not stopping:
        slot = free.pop(0)
        run = queue.pop(0)
        command = [python or sys.executable, "-m", "batch_rl.study.job", run.run_dir,
                   f"--threads={threads}"]
        if slot_cpus[slot]:
          command.append("--cpus=" + ",".join(map(str, slot_cpus[slot])))
        proc = subprocess.Popen(command, cwd=run_lib.REPO_ROOT, stdout=subprocess.DEVNULL,
                                start_new_session=True)
        running[proc.pid] = (proc, run, slot, time.monotonic())
      time.sleep(poll_s)
      for pid in [p for p, entry in running.items() if entry[0].poll() is not None]:
        proc, run, slot, began = running.pop(pid)
        free.append(slot)
        state = _state_of(run, proc.returncode)
        counts[state] += 1
        finished = sum(counts.values())
        line = (f"[{finished}/{len(runs)}] {state:<11} {run.name} "
                f"({_format_duration(time.monotonic() - began)}) | "
                f"{counts[run_lib.DONE]} done, {counts[run_lib.FAILED]} failed, "
                f"{counts[run_lib.INTERRUPTED]} interrupted, {len(running)} running, "
                f"{len(queue)} queued | {_format_duration(time.monotonic() - start)}")
        if state != run_lib.DONE:
          status = files.read_json(os.path.join(run.run_dir, run_lib.STATUS_FILE)) or {}
          if status.get("error"):
            line += f"\n    {status['error']}"
          if status.get("log"):
            line += f"\n    log: {status['log']}"
        print(line, file=out, flush=True)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  summary = {state: n for state, n in counts.items() if n}
  if queue:
    summary[run_lib.PENDING] = len(queue)
  stopped = " (stopped by a signal; rerun the launch to resume)" if stopping else ""
  print(f"{sum(counts.values())} of {len(runs)} run(s) ended in "
        f"{_format_duration(time.monotonic() - start)}: "
        + ", ".join(f"{n} {state}" for state, n in summary.items()) + stopped,
        file=out, flush=True)
  return summary

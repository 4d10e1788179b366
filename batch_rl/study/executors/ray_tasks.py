"""The Ray executor: each run of a study as a Ray task, resubmitted when interrupted.

    python -m batch_rl.study launch STUDY.toml --executor ray [--ray_address HOST:PORT]
        [--cpus_per_run 1] [--gpus_per_run 0] [--max_requeue 3]

With --ray_address the tasks go to that cluster (its GCS address, `ray://HOST:PORT`
for Ray Client, or "auto" for the cluster `ray start` made on this machine); without
it a Ray instance is started here with all of this machine's CPUs and shut down when
the study ends. Each task runs `job.run_one(run)`: train.py in a subprocess, the
run's status file kept (its job_id is "ray:<task id>"). Workers import batch_rl from
this checkout (PYTHONPATH is set in the tasks' runtime environment), so the cluster's
nodes must see the repository and the study directory at the same paths. `launch`
blocks until every run has ended (the tasks belong to this driver and end with it),
printing a line as each one does, and returns {state: count}. A cluster that
`ray start` made with token authentication (the default since Ray 2.59) needs
RAY_AUTH_MODE=token in this process's environment (and its token) to connect.

How runs survive interruptions:
  * train.py stopped by a signal (SIGTERM: it checkpoints and exits 3; SIGKILL; the
    OOM killer): `run_one` returns "interrupted" and the run is submitted again, up
    to --max_requeue times; train.py resumes from its last checkpoint.
  * The task's worker process dies (its node is preempted or lost): Ray retries the
    task itself (`max_retries` = --max_requeue). A retry on the same host first waits
    for a train.py of the run that outlived its worker (then stops it), so that two
    never write the same run directory.
  * Ctrl-C (or SIGTERM) of this driver stops the study: each running train.py gets
    SIGTERM from a small task placed on its node (ray.cancel alone would not reach
    it: Ray interrupts a task's Python code, which is waiting for train.py), so it
    checkpoints and exits; queued tasks are cancelled. The runs end "interrupted" and
    relaunching the study resumes them.
"""
import logging
import os
import signal
import socket
import time
from typing import Optional
from urllib import parse

from batch_rl import validation
from batch_rl.study import executors
from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import run as run_lib
from batch_rl.study.executors import slurm
from batch_rl.validation import ConfigError

OPTIONS = ("ray_address", "cpus_per_run", "gpus_per_run", "max_requeue", "wait")
# Options of the other executors, ignored here.
OTHER_OPTIONS = ("partition", "time_min", "mem_gb", "sbatch", "array_parallelism",
                 "max_parallel")
# Seconds a --ray_address has to accept a TCP connection.
CONNECT_TIMEOUT_S = 5.0
# Seconds to wait for the tasks to stop after Ctrl-C.
STOP_TIMEOUT_S = 120.0
_DEFAULT_PORTS = {"ray": 10001, "": 6379}


def _host_port(address: str) -> Optional[tuple[str, int]]:
  """(host, port) that `address` connects to; None for "auto" and "local"."""
  if address in ("auto", "local"):
    return None
  scheme = address.split("://", 1)[0] if "://" in address else ""
  parsed = parse.urlsplit(address if scheme else f"//{address}")
  try:
    port = parsed.port or _DEFAULT_PORTS.get(scheme)
  except ValueError:
    port = None
  if not parsed.hostname or port is None:
    raise ConfigError(f"--ray_address={address} is not HOST:PORT, ray://HOST:PORT or "
                      "auto.")
  return parsed.hostname, port


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
  """ConfigError unless something accepts connections at the address (ray.init
  itself retries a silent address for minutes)."""
  target = _host_port(address)
  if target is None:
    return
  try:
    with socket.create_connection(target, timeout=timeout_s):
      pass
  except OSError as e:
    raise ConfigError(
        f"--ray_address={address}: nothing answers at {target[0]}:{target[1]} "
        f"within {timeout_s:g} s ({e.strerror or e}). Start the cluster (`ray start "
        "--head` prints its address), check the address, or leave --ray_address out "
        "to start Ray on this machine.") from None


class _RaySession:
  """ray.init on entry (a connection, or a local instance), ray.shutdown on exit;
  a Ray already initialized in this process is used as it is and left running."""

  def __init__(self, address: Optional[str]):
    self.address = address
    self.owned = False

  def __enter__(self):
    import ray  # pylint: disable=g-import-not-at-top
    if ray.is_initialized():
      return self
    common = dict(include_dashboard=False, log_to_driver=False,
                  logging_level=logging.WARNING, configure_logging=True)
    if self.address:
      try:
        ray.init(address=self.address, **common)
      except ConnectionError as e:
        raise ConfigError(
            f"--ray_address={self.address}: Ray could not connect ({e}). If the "
            "cluster uses token authentication (`ray start` enables it since Ray "
            "2.59), set RAY_AUTH_MODE=token here, with its token in RAY_AUTH_TOKEN or "
            "~/.ray/auth_token (`ray get-auth-token` on the head node).") from None
    else:
      # "local": a new instance even where `ray start` runs a cluster on this machine.
      ray.init(address="local", num_cpus=os.cpu_count() or 1, **common)
    self.owned = True
    return self

  def __exit__(self, *exc):
    import ray  # pylint: disable=g-import-not-at-top
    if self.owned:
      ray.shutdown()
    return False


def run_task(run: run_lib.Run, threads: int) -> str:
  """What a Ray task runs: one attempt at the run; its final state."""
  import ray  # pylint: disable=g-import-not-at-top
  task_id = ray.get_runtime_context().get_task_id() or ""
  slurm.wait_for_previous_train(run)
  return job.run_one(run, attempt_env={job.JOB_ID_ENV: f"ray:{task_id[:16]}"},
                     threads=threads)


def _runtime_env() -> dict:
  """The tasks' environment: this checkout first on PYTHONPATH (workers import
  batch_rl from it, installed or not)."""
  pythonpath = run_lib.REPO_ROOT + (":" + os.environ["PYTHONPATH"]
                                    if os.environ.get("PYTHONPATH") else "")
  return {"env_vars": {"PYTHONPATH": pythonpath}}


def _remote(cpus_per_run: int, gpus_per_run: int, max_requeue: int):
  import ray  # pylint: disable=g-import-not-at-top
  options = dict(num_cpus=cpus_per_run, max_retries=max_requeue, retry_exceptions=False,
                 runtime_env=_runtime_env())
  if gpus_per_run:
    options["num_gpus"] = gpus_per_run
  return ray.remote(run_task).options(**options)


def stop_train(run: run_lib.Run, pid: int) -> bool:
  """What the stop task runs on a run's node: SIGTERM to its train.py (checkpoints
  and exits 3). False when pid is no longer that train.py."""
  if not slurm.is_train_of(pid, run):
    return False
  os.kill(pid, signal.SIGTERM)
  return True


def _stop_running(runs) -> set[str]:
  """Sends SIGTERM to the train.py of every running run, from a task on its node;
  the names of those runs."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray.util import scheduling_strategies  # pylint: disable=g-import-not-at-top
  nodes = {n["NodeManagerHostname"]: n["NodeID"] for n in ray.nodes() if n.get("Alive")}
  refs = {}
  for run in runs:
    status = files.read_json(job.status_path(run.run_dir)) or {}
    node = nodes.get(status.get("host"))
    if status.get("state") != run_lib.RUNNING or not status.get("train_pid") or not node:
      continue
    where = scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=False)
    task = ray.remote(stop_train).options(num_cpus=0, scheduling_strategy=where,
                                          runtime_env=_runtime_env())
    refs[run.name] = task.remote(run, status["train_pid"])
  if refs:
    ray.wait(list(refs.values()), num_returns=len(refs), timeout=60)
  return set(refs)


def _final_state(run: run_lib.Run, ref) -> tuple[str, Optional[str]]:
  """The task's state and, when the task itself failed, why."""
  import ray  # pylint: disable=g-import-not-at-top
  try:
    return ray.get(ref), None
  except ray.exceptions.TaskCancelledError:
    return run_lib.INTERRUPTED, "cancelled"
  except ray.exceptions.RayError as e:
    # The worker died more than max_retries times, or run_one raised.
    status = files.read_json(job.status_path(run.run_dir)) or {}
    state = status.get("state")
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if state in (run_lib.DONE, run_lib.FAILED):
      return state, reason
    return run_lib.INTERRUPTED, reason


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  return f"{minutes}m{seconds:02d}s"


class _Stop:
  """SIGINT/SIGTERM of the driver while it waits: the tasks are cancelled."""

  def __init__(self):
    self.requested = False
    self.previous = {}

  def __enter__(self):
    for s in (signal.SIGINT, signal.SIGTERM):
      try:
        self.previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread: Ctrl-C stays Python's
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)
    return False


def _wait_all(runs, remote, threads: int, max_requeue: int) -> dict[str, int]:
  """Submits every run, resubmits interrupted ones, waits for all; {state: count}."""
  import ray  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  pending = {}
  for run in runs:
    pending[remote.remote(run, threads)] = (run, 0, time.monotonic())
  counts: dict[str, int] = {}
  cancelled, deadline = False, None
  with _Stop() as stop:
    while pending:
      if stop.requested and not cancelled:
        print(f"Stopping {len(pending)} task(s): SIGTERM to each train.py (it "
              "checkpoints first), queued ones cancelled.", flush=True)
        signalled = _stop_running([run for run, _, _ in pending.values()])
        # Cancelling a task interrupts its Python code; one waiting for its train.py
        # is left to return once train.py has checkpointed.
        for ref, (run, _, _) in pending.items():
          if run.name not in signalled:
            ray.cancel(ref)
        cancelled = True
        deadline = time.monotonic() + STOP_TIMEOUT_S
      if cancelled and deadline is not None and time.monotonic() > deadline:
        for ref in pending:
          ray.cancel(ref, force=True)
        deadline = None
      ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
      for ref in ready:
        run, resubmits, began = pending.pop(ref)
        state, reason = _final_state(run, ref)
        if state == run_lib.INTERRUPTED and resubmits < max_requeue and not cancelled:
          print(f"interrupted {run.name}: resubmitted ({resubmits + 1}/{max_requeue})"
                + (f" ({reason})" if reason else ""), flush=True)
          pending[remote.remote(run, threads)] = (run, resubmits + 1, began)
          continue
        counts[state] = counts.get(state, 0) + 1
        finished = sum(counts.values())
        line = (f"[{finished}/{len(runs)}] {state:<11} {run.name} "
                f"({_format_duration(time.monotonic() - began)}) | {len(pending)} "
                f"running or queued | {_format_duration(time.monotonic() - start)}")
        if state != run_lib.DONE:
          status = files.read_json(job.status_path(run.run_dir)) or {}
          detail = reason or status.get("error")
          if detail:
            line += f"\n    {detail}"
          if status.get("log"):
            line += f"\n    log: {status['log']}"
        print(line, flush=True)
  print(f"{len(runs)} run(s) ended in {_format_duration(time.monotonic() - start)}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
  return counts


def launch(runs: list[run_lib.Run], study_dir: str, ray_address: Optional[str] = None,
           cpus_per_run: int = 1, gpus_per_run: int = 0, max_requeue: int = 3,
           wait: bool = True, **rest) -> dict[str, int]:
  """Runs `runs` as Ray tasks until every one has ended; {state: count} of them.

  wait: accepted for the CLI's sake; the tasks always run under this call.
  Raises ConfigError, having started nothing, for a --ray_address where nothing
  answers or a wrong option.
  """
  del study_dir  # the runs carry their directories
  executors.reject_unknown_options("ray", rest, OPTIONS, OTHER_OPTIONS)
  validation.check_positive("--cpus_per_run", cpus_per_run)
  validation.check_int_at_least("--gpus_per_run", gpus_per_run, 0)
  validation.check_int_at_least("--max_requeue", max_requeue, 0)
  if ray_address:
    check_address(ray_address)
  if not runs:
    print("No runs to launch.")
    return {}
  if not wait:
    print("--executor ray waits for its tasks: they end with this process.")
  try:
    import ray  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError("--executor ray needs Ray: pip install -e '.[cluster]'.") from None
  with _RaySession(ray_address):
    resources = ray.cluster_resources()
    print(f"Launching {len(runs)} run(s) on Ray ({resources.get('CPU', 0):g} CPUs, "
          f"{resources.get('GPU', 0):g} GPUs; {cpus_per_run} CPU(s)"
          + (f", {gpus_per_run} GPU(s)" if gpus_per_run else "") + " per run).",
          flush=True)
    threads = max(1, int(cpus_per_run))
    remote = _remote(cpus_per_run, gpus_per_run, max_requeue)
    return _wait_all(runs, remote, threads, max_requeue)

"""The SLURM executor: a study's runs as one job array, submitted through submitit.

    python -m batch_rl.study launch STUDY.toml --executor slurm [--partition P]
        [--time_min 60] [--cpus_per_run 1] [--gpus_per_run 0] [--mem_gb G]
        [--max_requeue 3] [--array_parallelism N] [--sbatch KEY=VALUE ...] [--wait]

Each array task runs `job.run_one(run)` (train.py in a subprocess, the run's status
file kept) with the Python that submitted it (`sys.executable`, so the venv) and the
repository on PYTHONPATH. submitit's files (sbatch scripts, pickles, the tasks'
stdout and stderr) go to <study_dir>/.submitit/. Nothing is submitted until `sbatch`
is found, the partition exists and every --sbatch entry parses.

How a run survives preemption and the time limit. SLURM signals every process of a
job step, so train.py receives the signal itself (and `run_one` passes it on once
more); train.py then finishes its current step, writes a checkpoint and exits 3, and
`run_one` records the run as "interrupted". What happens next depends on what SLURM
is doing with the job, which `RunTask` reads back from `scontrol show job`:

  * Preemption (PreemptMode=REQUEUE), `scontrol requeue`, a node drained for
    maintenance: SLURM sends SIGTERM (then SIGKILL after KillWait), marks the job
    COMPLETING and requeues it itself once all its processes have ended. The task
    exits without a result (so that submitit does not take this attempt for the job's
    outcome); the requeued task reruns the same pickled call and train.py resumes.
    `scancel` looks the same from inside the job and ends it: the run stays
    "interrupted" and relaunching the study resumes it.
  * The time limit: sbatch's `--signal=USR2@<delay>` (set by submitit) sends SIGUSR2
    <delay> seconds before the end while the job keeps RUNNING, and so does
    `scancel --signal=USR2`. Once train.py has exited, the task hands the signal to
    submitit's handler (which `run_one` had replaced while train.py ran): that calls
    `RunTask.checkpoint`, which returns the same call to run again, writes it as the
    job's pickle and runs `scontrol requeue`. submitit counts timeouts against
    --max_requeue (its `max_num_timeout`), not preemptions.
  * train.py killed outright (SIGKILL, the OOM killer) while SLURM keeps the job: the
    task requeues it the same way while SLURM_RESTART_COUNT < --max_requeue.

The requeued task cannot overlap the attempt it replaces: SLURM starts it only after
every process of the old one has exited, and `RunTask` first waits for a train.py of
the same run still alive on its host (an attempt's train.py that outlived its job,
which process tracking by parent pid, proctrack/linuxproc, can lose).
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from batch_rl import validation
from batch_rl.study import executors
from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import run as run_lib
from batch_rl.validation import ConfigError

# The options `launch` knows: the CLI passes all of them, this executor uses these.
OPTIONS = ("partition", "time_min", "gpus_per_run", "cpus_per_run", "mem_gb",
           "max_requeue", "sbatch", "array_parallelism", "wait")
# Options of the other executors, ignored here.
OTHER_OPTIONS = ("ray_address", "max_parallel")
# Seconds between status polls while waiting.
POLL_S = 2.0
# Seconds a task waits for a previous attempt's train.py of its run to exit.
STALE_TRAIN_WAIT_S = 120
_SBATCH_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# squeue states of a job that has not ended.
_ACTIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED",
                  "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED",
                  "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT", "PREEMPTED")
SETUP_HINT = ("run it on a cluster's login node, or start the one-node cluster of "
              "this machine with `sudo scripts/local_slurm.sh start`")


# ------------------------------------------------------------------------------------
# Inside the job.

def _process_state(pid: int) -> Optional[str]:
  """The one-letter state of a process ('R', 'S', 'Z', ...); None if there is none."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except (OSError, IndexError):
    return None


def is_train_of(pid: int, run: run_lib.Run) -> bool:
  """Whether pid is a live train.py of this run (not a zombie, not a reused pid)."""
  if _process_state(pid) in (None, "Z", "X"):
    return False
  try:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
      argv = f.read().decode(errors="replace").split("\0")
  except OSError:
    return False
  return f"--base_dir={run.run_dir}" in argv and any(a.endswith("train.py") for a in argv)


def previous_train_pid(run: run_lib.Run) -> Optional[int]:
  """train.py's pid from the run's status file, if it still runs on this host."""
  status = files.read_json(job.status_path(run.run_dir)) or {}
  pid = status.get("train_pid")
  if (status.get("state") != run_lib.RUNNING or not isinstance(pid, int)
      or status.get("host") != socket.gethostname()):
    return None
  return pid if is_train_of(pid, run) else None


def wait_for_previous_train(run: run_lib.Run, timeout_s: float = STALE_TRAIN_WAIT_S) -> None:
  """Waits until no earlier attempt's train.py of `run` runs on this host.

  Such a process was already told to stop (its job was requeued or its task retried);
  after `timeout_s` it is sent SIGTERM, then SIGKILL, so that two train.py never write
  the same run directory. Its checkpoints are written atomically.
  """
  pid = previous_train_pid(run)
  if pid is None:
    return
  print(f"{run.name}: waiting for the previous attempt's train.py (pid {pid}) to exit",
        flush=True)
  for sig, wait_s in ((None, timeout_s), (signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
    if sig is not None:
      try:
        os.kill(pid, sig)
      except OSError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
      if not is_train_of(pid, run):
        return
      time.sleep(0.2)


def _slurm_job_state(job_id: str) -> Optional[str]:
  """The job's JobState from `scontrol show job` ('RUNNING', 'COMPLETING', ...)."""
  try:
    out = subprocess.run(["scontrol", "show", "job", job_id, "--oneliner"],
                         capture_output=True, text=True, timeout=60, check=False).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  match = re.search(r"\bJobState=(\S+)", out)
  return match.group(1) if match else None


class RunTask:
  """What each array task runs: one attempt at a run, requeued when it is stopped.

  submitit pickles this object with its argument (the Run); a requeued task unpickles
  the same call. `checkpoint` is submitit's hook for requeueing (see the module
  docstring for when it is called).
  """

  def __init__(self, threads: Optional[int], max_requeue: int):
    self.threads = threads
    self.max_requeue = max_requeue

  def __call__(self, run: run_lib.Run) -> str:
    wait_for_previous_train(run)
    state = job.run_one(run, threads=self.threads)
    if state == run_lib.INTERRUPTED:
      self._interrupted(run)
    return state

  def checkpoint(self, run: run_lib.Run):
    """The call that resumes the run (train.py resumes from its own checkpoint)."""
    import submitit  # pylint: disable=g-import-not-at-top
    wait_for_previous_train(run)
    return submitit.helpers.DelayedSubmission(self, run)

  def _interrupted(self, run: run_lib.Run) -> None:
    """Ends this attempt after train.py stopped, requeueing the job where SLURM won't.

    Returns only when the run is not to be requeued (the job then ends with the state
    "interrupted" as its result).
    """
    import submitit  # pylint: disable=g-import-not-at-top
    environment = submitit.JobEnvironment()
    slurm_state = _slurm_job_state(environment.job_id)
    if slurm_state != "RUNNING":
      # SLURM requeues (preemption, scontrol requeue) or cancels the job. No result
      # for submitit: the requeued task reruns this call.
      print(f"{run.name}: interrupted; SLURM is ending job {environment.job_id} "
            f"({slurm_state or 'state unknown'})", flush=True)
      sys.exit(run_lib.PREEMPTED_EXIT)
    status = files.read_json(job.status_path(run.run_dir)) or {}
    killed = isinstance(status.get("rc"), int) and status["rc"] < 0
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if killed and restarts >= self.max_requeue:
      print(f"{run.name}: train.py was killed ({status.get('error')}); not requeued "
            f"after {restarts} requeues (--max_requeue {self.max_requeue})", flush=True)
      return
    # SIGUSR2 (the time limit's warning, scancel --signal=USR2) or a killed train.py:
    # submitit's handler calls checkpoint(), requeues the job and exits, or raises
    # when the timeouts are used up.
    usr_sig = environment._usr_sig()  # pylint: disable=protected-access
    handler = signal.getsignal(usr_sig)
    if callable(handler):
      handler(usr_sig, None)


# ------------------------------------------------------------------------------------
# On the submitting machine.

def parse_sbatch(entries) -> dict[str, str]:
  """--sbatch entries -> {key: value} of sbatch long options ("account": "my_lab").

  entries: "KEY=VALUE" strings, or a {KEY: VALUE} mapping (the CLI's parse).
  """
  if isinstance(entries, dict):
    pairs = [(str(k), "=", str(v)) for k, v in entries.items()]
  else:
    pairs = [str(entry).partition("=") for entry in entries]
  parsed = {}
  for key, eq, value in pairs:
    name = key.strip().lstrip("-")
    if not eq or not _SBATCH_KEY.match(name):
      raise ConfigError(f"--sbatch {key + eq + value!r} is not KEY=VALUE with KEY an "
                        "sbatch long option name (e.g. --sbatch account=my_lab "
                        "--sbatch qos=preemptible).")
    parsed[name.replace("_", "-")] = value.strip()
  return parsed


def _check_numbers(time_min, cpus_per_run, gpus_per_run, mem_gb, max_requeue,
                   array_parallelism) -> None:
  validation.check_int_at_least("--time_min", time_min, 1)
  validation.check_int_at_least("--cpus_per_run", cpus_per_run, 1)
  validation.check_int_at_least("--gpus_per_run", gpus_per_run, 0)
  validation.check_int_at_least("--max_requeue", max_requeue, 0)
  if mem_gb is not None:
    validation.check_positive("--mem_gb", mem_gb)
  if array_parallelism is not None:
    validation.check_int_at_least("--array_parallelism", array_parallelism, 1)


def _check_slurm(partition: Optional[str]) -> None:
  """sbatch, srun and sinfo are here, the controller answers, the partition exists."""
  missing = [c for c in ("sbatch", "srun", "sinfo", "squeue", "scontrol")
             if shutil.which(c) is None]
  if missing:
    raise ConfigError(f"`--executor slurm` needs SLURM's commands on PATH, and "
                      f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                      f"not there: {SETUP_HINT}.")
  try:
    result = subprocess.run(["sinfo", "--noheader", "--format=%P"], capture_output=True,
                            text=True, timeout=60, check=False)
  except subprocess.TimeoutExpired:
    raise ConfigError("`--executor slurm`: sinfo did not answer within 60 s (is "
                      "slurmctld up?).") from None
  if result.returncode != 0:
    raise ConfigError(f"`--executor slurm`: sinfo failed ({result.stderr.strip()}); "
                      f"{SETUP_HINT}.")
  partitions = [p.rstrip("*") for p in result.stdout.split()]
  if partition is not None and partition not in partitions:
    raise ConfigError(f"--partition {partition!r} is not a partition of this cluster; "
                      f"sinfo lists {', '.join(partitions) or 'none'}.")


def signal_delay_s(time_min: int) -> int:
  """Seconds before the time limit at which SLURM sends SIGUSR2: 2 minutes, at most a
  quarter of the limit (SLURM may send it up to a minute early)."""
  return max(5, min(120, time_min * 60 // 4))


def _executor(study_dir: str, name: str, partition, time_min, cpus_per_run,
              gpus_per_run, mem_gb, max_requeue, sbatch, array_parallelism):
  import submitit  # pylint: disable=g-import-not-at-top
  folder = os.path.join(os.path.abspath(study_dir), ".submitit", "%j")
  executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeue)
  additional = {"requeue": True}  # requeueable where the cluster's JobRequeue=0
  additional.update(sbatch)
  parameters = dict(
      job_name=f"batch_rl:{name}", time=time_min, cpus_per_task=cpus_per_run,
      signal_delay_s=signal_delay_s(time_min), additional_parameters=additional,
      # The job imports batch_rl from this checkout, installed or not.
      setup=[f"export PYTHONPATH={shlex.quote(run_lib.REPO_ROOT)}"
             "${PYTHONPATH:+:$PYTHONPATH}"])
  if partition is not None:
    parameters["partition"] = partition
  if gpus_per_run:
    parameters["gpus_per_node"] = gpus_per_run
  if mem_gb is not None:
    parameters["mem"] = f"{max(1, int(round(float(mem_gb) * 1024)))}M"
  if array_parallelism is not None:
    parameters["array_parallelism"] = array_parallelism
  executor.update_parameters(**parameters)
  return executor


def _array_id(job_id: str) -> str:
  return job_id.split("_", 1)[0]


def _active_job_ids(array_ids: Sequence[str]) -> Optional[set[str]]:
  """Ids ('12_3', or '12' for one job) of the jobs squeue lists as not ended; None
  when squeue fails (a controller restarting)."""
  try:
    result = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs",
         ",".join(array_ids)], capture_output=True, text=True, timeout=60, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  if result.returncode != 0:
    # An id that SLURM has forgotten (MinJobAge after the end) is an error too.
    return set() if "Invalid job id" in result.stderr else None
  active = set()
  for line in result.stdout.splitlines():
    job_id, _, state = line.strip().partition("|")
    if state.strip() in _ACTIVE_STATES:
      active.add(job_id)
  return active


def _run_state(run: run_lib.Run) -> tuple[str, int]:
  status = files.read_json(job.status_path(run.run_dir)) or {}
  return status.get("state", run_lib.PENDING), int(status.get("attempt") or 0)


def wait_for(runs: Sequence[run_lib.Run], job_ids: Sequence[str]) -> dict[str, int]:
  """Blocks until every job has left the queue, printing each run's state changes;
  returns {state: count} of the runs. Ctrl-C stops the waiting, not the jobs ({})."""
  array_ids = sorted({_array_id(j) for j in job_ids})
  start = time.monotonic()
  seen: dict[str, tuple[str, int]] = {}
  try:
    while True:
      active = _active_job_ids(array_ids)
      for run in runs:
        state = _run_state(run)
        if seen.get(run.name) != state:
          seen[run.name] = state
          elapsed = int(time.monotonic() - start)
          print(f"[{elapsed // 60}:{elapsed % 60:02d}] {run.name}: {state[0]}"
                + (f" (attempt {state[1]})" if state[1] else ""), flush=True)
      if active is not None and not active:
        break
      time.sleep(POLL_S)
  except KeyboardInterrupt:
    print(f"\nStopped waiting; the jobs go on (scancel {' '.join(array_ids)} stops "
          "them).", flush=True)
    return {}
  counts: dict[str, int] = {}
  for run in runs:
    state = _run_state(run)[0]
    counts[state] = counts.get(state, 0) + 1
  print("All jobs ended: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        flush=True)
  return counts


def launch(runs: list[run_lib.Run], study_dir: str, partition: Optional[str] = None,
           time_min: int = 60, gpus_per_run: int = 0, cpus_per_run: int = 1,
           mem_gb: Optional[float] = None, max_requeue: int = 3,
           sbatch=(), array_parallelism: Optional[int] = None, wait: bool = False,
           **rest) -> dict[str, int]:
  """Submits the runs as one SLURM job array; prints the job ids.

  sbatch: extra sbatch options, "KEY=VALUE" strings or a {KEY: VALUE} mapping.
  Returns {} once submitted, or with `wait` {state: count} of the runs once every job
  has ended. Raises ConfigError, having submitted nothing, when SLURM is missing, the
  partition does not exist or an option is wrong.
  """
  executors.reject_unknown_options("slurm", rest, OPTIONS, OTHER_OPTIONS)
  _check_numbers(time_min, cpus_per_run, gpus_per_run, mem_gb, max_requeue,
                 array_parallelism)
  extra = parse_sbatch(sbatch or ())
  _check_slurm(partition)
  if not runs:
    print("No runs to submit.")
    return {}
  name = os.path.basename(os.path.normpath(os.path.abspath(study_dir)))
  executor = _executor(study_dir, name, partition, time_min, cpus_per_run, gpus_per_run,
                       mem_gb, max_requeue, extra, array_parallelism)
  task = RunTask(threads=cpus_per_run, max_requeue=max_requeue)
  jobs = executor.map_array(task, list(runs))
  job_ids = [j.job_id for j in jobs]
  for run, job_id in zip(runs, job_ids):
    _mark_queued(run, job_id)
  _print_submitted(runs, job_ids, study_dir, partition, time_min, cpus_per_run,
                   gpus_per_run)
  if not wait:
    return {}
  return wait_for(runs, job_ids)


def _mark_queued(run: run_lib.Run, job_id: str) -> None:
  """Records that the run waits in SLURM's queue as `job_id`, unless its job has
  already started (then run_one's status stands); a relaunch skips it meanwhile."""
  path = job.status_path(run.run_dir)
  status = files.read_json(path) or {}
  if status.get("state") in (run_lib.RUNNING, run_lib.DONE):
    return
  files.write_json(path, {**status, "state": run_lib.QUEUED, "job_id": job_id,
                          "queued": job.now()})


def queued_in_slurm(job_id: str) -> Optional[bool]:
  """Whether SLURM still lists `job_id` as not ended; None when squeue does not answer."""
  if shutil.which("squeue") is None:
    return None
  active = _active_job_ids([_array_id(job_id)])
  return None if active is None else job_id in active


def _print_submitted(runs, job_ids, study_dir, partition, time_min, cpus_per_run,
                     gpus_per_run) -> None:
  array_ids = sorted({_array_id(j) for j in job_ids})
  what = (f"array job {array_ids[0]}" if len(job_ids) > 1
          else f"job {job_ids[0]}")
  resources = f"{cpus_per_run} CPU" + ("s" if cpus_per_run > 1 else "")
  if gpus_per_run:
    resources += f", {gpus_per_run} GPU" + ("s" if gpus_per_run > 1 else "")
  print(f"Submitted {len(runs)} run(s) to SLURM as {what} (partition "
        f"{partition or 'default'}, {time_min} min per attempt, {resources} each):")
  for run, job_id in zip(runs, job_ids):
    print(f"  {job_id:>12}  {run.name}")
  print(f"Follow them with: python -m batch_rl.study status {study_dir}\n"
        f"  (squeue --jobs {','.join(array_ids)}; submitit's logs are in "
        f"{os.path.join(study_dir, '.submitit')})", flush=True)

"""The SLURM executor on a real cluster: preempted runs resume to the same scalars.

The study (conftest.CLUSTER_STUDY: 4 gridworld runs of 8 checkpointed calls) is
launched with `python -m batch_rl.study launch ... --executor slurm --wait`. An
array task in the middle of its training is requeued the way SLURM preempts
(`scontrol requeue`: SIGTERM, the job back to pending); later another gets the time
limit's warning (`scancel --signal=USR2`, which submitit answers by calling
RunTask.checkpoint and requeueing). The USR2 waits until no task of the array is
pending in the array's own record: before that, SLURM 22.05 delivers a signal to a
task but answers "Job can not be altered now, try again later", and scancel keeps
sending it (to the task requeued meanwhile too) until those tasks have started.
Every run must end done, the two with a second attempt, and every run's TensorBoard
scalars must equal, value for value and step for step, those of the same study
launched locally without interruption.

Without SLURM (`sinfo` missing or failing) these tests are skipped, or fail under
CI=true (.ci/run starts the one-node cluster of scripts/local_slurm.sh). The checks of
bad input need no cluster.
"""
import glob
import os
import shutil
import subprocess
import sys
import time

import pytest

from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import run as run_lib
from batch_rl.study.executors import slurm
from batch_rl.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_TIMEOUT_S = 480


def _slurm_missing():
  """Why no SLURM cluster answers here, or None."""
  if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
    return "SLURM is not installed (no sinfo/sbatch; sudo scripts/local_slurm.sh start)"
  try:
    result = subprocess.run(["sinfo", "--noheader"], capture_output=True, text=True,
                            timeout=30, check=False)
  except subprocess.TimeoutExpired:
    return "sinfo did not answer within 30 s"
  if result.returncode != 0 or not result.stdout.strip():
    last = (result.stderr.strip().splitlines() or ["no partitions"])[-1]
    return f"no SLURM cluster answers (sinfo: {last})"
  return None


@pytest.fixture
def slurm_cluster(cluster_study):
  reason = _slurm_missing()
  if reason:
    cluster_study.unavailable(reason)


def _status(run_dir):
  return files.read_json(job.status_path(run_dir)) or {}


def _squeue(*args):
  return subprocess.run(["squeue", "--noheader", *args], capture_output=True, text=True,
                        timeout=60, check=False).stdout.split()


def _signallable(job_id):
  """Whether `scancel --signal` reaches array task job_id at once: neither the task
  nor a pending one is held in the array's own record (id = the array's id)."""
  array = job_id.split("_")[0]
  return (array not in _squeue("--format=%A", "--jobs", job_id)
          and array not in _squeue("--format=%A", "--states=PENDING", "--jobs", array))


def _wait_mid_run(study, run_dirs, taken, deadline, usable=lambda job_id: True):
  """The first run dir (not in `taken`) whose job is running between two of its
  checkpoints with at least two calls to go and is `usable`; its job id."""
  while time.monotonic() < deadline:
    for run_dir in run_dirs:
      if run_dir in taken:
        continue
      status = _status(run_dir)
      done = study.checkpointed_iteration(run_dir)
      if status.get("state") == run_lib.RUNNING and status.get("job_id") \
          and 0 <= done <= study.iterations - 3:
        if usable(status["job_id"]):
          return run_dir, status["job_id"]
    time.sleep(0.1)
  raise AssertionError("no run reached the middle of its training in time")


def _wait_requeued(job_id, deadline):
  """Waits until the job is back in the queue (pending: its processes have ended)."""
  while time.monotonic() < deadline:
    state = subprocess.run(["squeue", "--noheader", "--format=%T", "--jobs", job_id],
                           capture_output=True, text=True, timeout=60,
                           check=False).stdout.strip()
    if state == "PENDING":
      return
    time.sleep(0.2)
  raise AssertionError(f"job {job_id} was not requeued in time")


def _scancel_all(run_dirs):
  ids = {(_status(d).get("job_id") or "").split("_")[0] for d in run_dirs}
  ids.discard("")
  if ids:
    subprocess.run(["scancel", *sorted(ids)], check=False, timeout=30)


@pytest.mark.cluster
def test_preempted_and_timed_out_jobs_resume_to_the_uninterrupted_scalars(
    slurm_cluster, cluster_study, tmp_path):
  del slurm_cluster
  study_dir = tmp_path / "slurm_study"
  run_dirs = [str(study_dir / name) for name in cluster_study.run_names]
  log_path = tmp_path / "launch.log"
  start = time.monotonic()
  with open(log_path, "w") as log:
    launcher = subprocess.Popen(
        [sys.executable, "-m", "batch_rl.study", "launch", cluster_study.toml,
         "--study_dir", str(study_dir), "--executor", "slurm", "--wait",
         "--time_min", "15", "--cpus_per_run", "1", "--max_requeue", "2"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = start + 300
    requeued, requeued_id = _wait_mid_run(cluster_study, run_dirs, (), deadline)
    subprocess.run(["scontrol", "requeue", requeued_id], check=True, timeout=60)
    _wait_requeued(requeued_id, deadline)
    warned, warned_id = _wait_mid_run(cluster_study, run_dirs, (requeued,), deadline,
                                      usable=_signallable)
    subprocess.run(["scancel", "--signal=USR2", warned_id], check=True, timeout=60)
    reference = cluster_study.reference()
    launcher.wait(timeout=max(10, LAUNCH_TIMEOUT_S - (time.monotonic() - start)))
  finally:
    if launcher.poll() is None:
      launcher.kill()
      _scancel_all(run_dirs)
  output = log_path.read_text()
  assert launcher.returncode == 0, output
  assert "All jobs ended: 4 done" in output, output

  for name, run_dir in zip(cluster_study.run_names, run_dirs):
    status = _status(run_dir)
    assert status["state"] == run_lib.DONE, (name, status, output)
    attempts = sorted(glob.glob(os.path.join(run_dir, "logs", "attempt_*.log")))
    if run_dir in (requeued, warned):
      assert status["attempt"] >= 2 and len(attempts) >= 2, (name, status)
    scalars = cluster_study.scalars(run_dir)
    assert scalars, name
    twice = {k: v for k, v in scalars.items() if len(v) != 1}
    assert not twice, (name, "steps logged more than once", sorted(twice)[:5])
    assert sorted(scalars) == sorted(reference[name]), (name, "different steps")
    different = [k for k in scalars if scalars[k] != reference[name][k]]
    assert not different, (name, different[:5])
  # The USR2 job was requeued by submitit (RunTask.checkpoint, scontrol requeue); the
  # requeued one by SLURM, its task exiting without a result.
  warned_log = _submitit_log(study_dir, warned)
  assert "Calling checkpoint method" in warned_log, warned_log[-3000:]
  assert f"Requeued job {warned_id}" in warned_log, warned_log[-3000:]
  requeued_log = _submitit_log(study_dir, requeued)
  assert "SLURM is ending job" in requeued_log, requeued_log[-3000:]
  assert "Calling checkpoint method" not in requeued_log, requeued_log[-3000:]


def _submitit_log(study_dir, run_dir):
  """stdout and stderr of all attempts of the run's array task."""
  folder = os.path.join(study_dir, ".submitit", _status(run_dir)["job_id"])
  return "".join(open(p).read() for p in sorted(glob.glob(os.path.join(folder, "*_log.*"))))


def test_no_sbatch_is_a_config_error_and_submits_nothing(tmp_path, monkeypatch):
  empty = tmp_path / "bin"
  empty.mkdir()
  monkeypatch.setenv("PATH", str(empty))
  run = run_lib.Run(name="r", run_dir=str(tmp_path / "study" / "r"),
                    gin_files=("gin_configs/gridworld/fqi_t10.gin",), bindings=())
  with pytest.raises(ConfigError, match="--executor slurm.*sbatch.*local_slurm.sh"):
    slurm.launch([run], str(tmp_path / "study"))
  assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("entry", ["account", "=x", "two words=1", "--=3"])
def test_bad_sbatch_entry_is_named(entry, tmp_path):
  with pytest.raises(ConfigError, match=f"--sbatch {entry!r}".replace("[", r"\[")):
    slurm.launch([], str(tmp_path), sbatch=[entry])


def test_sbatch_entries_parse():
  assert slurm.parse_sbatch(["account=lab", "--qos=low", "mail_type=END"]) == {
      "account": "lab", "qos": "low", "mail-type": "END"}
  assert slurm.parse_sbatch({"constraint": "a100"}) == {"constraint": "a100"}


def test_unknown_option_is_refused(tmp_path):
  with pytest.raises(ConfigError, match="--partiton"):
    slurm.launch([], str(tmp_path), partiton="gpu")
  # Another executor's option is ignored.
  with pytest.raises(ConfigError, match="--time_min"):
    slurm.launch([], str(tmp_path), ray_address="x:1", time_min=0)


@pytest.mark.cluster
def test_unknown_partition_is_a_config_error(slurm_cluster, tmp_path):
  del slurm_cluster
  with pytest.raises(ConfigError, match="--partition 'no_such_partition'"):
    slurm.launch([], str(tmp_path), partition="no_such_partition")

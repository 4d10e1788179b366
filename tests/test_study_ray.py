"""The Ray executor on a local Ray instance: killed runs resume to the same scalars.

The study (conftest.CLUSTER_STUDY: 4 gridworld runs of 6 checkpointed calls) is
launched through batch_rl.study.launch with --executor ray on `ray.init(num_cpus=2)`.
While two runs are between two checkpoints, one's train.py gets SIGKILL and the
other's SIGTERM (the pids come from their status files). Both must be resubmitted and
end done, and every run's TensorBoard scalars must equal, value for value and step
for step, those of the same study launched locally without interruption. Ray is shut
down at the end.

Without Ray installed the cluster test is skipped, or fails under CI=true.
"""
import logging
import os
import signal
import socket
import threading
import time

import pytest

from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import launch as launch_lib
from batch_rl.study import run as run_lib
from batch_rl.study.executors import ray_tasks
from batch_rl.validation import ConfigError


@pytest.fixture
def ray_module(cluster_study):
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError:
    cluster_study.unavailable("Ray is not installed (pip install -e '.[cluster]')")
  return ray


@pytest.fixture
def local_ray(ray_module):
  """A 2-CPU Ray instance in this process, shut down after the test."""
  ray_module.init(address="local", num_cpus=2, include_dashboard=False,
                  log_to_driver=False, logging_level=logging.WARNING)
  yield ray_module
  ray_module.shutdown()
  assert not ray_module.is_initialized()


def _status(run_dir):
  return files.read_json(job.status_path(run_dir)) or {}


class _Killer(threading.Thread):
  """Kills the train.py of two runs in the middle of their training (SIGKILL, then
  SIGTERM), then computes the study's local reference while Ray finishes."""

  def __init__(self, study, run_dirs, deadline):
    super().__init__(daemon=True)
    self.study, self.run_dirs, self.deadline = study, run_dirs, deadline
    self.killed = {}   # run dir -> signal
    self.reference = None
    self.error = None

  def _mid_run(self):
    while time.monotonic() < self.deadline:
      for run_dir in self.run_dirs:
        if run_dir in self.killed:
          continue
        status = _status(run_dir)
        done = self.study.checkpointed_iteration(run_dir)
        if (status.get("state") == run_lib.RUNNING and status.get("train_pid")
            and status.get("attempt") == 1 and 0 <= done <= self.study.iterations - 3):
          return run_dir, status["train_pid"]
      time.sleep(0.1)
    raise AssertionError("no run reached the middle of its training in time")

  def run(self):
    try:
      for sig in (signal.SIGKILL, signal.SIGTERM):
        run_dir, pid = self._mid_run()
        os.kill(pid, sig)
        self.killed[run_dir] = sig
      self.reference = self.study.reference()
    except BaseException as e:  # pylint: disable=broad-except  (reported by the test)
      self.error = e


@pytest.mark.cluster
def test_killed_runs_are_resubmitted_and_resume_to_the_uninterrupted_scalars(
    local_ray, cluster_study, tmp_path, capsys):
  del local_ray
  study_dir = tmp_path / "ray_study"
  run_dirs = [str(study_dir / name) for name in cluster_study.run_names]
  killer = _Killer(cluster_study, run_dirs, time.monotonic() + 240)
  killer.start()
  result = launch_lib.launch(cluster_study.toml, str(study_dir), "ray",
                             cpus_per_run=1, max_requeue=2)
  killer.join(timeout=600)
  output = capsys.readouterr().out
  assert killer.error is None, killer.error
  assert len(killer.killed) == 2
  assert result.summary == {run_lib.DONE: 4}, output
  assert output.count("resubmitted (1/2)") == 2, output

  for name, run_dir in zip(cluster_study.run_names, run_dirs):
    status = _status(run_dir)
    assert status["state"] == run_lib.DONE, (name, status)
    assert status["job_id"].startswith("ray:"), status
    if run_dir in killer.killed:
      assert status["attempt"] == 2, (name, status)
    scalars = cluster_study.scalars(run_dir)
    reference = killer.reference[name]
    twice = {k: v for k, v in scalars.items() if len(v) != 1}
    assert not twice, (name, "steps logged more than once", sorted(twice)[:5])
    assert sorted(scalars) == sorted(reference), (name, "different steps")
    different = [k for k in scalars if scalars[k] != reference[k]]
    assert not different, (name, different[:5])


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("form", ["{}", "ray://{}"])
def test_address_where_nothing_listens_is_a_config_error(form, tmp_path):
  address = form.format(f"127.0.0.1:{_closed_port()}")
  run = run_lib.Run(name="r", run_dir=str(tmp_path / "r"),
                    gin_files=("gin_configs/gridworld/fqi_t10.gin",), bindings=())
  start = time.monotonic()
  with pytest.raises(ConfigError, match="--ray_address=.*nothing answers"):
    ray_tasks.launch([run], str(tmp_path), ray_address=address)
  assert time.monotonic() - start < 10
  assert not (tmp_path / "r").exists()


def test_malformed_address_and_unknown_option_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match="--ray_address=no_port_here:x"):
    ray_tasks.launch([], str(tmp_path), ray_address="no_port_here:x")
  with pytest.raises(ConfigError, match="--max_paralel"):
    ray_tasks.launch([], str(tmp_path), max_paralel=2)
  assert ray_tasks.launch([], str(tmp_path), partition="ignored") == {}


@pytest.mark.cluster
def test_own_local_instance_is_shut_down(ray_module):
  assert not ray_module.is_initialized()
  with ray_tasks._RaySession(None) as session:  # pylint: disable=protected-access
    assert session.owned and ray_module.is_initialized()
    assert ray_module.cluster_resources()["CPU"] == os.cpu_count()
  assert not ray_module.is_initialized()

"""A run waiting in SLURM's queue is not submitted twice by a relaunch."""
import os

from batch_rl.study import files
from batch_rl.study import job
from batch_rl.study import launch
from batch_rl.study import run as run_lib
from batch_rl.study import spec
from batch_rl.study.executors import slurm

STUDY = """
gin_files = ["gin_configs/gridworld/fqi_t10.gin"]
[seeds]
binding = "GridworldRunner.seeds"
values = [[0], [1]]
"""


def planned(tmp_path):
  path = tmp_path / "s.toml"
  path.write_text(STUDY)
  return launch.plan(spec.load(str(path), check=False), str(tmp_path / "study"))


def test_a_queued_run_is_skipped_while_slurm_lists_its_job(tmp_path, monkeypatch):
  runs = planned(tmp_path).runs
  for run, job_id in zip(runs, ["41_0", "41_1"]):
    os.makedirs(run.run_dir)
    slurm._mark_queued(run, job_id)  # pylint: disable=protected-access
    assert files.read_json(job.status_path(run.run_dir))["state"] == run_lib.QUEUED
  monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
  monkeypatch.setattr(slurm, "_active_job_ids", lambda ids: {"41_0"})
  actions = planned(tmp_path).actions
  assert actions[runs[0].name] == "skip: queued in SLURM as job 41_0"
  assert actions[runs[1].name] == launch.LAUNCH  # its job left the queue without starting
  monkeypatch.setattr(slurm, "_active_job_ids", lambda ids: None)  # squeue not answering
  assert planned(tmp_path).actions[runs[1].name].startswith("skip: queued as job 41_1")


def test_marking_queued_leaves_a_started_run_alone(tmp_path):
  run = planned(tmp_path).runs[0]
  os.makedirs(run.run_dir)
  files.write_json(job.status_path(run.run_dir), {"state": run_lib.RUNNING, "pid": 7})
  slurm._mark_queued(run, "41_0")  # pylint: disable=protected-access
  assert files.read_json(job.status_path(run.run_dir)) == {"state": run_lib.RUNNING,
                                                           "pid": 7}

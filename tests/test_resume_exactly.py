"""A run stopped anywhere and rerun logs exactly the scalars of an uninterrupted run.

Online runs (uniform and prioritized replay, forked tandem across the fork) and offline
runs are stopped in-process at chosen points (a stand-in for the signal flag), and one
online run is stopped by real signals in a subprocess: SIGTERM (graceful, exit 3),
then kill -9 (no chance to checkpoint), then run to the end.
"""
import os
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import summary_writer
from batch_rl.runners import registry
from batch_rl.runners import stop_signal
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_TAGS = ("Train/StepsPerSecond",)  # wall-clock, not a result


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


class StopAfterChecks(stop_signal.GracefulStop):
  """A stop flag that turns on after the runner has looked at it `n` times (the runner
  looks once per environment step, train call and evaluation step)."""

  def __init__(self, n: int):
    super().__init__()
    self._checks_left = n

  @property
  def requested(self):
    self._checks_left -= 1
    return "SIGTERM" if self._checks_left < 0 else None

  @requested.setter
  def requested(self, value):
    del value


def online_bindings(**overrides):
  settings = dict(training_steps=150, num_iterations=2, evaluation_steps=40,
                  min_replay_history=40, replay_capacity=400, updates_per_step=0.5,
                  target_update_env_steps=20, diagnostics_batch_size=32, seed=3)
  settings.update(overrides)
  return [f"OnlineRunner.{k} = {v!r}" for k, v in settings.items()] + [
      "DQNAgent.batch_size = 8", "MinAtarEnvironment.minimal_action_set = True"]


def make(base_dir, gin_file, bindings):
  gin.clear_config()
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", *gin_file.split("/"))], bindings)
  return registry.create_runner(base_dir=str(base_dir))


def scalars(base_dir):
  read = summary_writer.read_scalars(str(base_dir))
  return {tag: values for tag, values in read.items()
          if tag not in TIMING_TAGS and not tag.startswith("Time/")}


def assert_same_run(resumed, reference):
  got, want = scalars(resumed), scalars(reference)
  assert sorted(got) == sorted(want)
  for tag in want:  # every step once, the same value (NaN where the reference has NaN)
    assert sorted(got[tag]) == sorted(want[tag]), tag
    for step in want[tag]:
      np.testing.assert_array_equal(got[tag][step], want[tag][step], err_msg=tag)


def run_with_stops(base_dir, gin_file, bindings, stops):
  """Runs, stopping after each number of flag checks in `stops`; then to the end."""
  for n in stops:
    runner = make(base_dir, gin_file, bindings)
    runner._stop = StopAfterChecks(n)  # pylint: disable=protected-access
    with pytest.raises(stop_signal.Preempted):
      runner.run()
    assert all(checkpointing.list_partial(os.path.join(directory, "checkpoints"))
               for directory in runner.run_dirs)
  make(base_dir, gin_file, bindings).run()


@pytest.mark.parametrize("name, extra, stops", [
    # mid-iteration 1; then inside iteration 2's evaluation (150 steps + 10 eval steps)
    ("uniform", {}, [70, 160]),
    ("prioritized", {"prioritized_replay": True}, [100]),
    # the fork is at step 200: the first stop falls before it, the second after it
    ("forked", {"tandem": "forked", "fork_step": 200}, [60, 60]),
])
def test_online_run_resumes_exactly(tmp_path, name, extra, stops):
  del name
  gin_file, bindings = "online/minatar_dqn.gin", online_bindings(**extra)
  make(tmp_path / "reference", gin_file, bindings).run()
  run_with_stops(tmp_path / "stopped", gin_file, bindings, stops)
  assert_same_run(tmp_path / "stopped", tmp_path / "reference")


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_offline_run_resumes_exactly_mid_iteration_and_mid_evaluation(tmp_path, num_seeds):
  bindings = ["FixedReplayRunner.num_iterations = 2", "FixedReplayRunner.training_steps = 60",
              "FixedReplayRunner.evaluation_steps = 50",
              "FixedReplayRunner.diagnostics_batch_size = 64",
              f"FixedReplayRunner.num_seeds = {num_seeds}"]
  make(tmp_path / "reference", "quickstart.gin", bindings).run()
  # 25 train calls into iteration 1; then 60 calls + 10 evaluation steps into iteration 2.
  run_with_stops(tmp_path / "stopped", "quickstart.gin", bindings, [25, 70])
  seed_dirs = [""] if num_seeds == 1 else ["seed_0", "seed_1"]
  for seed_dir in seed_dirs:
    assert_same_run(tmp_path / "stopped" / seed_dir, tmp_path / "reference" / seed_dir)


def _wait_for(predicate, what, timeout=600):
  end = time.time() + timeout
  while not predicate():
    assert time.time() < end, f"timed out waiting for {what}"
    time.sleep(0.2)


def test_online_run_stopped_by_sigterm_and_killed_resumes_exactly(tmp_path):
  bindings = online_bindings(training_steps=1200, num_iterations=2, evaluation_steps=200)
  make(tmp_path / "reference", "online/minatar_dqn.gin", bindings).run()
  base = tmp_path / "signalled"
  command = [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base}",
             "--gin_files=gin_configs/online/minatar_dqn.gin"] + [
                 f"--gin_bindings={b}" for b in bindings]
  env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
  log = tmp_path / "log.txt"

  def start():
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)

  checkpoints = os.path.join(base, "checkpoints")
  first = start()  # SIGTERM once iteration 1 is checkpointed: it stops inside iteration 2
  _wait_for(lambda: checkpointing.list_iterations(checkpoints) or first.poll() is not None,
            "the first checkpoint")
  first.send_signal(signal.SIGTERM)
  assert first.wait(timeout=helpers.SUBPROCESS_TIMEOUT) == 3, log.read_text()[-2000:]
  assert "Stopped on SIGTERM" in log.read_text()
  assert checkpointing.list_partial(checkpoints) == [1]
  second = start()  # kill -9 once it has resumed: nothing is checkpointed
  _wait_for(lambda: "Resuming" in log.read_text() or second.poll() is not None, "resuming")
  time.sleep(1.0)
  second.kill()
  second.wait(timeout=60)
  third = start()
  assert third.wait(timeout=helpers.SUBPROCESS_TIMEOUT) == 0, log.read_text()[-2000:]
  assert checkpointing.list_partial(checkpoints) == []
  assert_same_run(base, tmp_path / "reference")


def test_a_sigterm_during_start_up_exits_3_with_nothing_written(tmp_path):
  base = tmp_path / "early"
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base}",
       "--gin_files=gin_configs/online/minatar_dqn.gin"] + [
           f"--gin_bindings={b}" for b in online_bindings()], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  time.sleep(3.0)  # importing JAX and TensorFlow, well before the first jitted call
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=helpers.SUBPROCESS_TIMEOUT)
  assert proc.returncode == 3, output[-2000:]
  # Stopped at once, or (had an import swallowed the exception) at the first safe point.
  assert "before training started" in output or "Stopped on SIGTERM in iteration 1" in output
  assert not checkpointing.list_iterations(str(base / "checkpoints"))


def sac_bindings(**overrides):
  settings = dict(training_steps=60, num_iterations=2, evaluation_steps=1, num_eval_envs=2,
                  min_replay_history=20, replay_capacity=200, diagnostics_batch_size=32,
                  seed=1)
  settings.update(overrides)
  return [f"OnlineRunner.{k} = {v!r}" for k, v in settings.items()] + [
      "SACAgent.batch_size = 16", "TwinCriticNetwork.hidden_sizes = (32, 32)",
      "GaussianPolicyNetwork.hidden_sizes = (32,)",
      "MujocoEnvironment.max_episode_steps = 25"]


def test_online_sac_on_mujoco_resumes_exactly(tmp_path):
  # Mid-iteration 1 (the MuJoCo state, the policy, critics, temperature and Polyak
  # target are checkpointed); then inside iteration 2's evaluation.
  gin_file, bindings = "mujoco/sac.gin", sac_bindings()
  make(tmp_path / "reference", gin_file, bindings).run()
  run_with_stops(tmp_path / "stopped", gin_file, bindings, [37, 70])
  assert_same_run(tmp_path / "stopped", tmp_path / "reference")

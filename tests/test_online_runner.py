"""Online DQN: the update schedule, epsilon, tags, the logged dataset, bad input."""
import math
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
from dopamine.tf.replay_memory import circular_replay_buffer

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl.runners import common, offline, online, registry
from batch_rl import summary_writer
from batch_rl.datasets import dqn_replay_format as fmt
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


@pytest.mark.parametrize("n", [0.25, 0.5, 1, 1.5, 8])
def test_updates_per_step_schedule(n):
  counts = [online.updates_at_step(t, n) for t in range(1000)]
  assert sum(counts) == math.floor(n * 1000)
  if n == 0.25:  # Dopamine's update_period 4: one update every 4th step
    assert np.flatnonzero(counts).tolist() == list(range(3, 1000, 4))
  if n >= 1 and float(n).is_integer():
    assert set(counts) == {n}
  if n == 1.5:
    assert set(counts) == {1, 2}


def test_epsilon_schedule_hand_worked():
  # Dopamine's linearly_decaying_epsilon(decay_period=100, step, warmup_steps=10, 0.01).
  eps = lambda step: online.linearly_decaying_epsilon(100, step, 10, 0.01)
  assert eps(0) == eps(10) == 1.0               # warmup: bonus clipped to 1 - 0.01
  assert eps(60) == pytest.approx(0.01 + 0.99 * 0.5)
  assert eps(85) == pytest.approx(0.01 + 0.99 * 0.25)
  assert eps(110) == eps(5000) == pytest.approx(0.01)


def small_bindings(base=(), extra=(), **overrides):
  settings = dict(training_steps=150, num_iterations=2, evaluation_steps=30,
                  min_replay_history=40, replay_capacity=120, updates_per_step=0.5,
                  target_update_env_steps=20, diagnostics_batch_size=32, seed=0)
  settings.update(overrides)
  return list(base) + [f"OnlineRunner.{k} = {v!r}" for k, v in settings.items()] + [
      "DQNAgent.batch_size = 8", "MinAtarEnvironment.minimal_action_set = True"] + list(extra)


def make_runner(base_dir, extra=(), **overrides):
  """The MinAtar online runner at test scale; `extra`: gin bindings applied last."""
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")],
                       small_bindings(extra=extra, **overrides))
  return registry.create_runner(base_dir=str(base_dir))


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("online") / "run"
  runner = make_runner(base, log_dataset=True)
  assert isinstance(runner, online.OnlineRunner)
  runner.run()
  gin.clear_config()
  return base, runner


def test_online_run_logs_tags_and_takes_the_scheduled_updates(logged_run):
  base, runner = logged_run
  scalars = summary_writer.read_scalars(str(base))
  for tag in ("Train/EpisodeReturn", "Train/EnvSteps", "Train/NumEpisodes",
              "Train/GradientSteps", "Train/Loss", "Rank/srank", "Features/dot_next",
              "Eval/AverageReturn", "Train/StepsPerSecond"):
    assert sorted(scalars[tag]) == [0, 1], tag
  assert [scalars["Train/EnvSteps"][i][0] for i in (0, 1)] == [150.0, 300.0]
  # Updates from env step 40 on, n = 0.5: floor(0.5 * 150) - floor(0.5 * 40) after
  # iteration 0, floor(0.5 * 300) - 20 after iteration 1.
  assert [scalars["Train/GradientSteps"][i][0] for i in (0, 1)] == [55.0, 130.0]
  _, state = checkpointing.read_state_dict(str(base / "checkpoints"))
  assert int(checkpointing.agent_state_dict(state)["step"]) == 130
  assert runner.target_update_period == 10  # 20 env steps * 0.5 updates per step
  texts = summary_writer.read_texts(str(base))
  assert texts["Config/environment"] == "minatar:breakout"
  assert "OnlineRunner.updates_per_step" in texts["Config/gin"]
  assert "OnlineRunner.updates_per_step" in (base / "config.gin").read_text()


def test_logged_dataset_is_read_by_dopamine_and_trains_offline(logged_run, tmp_path):
  base, _ = logged_run
  replay_dir = str(base / "replay_logs")
  assert fmt.list_suffixes(replay_dir) == [0, 1]
  ours = fmt.read_shard(replay_dir, 1)
  ref = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=(10, 10, 4), stack_size=1, replay_capacity=120, batch_size=8)
  ref.load(replay_dir, 1)
  assert int(ref.add_count) == ours.info.add_count > 120  # 300 steps + padding: wrapped
  for key in ("observation", "action", "reward", "terminal"):
    np.testing.assert_array_equal(getattr(ours, key), ref._store[key], err_msg=key)
  assert ours.terminal.sum() > 0
  # train.py offline consumes it unchanged.
  config_lib.parse_gin([], [
      f"load_fixed_replay.replay_dir = '{replay_dir}'", "FixedReplayRunner.game = 'breakout'",
      "FixedReplayRunner.domain = 'minatar'", "FixedReplayRunner.num_iterations = 1",
      "FixedReplayRunner.training_steps = 5", "FixedReplayRunner.evaluation_steps = 0",
      "FixedReplayRunner.diagnostics_batch_size = 32",
      "MinAtarEnvironment.minimal_action_set = True",
      "DQNAgent.network = @MinAtarDQNNetwork"])
  metrics = offline.FixedReplayRunner(base_dir=str(tmp_path / "offline")).run()
  assert np.isfinite(metrics["Train/Loss"]) and metrics["Rank/srank"] >= 1


def test_same_seed_same_run(tmp_path):
  a = make_runner(tmp_path / "a", num_iterations=1).run()
  gin.clear_config()
  b = make_runner(tmp_path / "b", num_iterations=1).run()
  for tag in ("Train/Loss", "Train/EpisodeReturn", "Rank/srank", "Eval/AverageReturn"):
    assert a[tag] == b[tag], tag


@pytest.mark.parametrize("overrides,message", [
    (dict(updates_per_step=0), r"`OnlineRunner.updates_per_step` must be > 0 .*got 0"),
    (dict(updates_per_step=-1), r"`OnlineRunner.updates_per_step` must be > 0 .*got -1"),
    (dict(updates_per_step=-0.25), r"`OnlineRunner.updates_per_step` must be > 0"),
    # Smaller than the batch (8).
    (dict(replay_capacity=4), r"`OnlineRunner.replay_capacity` = 4 is smaller than the "
                              r"batch \(8\).*must be >= 8"),
    # At least the batch, but smaller than the frame stack plus the n-step horizon.
    (dict(replay_capacity=8, extra=["DQNAgent.update_horizon = 10"]),
     r"`OnlineRunner.replay_capacity` = 8 .*frame stack plus n-step horizon \(1 \+ 10 "
     r"\+ 1\); it must be >= 12"),
    # Atari's stack of 4 frames: a batch of 2 fits in 5 entries, the stack does not.
    (dict(domain="atari", game="Pong", replay_capacity=5,
          extra=["DQNAgent.batch_size = 2"]),
     r"frame stack plus n-step horizon \(4 \+ 1 \+ 1\); it must be >= 6"),
    (dict(min_replay_history=500), "OnlineRunner.min_replay_history"),
    # Unknown games name the valid ones, MinAtar's and Atari's.
    (dict(game="pong"), r"Unknown MinAtar game 'pong'.*Valid games: asterix, breakout"),
    (dict(domain="atari", game="Breakoutt"),
     r"Unknown Atari game 'Breakoutt'\. Did you mean 'Breakout'.*Valid games .*Pong, "),
    (dict(domain="procgen"), r"Unknown environment 'procgen:breakout'.*'atari', 'minatar'"),
])
def test_bad_input_fails_before_writing(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    make_runner(tmp_path / "never", **overrides)
  assert not (tmp_path / "never").exists()


def test_train_py_reports_bad_input_before_starting(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={tmp_path / 'never'}",
       "--gin_files=gin_configs/online/minatar_dqn.gin",
       "--gin_bindings=OnlineRunner.updates_per_step = 0"],
      cwd=REPO, capture_output=True, text=True, timeout=helpers.SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 2  # input errors exit 2
  # One paragraph: the message (gin's "In call to configurable" context lines removed).
  assert ("error: `OnlineRunner.updates_per_step` must be > 0 (e.g. 0.25, 1, 8), got 0."
          in result.stderr.splitlines())
  assert "Traceback" not in result.stderr
  assert "In call to configurable" not in result.stderr
  assert not (tmp_path / "never").exists()


def test_a_finished_online_run_says_so_and_returns(logged_run):
  base, _ = logged_run
  runner = make_runner(base, log_dataset=True)  # the same settings: the same run
  assert runner.finished and runner.run() == {}


def test_tandem_active_is_the_solo_run_and_the_passive_learns_the_same_batches(tmp_path):
  solo = make_runner(tmp_path / "solo", num_iterations=1).run()
  gin.clear_config()
  runner = make_runner(tmp_path / "tandem", num_iterations=1, tandem="tandem")
  both = runner.run()
  for tag in ("Train/Loss", "Train/QData", "Rank/srank", "Eval/AverageReturn",
              "Train/EpisodeReturn"):
    assert both[tag] == solo[tag], tag  # the passive agent changes nothing for the active
  assert both["Passive/Train/GradientSteps"] == both["Train/GradientSteps"] == 55
  for tag in ("Passive/Train/Loss", "Passive/Rank/srank", "Passive/Eval/AverageReturn",
              "Passive/Features/dot_next"):
    assert np.isfinite(both[tag]), tag
  assert both["Passive/Train/Loss"] != both["Train/Loss"]  # its own initialisation


def test_forked_tandem_freezes_the_active_agent_at_the_fork(tmp_path):
  runner = make_runner(tmp_path / "forked", tandem="forked", fork_step=150)
  runner.run()
  scalars = summary_writer.read_scalars(str(tmp_path / "forked"))
  assert "Passive/Train/GradientSteps" in scalars
  assert sorted(scalars["Passive/Train/GradientSteps"]) == [1]  # forked at iteration 1
  # Active: 55 updates before the fork, none after; passive: a copy (55) + 75 more.
  assert [scalars["Train/GradientSteps"][i][0] for i in (0, 1)] == [55.0, 55.0]
  assert scalars["Passive/Train/GradientSteps"][1][0] == 130.0
  assert np.isfinite(scalars["Passive/Train/Loss"][1][0])


@pytest.mark.parametrize("overrides,message", [
    (dict(tandem="mirror"), "OnlineRunner.tandem"),
    (dict(tandem="tandem", prioritized_replay=True), "uniform replay"),
    (dict(tandem="forked", fork_step=-5), "OnlineRunner.fork_step"),
])
def test_bad_tandem_settings(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    make_runner(tmp_path / "never", **overrides)


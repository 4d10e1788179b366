"""Every shipped gin config builds, and the Atari one runs an iteration end to end."""
import os

import gin
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl import run_experiment
from batch_rl import summary_writer
from batch_rl.replay import dqn_replay_format as fmt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def write_atari_shard(replay_dir, capacity=400, seed=0):
  rng = np.random.default_rng(seed)
  terminal = np.zeros(capacity, np.uint8)
  terminal[[90, 200, 333]] = 1
  fmt.write_shard(replay_dir, 0,
                  observation=rng.integers(0, 255, (capacity, 84, 84), dtype=np.uint8),
                  action=rng.integers(0, 6, capacity).astype(np.int32),
                  reward=rng.choice([-1.0, 0.0, 1.0], capacity).astype(np.float32),
                  terminal=terminal, add_count=capacity)


def test_offline_dqn_gin_runs_an_atari_iteration(tmp_path):
  replay_dir = str(tmp_path / "Pong" / "1" / "replay_logs")
  write_atari_shard(replay_dir)
  config_lib.parse_gin(
      [os.path.join(REPO, "gin_configs", "offline", "dqn.gin")],
      [f"load_fixed_replay.data_root = '{tmp_path}'",  # <root>/<Game>/<run>/replay_logs
       "FixedReplayRunner.num_iterations = 1",
       "FixedReplayRunner.training_steps = 3",
       "FixedReplayRunner.evaluation_steps = 20",
       "FixedReplayRunner.diagnostics_batch_size = 64",
       "AtariEnvironment.max_episode_steps = 25"])
  runner = run_experiment.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  # The papers' defaults reached the objects that use them.
  assert runner.agent.target_update_period == 2000 and runner.agent.batch_size == 32
  assert runner.agent.network.padding == "SAME" and runner.agent.network.hidden_units == 512
  assert runner.replay.state_shape == (84, 84, 4) and runner.eval_epsilon == 0.001
  metrics = runner.run()
  assert 1 <= metrics["Rank/srank"] <= 64  # 64 samples of 512 features
  assert metrics["Eval/NumEpisodes"] == 1  # one 25-step episode covers the budget of 20
  scalars = summary_writer.read_scalars(str(tmp_path / "run"))
  assert list(scalars["Train/Loss"]) == [0]


def test_quickstart_gin_builds(tmp_path, monkeypatch):
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "quickstart.gin")],
                       ["quickstart_dataset.capacity = 2000"])
  runner = run_experiment.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  assert runner.replay.suffixes == (0, 1)
  assert runner.replay.state_shape == (10, 10, 4, 1)
  assert runner.agent.num_actions == 3
  assert not (tmp_path / "run").exists()  # nothing is written before run()

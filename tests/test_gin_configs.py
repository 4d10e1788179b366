"""Every shipped gin config builds, and the Atari one runs an iteration end to end."""
import functools
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl.runners import offline, registry
from batch_rl import summary_writer
from tests import helpers
from batch_rl.datasets import dqn_replay_format as fmt

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


def test_offline_dqn_gin_applies_the_paper_defaults(tmp_path):
  replay_dir = str(tmp_path / "Pong" / "1" / "replay_logs")
  write_atari_shard(replay_dir)
  config_lib.parse_gin(
      [os.path.join(REPO, "gin_configs", "offline", "dqn.gin")],
      [f"load_fixed_replay.data_root = '{tmp_path}'"])  # <root>/<Game>/<run>/replay_logs
  runner = offline.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  assert runner.agent.target_update_period == 2000 and runner.agent.batch_size == 32
  assert runner.agent.network.padding == "SAME" and runner.agent.network.hidden_units == 512
  assert runner.replay.state_shape == (84, 84, 4) and runner._evaluate.epsilon == 0.001
  assert (runner.training_steps, runner.evaluation_steps) == (62_500, 125_000)


def test_offline_dqn_rlu_gin_applies_the_empirical_studys_atari_settings():
  # Gulcehre et al. 2022, Table A.12 (Atari column) and Table 3's target-update control.
  # The preset only rebinds dqn.gin (whose runner the test above builds), so parsing it
  # is enough to check what it binds.
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "offline", "dqn_rlu.gin")], [])
  q = gin.query_parameter
  assert q("DQNAgent.batch_size") == 256 and q("DQNAgent.target_update_period") == 2500
  assert q("NatureDQNNetwork.hidden_units") == 512
  assert q("NatureDQNNetwork.activation") == "relu"
  assert q("FixedReplayRunner.num_iterations") * q("FixedReplayRunner.training_steps") == (
      2_000_000)
  assert q("FixedReplayRunner.diagnostics_batch_size") == 512
  assert q("create_optimizer.learning_rate") == 3e-5 and q("create_optimizer.name") == "adam"
  assert q("DQNAgent.gamma") == 0.99


# Tags each offline config must log beyond the common ones.
OFFLINE_CONFIGS = {
    "dqn.gin": {"Train/TDError"},
    "dqn_lp.gin": {"Train/TDError", "Train/LpPenalty", "Train/TDLoss"},
    "dqn_dr3.gin": {"Train/TDError", "Train/DR3", "Train/TDLoss"},
    "cql_dqn.gin": {"Train/TDError", "Train/CQLLoss", "Train/TDLoss"},
    "cql_qr_dqn.gin": {"Train/TDError", "Train/CQLLoss", "Train/TDLoss"},
    "sarsa.gin": {"Train/TDError"},
    "monte_carlo.gin": {"Train/TDError"},
    "c51.gin": {"Train/TDError"},
    "qr_dqn.gin": {"Train/TDError"},
    "rem.gin": {"Train/TDError"},
    "multi_head_dqn.gin": {"Train/TDError"},
    "bc.gin": {"Train/CrossEntropy", "Train/Accuracy"},
    "fqe.gin": {"Train/TDError"},
    "dqn_curl.gin": {"Train/TDError", "Train/CURLLoss", "Train/TDLoss"},
    "dqn_sam.gin": {"Train/TDError"},
    "dqn_dropout.gin": {"Train/TDError"},
    "dqn_vib.gin": {"Train/TDError", "Train/VIBKL", "Train/TDLoss"},
    "dqn_tanh.gin": {"Train/TDError"},
}


def write_policy_checkpoint(run_dir):
  """A DQN run's checkpoint (untrained Nature network, as narrow as the runs below):
  the policy fqe.gin evaluates."""
  import jax  # pylint: disable=g-import-not-at-top
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import networks  # pylint: disable=g-import-not-at-top
  from batch_rl.agents import dqn  # pylint: disable=g-import-not-at-top
  network = functools.partial(networks.NatureDQNNetwork, hidden_units=NARROW)
  state = dqn.DQNAgent(num_actions=6, network=network).init(jax.random.PRNGKey(1),
                                                            (84, 84, 4))
  checkpointing.save(os.path.join(run_dir, "checkpoints"), 3, state)


# Width of the Nature network's representation layer in these runs.
NARROW = 32

# Offline configs of other domains, trained end to end by their own tests.
OTHER_DOMAIN_CONFIGS = {"cartpole_dqn.gin": "tests/test_float_observations.py"}
# Presets that only rebind dqn.gin's values (the same code path), checked above.
DQN_PRESETS = {"dqn_rlu.gin": "test_offline_dqn_rlu_gin_applies_the_empirical_studys_atari_settings"}


def test_every_offline_config_is_listed():
  on_disk = set(os.listdir(os.path.join(REPO, "gin_configs", "offline")))
  assert on_disk == set(OFFLINE_CONFIGS) | set(OTHER_DOMAIN_CONFIGS) | set(DQN_PRESETS), (
      "add new gin files to OFFLINE_CONFIGS")


@pytest.mark.parametrize("name", sorted(OFFLINE_CONFIGS))
def test_offline_config_trains_an_atari_iteration_through_train_py(tmp_path, name):
  write_atari_shard(str(tmp_path / "data" / "Pong" / "1" / "replay_logs"))
  base = tmp_path / "run"
  bindings = [f"load_fixed_replay.data_root = '{tmp_path / 'data'}'",
              "FixedReplayRunner.num_iterations = 1",
              "FixedReplayRunner.training_steps = 3",
              "FixedReplayRunner.evaluation_steps = 20",
              "FixedReplayRunner.diagnostics_batch_size = 64",
              "AtariEnvironment.max_episode_steps = 25",
              # A narrow representation layer: the same code path, a fraction of the
              # Nature network's 4M parameters to compile, train and diagnose.
              f"NatureDQNNetwork.hidden_units = {NARROW}"]
  if name == "fqe.gin":
    write_policy_checkpoint(str(tmp_path / "policy_run"))
    bindings.append(f"CheckpointPolicy.checkpoint_dir = '{tmp_path / 'policy_run'}'")
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base}",
       f"--gin_files={os.path.join(REPO, 'gin_configs', 'offline', name)}",
       *[f"--gin_bindings={b}" for b in bindings]],
      capture_output=True, text=True, cwd=str(tmp_path),
      timeout=helpers.SUBPROCESS_TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  scalars = summary_writer.read_scalars(str(base))
  expected = {"Train/Loss", "Rank/srank", "Eval/AverageReturn"}
  expected |= OFFLINE_CONFIGS[name]
  assert expected <= set(scalars), expected - set(scalars)
  assert all(np.isfinite(scalars[tag][0][0]) for tag in expected)
  # The configs' 8 environments each start a 25-step episode; 20 steps end the budget
  # before any ends, so each plays exactly one.
  assert scalars["Eval/NumEpisodes"][0] == [8.0]


def test_quickstart_gin_builds(tmp_path, monkeypatch):
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "quickstart.gin")],
                       ["quickstart_dataset.capacity = 2000"])
  runner = offline.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  assert runner.replay.suffixes == (0, 1)
  assert runner.replay.state_shape == (10, 10, 4, 1)
  assert runner.agent.num_actions == 3
  assert not (tmp_path / "run").exists()  # nothing is written before run()

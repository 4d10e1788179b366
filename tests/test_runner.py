"""The Runner end to end: tags per iteration, determinism, resume, bad input.

Runs on a small MinAtar Breakout dataset logged by the project (the quickstart's
logger), with budgets of a few dozen steps so each run takes seconds.
"""
import os
import shutil
import subprocess
import sys

import gin
import pytest

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl.datasets import quickstart
from batch_rl import summary_writer
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_TAGS = {"Eval/AverageReturn", "Eval/NumEpisodes", "Rank/srank", "Rank/sigma_max",
                 "Rank/sigma_min", "Features/norm", "Features/dot_next",
                 "Features/dead_units", "Train/Loss", "Train/TDError", "Train/QData",
                 "Train/StepsPerSecond", "Rank/srank_eig", "Rank/rank_eps", "Rank/rank_rel",
                 "Rank/sigma_q10", "Rank/sigma_q50", "Rank/sigma_q90", "Features/dormant",
                 "Features/cosine_next", "Value/MCReturn", "Value/QMinusMCReturn",
                 "Value/QData", "Value/QMax",
                 "Features/dot_next_backup", "Features/dot_next_data"}


def small_bindings(replay_dir, num_iterations=2, seed=0):
  return [
      f"load_fixed_replay.replay_dir = '{replay_dir}'",
      "FixedReplayRunner.game = 'breakout'",
      "FixedReplayRunner.domain = 'minatar'",
      f"FixedReplayRunner.num_iterations = {num_iterations}",
      "FixedReplayRunner.training_steps = 30",
      "FixedReplayRunner.evaluation_steps = 60",
      "FixedReplayRunner.diagnostics_batch_size = 64",
      f"FixedReplayRunner.seed = {seed}",
      "MinAtarEnvironment.minimal_action_set = True",
      "DQNAgent.network = @MinAtarDQNNetwork",
      "DQNAgent.target_update_period = 10",
  ]


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "breakout" / "1" / "replay_logs")
  quickstart.log_behaviour_policy(path, num_checkpoints=2, capacity=1500, seed=0)
  return path


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def run(base_dir, bindings):
  from batch_rl.runners import offline, registry
  config_lib.parse_gin([], bindings)
  return offline.FixedReplayRunner(base_dir=str(base_dir)).run()


def test_every_iteration_logs_every_tag_once_and_checkpoints(tmp_path, replay_dir):
  run(tmp_path / "run", small_bindings(replay_dir, num_iterations=2))
  scalars = summary_writer.read_scalars(str(tmp_path / "run"))
  assert REQUIRED_TAGS <= set(scalars)
  for tag in REQUIRED_TAGS:
    assert {s: len(v) for s, v in scalars[tag].items()} == {0: 1, 1: 1}, tag
  assert 1 <= scalars["Rank/srank"][0][0] <= 128  # MinAtar network: 128 features
  assert scalars["Rank/sigma_max"][1][0] >= scalars["Rank/sigma_min"][1][0] >= 0
  assert checkpointing.list_iterations(str(tmp_path / "run" / "checkpoints")) == [0, 1]
  config = (tmp_path / "run" / "config.gin").read_text()
  assert "FixedReplayRunner.training_steps = 30" in config
  texts = summary_writer.read_texts(str(tmp_path / "run"))
  assert "FixedReplayRunner.training_steps = 30" in texts["Config/gin"]
  assert texts["Config/environment"] == "minatar:breakout"  # Atari adds its ROM's MD5
  assert "breakout" in texts["Config/data"]


def test_same_seed_same_losses_and_srank(tmp_path, replay_dir):
  run(tmp_path / "a", small_bindings(replay_dir, seed=3))
  run(tmp_path / "b", small_bindings(replay_dir, seed=3))
  run(tmp_path / "c", small_bindings(replay_dir, seed=4))
  a, b, c = (summary_writer.read_scalars(str(tmp_path / x)) for x in "abc")
  for tag in ("Train/Loss", "Train/QData", "Rank/srank", "Rank/sigma_max",
              "Eval/AverageReturn"):
    assert a[tag] == b[tag], tag
  assert a["Train/Loss"] != c["Train/Loss"]


def test_resume_continues_as_if_never_interrupted(tmp_path, replay_dir):
  run(tmp_path / "whole", small_bindings(replay_dir, num_iterations=4))
  # Interrupted run: 2 iterations, then the same command with the full budget.
  run(tmp_path / "resumed", small_bindings(replay_dir, num_iterations=2))
  run(tmp_path / "resumed", small_bindings(replay_dir, num_iterations=4))
  whole = summary_writer.read_scalars(str(tmp_path / "whole"))
  resumed = summary_writer.read_scalars(str(tmp_path / "resumed"))
  for tag in ("Train/Loss", "Rank/srank", "Features/norm", "Eval/AverageReturn"):
    assert resumed[tag] == whole[tag], tag  # same values, each step exactly once


def test_events_past_the_last_checkpoint_are_dropped_on_resume(tmp_path, replay_dir):
  base = tmp_path / "run"
  run(base, small_bindings(replay_dir, num_iterations=3))
  # A run killed after logging iteration 2 but before checkpointing it.
  os.remove(os.path.join(base, "checkpoints", "ckpt_000002.msgpack"))
  run(base, small_bindings(replay_dir, num_iterations=3))
  scalars = summary_writer.read_scalars(str(base))
  assert {s: len(v) for s, v in scalars["Train/Loss"].items()} == {0: 1, 1: 1, 2: 1}


def train_cli(tmp_path, *args):
  env = dict(os.environ, BATCH_RL_CACHE=str(tmp_path / "cache"))
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args],
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=helpers.SUBPROCESS_TIMEOUT)


def bindings_args(bindings):
  return [f"--gin_bindings={b}" for b in bindings]


def test_cli_smoke_prints_progress_and_tensorboard_command(tmp_path, replay_dir):
  base = tmp_path / "cli"
  result = train_cli(tmp_path, f"--base_dir={base}",
                     *bindings_args(small_bindings(replay_dir, num_iterations=1)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "iteration 1/1" in result.stderr and "srank" in result.stderr
  assert "steps/s" in result.stderr and "ETA" in result.stderr
  assert f"tensorboard --logdir {base}" in result.stdout


def corrupt_copy(replay_dir, tmp_path, how):
  bad = tmp_path / "bad" / "replay_logs"
  shutil.copytree(replay_dir, bad)
  if how == "missing_file":
    os.remove(bad / "$store$_reward_ckpt.1.gz")
  elif how == "truncated":
    path = bad / "$store$_observation_ckpt.0.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
  return str(bad)


@pytest.mark.parametrize("case,expected", [
    ("no_dir", "does not exist"),
    ("missing_suffix", "available"),
    ("missing_file", "$store$_reward_ckpt.1.gz"),
    ("truncated", "$store$_observation_ckpt.0.gz"),
    ("unknown_binding", "FixedReplayRunner.not_a_parameter"),
    ("atari_env", "(10, 10, 4)"),
    ("atari_network", "does not fit NatureDQNNetwork"),
    ("dr3_variant", "Unknown DR3 variant 'nope'"),
    ("zero_heads", "MultiHeadDQNAgent.num_heads"),
    ("negative_coefficient", "LpRegularizer.coefficient"),
])
def test_bad_input_fails_before_writing(tmp_path, replay_dir, case, expected):
  bindings = small_bindings(replay_dir, num_iterations=1)
  if case == "no_dir":
    bindings[0] = f"load_fixed_replay.replay_dir = '{tmp_path}/nowhere'"
  elif case == "missing_suffix":
    bindings.append("load_fixed_replay.suffixes = [0, 7]")
  elif case in ("missing_file", "truncated"):
    bindings[0] = f"load_fixed_replay.replay_dir = '{corrupt_copy(replay_dir, tmp_path, case)}'"
  elif case == "unknown_binding":
    bindings.append("FixedReplayRunner.not_a_parameter = 3")
  elif case == "atari_network":
    bindings.append("DQNAgent.network = @NatureDQNNetwork")
  elif case == "dr3_variant":
    bindings += ["DQNAgent.regularizers = [@DR3Regularizer()]",
                 "DR3Regularizer.variant = 'nope'"]
  elif case == "zero_heads":
    bindings += ["FixedReplayRunner.agent_fn = @MultiHeadDQNAgent",
                 "MultiHeadDQNAgent.network = @MinAtarDQNNetwork",
                 "MultiHeadDQNAgent.num_heads = 0"]
  elif case == "negative_coefficient":
    bindings += ["DQNAgent.regularizers = [@LpRegularizer()]",
                 "LpRegularizer.coefficient = -1.0"]
  elif case == "atari_env":
    bindings[1:3] = ["FixedReplayRunner.game = 'Pong'", "FixedReplayRunner.domain = 'atari'"]
  base = tmp_path / "never"
  result = train_cli(tmp_path, f"--base_dir={base}", *bindings_args(bindings))
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  # One message, after any log lines, naming what is wrong (gin may add the
  # configurable it was raised in on the following lines).
  stderr = "\n" + result.stderr
  message = stderr[stderr.index("\nerror: "):]
  assert expected in message, result.stderr[-2000:]
  assert not base.exists()


@pytest.mark.parametrize("backup", ["q_learning", "sarsa"])
def test_diagnostics_match_numpy_on_the_same_batch(tmp_path, replay_dir, backup):
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import offline, registry  # pylint: disable=g-import-not-at-top
  from batch_rl.replay import sampler  # pylint: disable=g-import-not-at-top
  config_lib.parse_gin([], small_bindings(replay_dir) + [f"DQNAgent.backup = '{backup}'"])
  runner = offline.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  agent, data = runner.agent, runner._data  # pylint: disable=protected-access
  params = helpers.random_params(agent, 0, runner.replay.state_shape)
  target = helpers.random_params(agent, 1, runner.replay.state_shape)
  key = jax.random.PRNGKey(7)
  got = jax.device_get(runner._diagnose(params, target, data, key))  # pylint: disable=protected-access
  # The same batch, drawn by the sampler (tested in test_sampler.py) with the same key.
  batch = sampler.sample_transitions(jax.random.split(key)[0], data, 64, stack_size=1,
                                     update_horizon=1, gamma=0.99)
  out = agent.apply(params, batch.state)
  phi = np.asarray(out.representation, np.float64)
  phi_next = np.asarray(agent.apply(params, batch.next_state).representation, np.float64)
  sv = np.linalg.svd(phi, compute_uv=False)
  srank = int(np.argmax(np.cumsum(sv) / sv.sum() >= 0.99)) + 1
  assert got["Rank/srank"] == srank
  np.testing.assert_allclose(got["Rank/sigma_max"], sv[0], rtol=1e-4)
  dots = np.sum(phi * phi_next, axis=1)
  np.testing.assert_allclose(got["Features/dot_next"], dots.mean(), rtol=1e-4)
  action = np.asarray(batch.action)
  data_next = np.asarray(batch.next_action)
  greedy_next = np.asarray(agent.apply(target, batch.next_state).q_values).argmax(axis=1)
  backup_next = data_next if backup == "sarsa" else greedy_next
  np.testing.assert_allclose(got["Features/dot_next_backup"],
                             np.mean(dots * (action == backup_next)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["Features/dot_next_data"],
                             np.mean(dots * (action == data_next)), rtol=1e-4, atol=1e-6)
  q_data = np.asarray(out.q_values)[np.arange(64), action]
  np.testing.assert_allclose(got["Value/QData"], q_data.mean(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["Value/QMax"], np.asarray(out.q_values).max(axis=1).mean(),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(got["Value/QMinusMCReturn"],
                             np.mean(q_data - np.asarray(batch.return_to_go)), rtol=1e-4,
                             atol=1e-6)


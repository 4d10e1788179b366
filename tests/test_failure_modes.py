"""Failure modes off the data path, each through train.py as a user meets it: the
message, the exit status (2 bad input, 1 a run that failed) and what base_dir holds
afterwards (docs/failure_modes.md lists them)."""
import glob
import os
import subprocess
import sys

import gin
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl.agents import learner
from batch_rl.datasets import quickstart
from batch_rl.runners import common, registry
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "breakout" / "1" / "replay_logs")
  quickstart.log_behaviour_policy(path, num_checkpoints=1, capacity=1500, seed=0)
  return path


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def small(replay_dir, *extra):
  return [
      f"load_fixed_replay.replay_dir = '{replay_dir}'",
      "FixedReplayRunner.game = 'breakout'",
      "FixedReplayRunner.domain = 'minatar'",
      "FixedReplayRunner.num_iterations = 2",
      "FixedReplayRunner.training_steps = 20",
      "FixedReplayRunner.evaluation_steps = 20",
      "FixedReplayRunner.diagnostics_batch_size = 64",
      "MinAtarEnvironment.minimal_action_set = True",
      "DQNAgent.network = @MinAtarDQNNetwork",
      "DQNAgent.target_update_period = 10",
      "create_optimizer.learning_rate = 1e-4",
      *extra,
  ]


def train(base_dir, bindings, *flags):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base_dir}",
       *[f"--gin_bindings={b}" for b in bindings], *flags],
      capture_output=True, text=True, cwd=REPO, timeout=helpers.SUBPROCESS_TIMEOUT,
      check=False)


def error_of(result) -> str:
  """The one error paragraph train.py printed (after any log lines)."""
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  stderr = "\n" + result.stderr
  assert "\nerror: " in stderr, result.stderr[-3000:]
  return stderr[stderr.index("\nerror: ") + 1:]


def listing(base_dir):
  return sorted(os.path.relpath(p, base_dir)
                for p in glob.glob(os.path.join(base_dir, "**"), recursive=True))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, replay_dir):
  base = str(tmp_path_factory.mktemp("finished") / "run")
  result = train(base, small(replay_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return base


def test_a_rerun_with_other_settings_is_refused_and_names_them(finished_run, replay_dir):
  before = listing(finished_run)
  result = train(finished_run, small(replay_dir, "create_optimizer.learning_rate = 1e-3",
                                     "DQNAgent.gamma = 0.5"))
  assert result.returncode == 2
  message = error_of(result)
  assert "create_optimizer.learning_rate: 0.0001 -> 0.001" in message
  assert "DQNAgent.gamma: (not bound) -> 0.5" in message
  assert "--restart" in message
  assert listing(finished_run) == before  # no new events file, nothing rewritten


def test_a_changed_network_is_refused_before_any_shape_error(finished_run, replay_dir):
  result = train(finished_run, small(replay_dir, "MinAtarDQNNetwork.hidden_units = 64"))
  assert result.returncode == 2
  assert "MinAtarDQNNetwork.hidden_units: (not bound) -> 64" in error_of(result)


def test_a_finished_run_says_so_at_once(finished_run, replay_dir):
  before = listing(finished_run)
  # Same settings, bindings in another order: not a difference.
  result = train(finished_run, list(reversed(small(replay_dir))))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "is complete (2 iterations); nothing to do" in result.stderr
  assert "Compiled" not in result.stderr and "transitions kept" not in result.stderr
  assert listing(finished_run) == before


def test_restart_moves_the_old_run_aside(tmp_path, replay_dir):
  base = str(tmp_path / "run")
  bindings = small(replay_dir, "FixedReplayRunner.num_iterations = 1")
  assert train(base, bindings).returncode == 0
  result = train(base, bindings + ["DQNAgent.gamma = 0.9"], "--restart")
  assert result.returncode == 0, result.stderr[-3000:]
  moved = glob.glob(base + ".old-*")
  assert len(moved) == 1 and os.path.exists(os.path.join(moved[0], "checkpoints"))
  with open(os.path.join(base, "bindings.gin")) as f:
    assert "DQNAgent.gamma = 0.9" in f.read()


def test_divergence_stops_the_run_and_writes_nothing_of_it(tmp_path, replay_dir):
  base = str(tmp_path / "run")
  result = train(base, small(replay_dir, "create_optimizer.learning_rate = 1e30"))
  assert result.returncode == 1
  message = error_of(result)
  assert "Training diverged in iteration 1 of 2" in message
  assert "no checkpoint was written yet" in message
  assert not glob.glob(os.path.join(base, "checkpoints", "*"))


def test_batch_size_zero_is_a_message_not_a_traceback(tmp_path, replay_dir):
  result = train(str(tmp_path / "run"), small(replay_dir, "DQNAgent.batch_size = 0"))
  assert result.returncode == 2
  assert "`DQNAgent.batch_size` must be >= 1, got 0." in error_of(result)
  assert not (tmp_path / "run").exists()


def test_base_dir_under_a_regular_file(tmp_path, replay_dir):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  result = train(str(blocker / "run"), small(replay_dir))
  assert result.returncode == 2
  assert f"{blocker} is a file, not a directory" in error_of(result)


def _mount_tmpfs(path, options):
  os.makedirs(path)
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                        capture_output=True, check=False)
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


def _umount(path):
  subprocess.run(["umount", path], check=False)


def test_base_dir_on_a_read_only_file_system(tmp_path, replay_dir):
  mount = str(tmp_path / "ro")
  _mount_tmpfs(mount, "ro,size=1m")
  try:
    result = train(os.path.join(mount, "run"), small(replay_dir))
    assert result.returncode == 2
    assert "is not writable" in error_of(result)
  finally:
    _umount(mount)


def test_a_full_disk_leaves_nothing_partial_and_says_how_much(tmp_path, replay_dir):
  mount = str(tmp_path / "small")
  # Room for the config and event files, not for a checkpoint (about 1.6 MB here).
  _mount_tmpfs(mount, "size=512k")
  try:
    base = os.path.join(mount, "run")
    result = train(base, small(replay_dir))
    assert result.returncode == 1
    message = error_of(result)
    assert "Could not write" in message and "ckpt_000000.msgpack" in message
    assert "MB needed" in message
    assert not glob.glob(os.path.join(base, "**", "*.tmp"), recursive=True)
  finally:
    _umount(mount)


BAD_BINDINGS = [
    ("create_optimizer.learning_rate = -1e-4", "create_optimizer.learning_rate"),
    ("create_optimizer.learning_rate = 0", "create_optimizer.learning_rate"),
    ("create_optimizer.eps = -1.0", "create_optimizer.eps"),
    ("create_optimizer.b1 = 1.5", "create_optimizer.b1"),
    ("create_optimizer.max_grad_norm = 0", "create_optimizer.max_grad_norm"),
    ("FixedReplayRunner.num_iterations = 0", "FixedReplayRunner.num_iterations"),
    ("FixedReplayRunner.training_steps = -5", "FixedReplayRunner.training_steps"),
    ("FixedReplayRunner.evaluation_steps = -1", "FixedReplayRunner.evaluation_steps"),
    ("FixedReplayRunner.eval_epsilon = 1.5", "FixedReplayRunner.eval_epsilon"),
    ("FixedReplayRunner.srank_delta = 0", "FixedReplayRunner.srank_delta"),
    ("FixedReplayRunner.diagnostics_batch_size = 0",
     "FixedReplayRunner.diagnostics_batch_size"),
    ("FixedReplayRunner.keep_checkpoints = 0", "FixedReplayRunner.keep_checkpoints"),
    ("FixedReplayRunner.fused_steps = 0", "FixedReplayRunner.fused_steps"),
    ("FixedReplayRunner.num_seeds = 0", "FixedReplayRunner.num_seeds"),
    ("FixedReplayRunner.num_eval_envs = 0", "FixedReplayRunner.num_eval_envs"),
    ("load_fixed_replay.data_fraction = 1.5", "load_fixed_replay.data_fraction"),
    ("load_fixed_replay.data_fraction = 0", "load_fixed_replay.data_fraction"),
    ("LpRegularizer.coefficient = -1", "LpRegularizer.coefficient"),
    ("DQNAgent.batch_size = 0", "DQNAgent.batch_size"),
    ("DQNAgent.gamma = 1.5", "DQNAgent.gamma"),
    ("DQNAgent.gamma = -0.1", "DQNAgent.gamma"),
    ("DQNAgent.update_horizon = 0", "DQNAgent.update_horizon"),
    ("DQNAgent.target_update_period = 0", "DQNAgent.target_update_period"),
]


@pytest.mark.parametrize("binding,name", BAD_BINDINGS)
def test_every_bad_numeric_binding_is_named(tmp_path, replay_dir, binding, name):
  extra = [binding]
  if name.startswith("LpRegularizer"):
    extra.insert(0, "regularization.lp = @LpRegularizer()")
  config_lib.parse_gin([], small(replay_dir, *extra))
  with pytest.raises(ValueError) as raised:
    registry.create_runner(base_dir=str(tmp_path / "never"))
  assert f"`{name}`" in str(raised.value) or name in str(raised.value)
  assert not (tmp_path / "never").exists()



def test_check_finite_passes_large_values_and_stops_on_non_finite(tmp_path):
  params = {"w": np.ones(3, np.float32)}
  # Large but finite values are the phenomenon under study: no stop.
  common.check_finite(4, 10, {"Train/Loss": 1e13, "Value/QMax": 4.5e4,
                              learner.NON_FINITE: 0.0}, params, {}, str(tmp_path))
  checkpointing.save(str(tmp_path), 3, params)
  last = {"Train/Loss": 0.5, "Value/QMax": 2.0, "Rank/srank": 100.0}
  cases = [({"Train/Loss": float("nan")}, params, "Train/Loss = nan"),
           ({"Value/QMax": float("inf")}, params, "Value/QMax = inf"),
           ({learner.NON_FINITE: 0.25}, params, "25.0% of its gradient steps"),
           ({"Train/Loss": 1.0}, {"w": np.array([1.0, np.nan], np.float32)},
            "parameters hold NaN")]
  for metrics, tree, expected in cases:
    with pytest.raises(common.DivergenceError) as raised:
      common.check_finite(4, 10, metrics, tree, last, str(tmp_path))
    message = str(raised.value)
    assert expected in message
    assert "iteration 5 of 10 (TensorBoard step 4)" in message
    assert "Train/Loss 0.5, Value/QMax 2, Rank/srank 100" in message
    assert "the last good checkpoint is iteration 3's" in message


def test_an_online_run_that_diverges_stops_before_writing_the_iteration(tmp_path):
  base = tmp_path / "online"
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")], [
      "OnlineRunner.num_iterations = 2", "OnlineRunner.training_steps = 60",
      "OnlineRunner.evaluation_steps = 0", "OnlineRunner.min_replay_history = 20",
      "OnlineRunner.replay_capacity = 200", "OnlineRunner.diagnostics_batch_size = 16",
      "DQNAgent.batch_size = 8", "create_optimizer.learning_rate = 1e30"])
  runner = registry.create_runner(base_dir=str(base))
  with pytest.raises(common.DivergenceError, match="Training diverged in iteration 1 of 2"):
    runner.run()
  assert not glob.glob(str(base / "checkpoints" / "*"))


def test_an_agent_of_the_wrong_action_kind_is_refused_before_anything_is_written(
    tmp_path, replay_dir):
  # A discrete-action DQN on a MuJoCo task ...
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={tmp_path / 'dqn'}",
       "--gin_files=gin_configs/online/cartpole_dqn.gin",
       "--gin_bindings=import batch_rl.environments.mujoco_env",
       "--gin_bindings=OnlineRunner.domain = 'mujoco'",
       "--gin_bindings=OnlineRunner.game = 'Hopper-v5'"],
      capture_output=True, text=True, cwd=REPO, timeout=helpers.SUBPROCESS_TIMEOUT,
      check=False)
  assert result.returncode == 2
  error = error_of(result)
  assert "`OnlineRunner.agent_fn` = DQNAgent is an agent for discrete actions" in error
  assert "mujoco:Hopper-v5 has continuous actions" in error
  assert not (tmp_path / "dqn").exists()
  # ... and SAC on MinAtar's discrete actions.
  result = train(str(tmp_path / "sac"), small(replay_dir, "import batch_rl.agents.sac",
                                              "FixedReplayRunner.agent_fn = @SACAgent"))
  assert result.returncode == 2
  assert ("`FixedReplayRunner.agent_fn` = SACAgent is an agent for continuous actions, "
          "but minatar:breakout has 3 discrete actions") in error_of(result)
  assert not (tmp_path / "sac").exists()

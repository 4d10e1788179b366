"""SAC and CQL-SAC through the runners on MuJoCo: an online SAC run logs the
continuous-control tags and its replay (float observations and action vectors in
the box), offline CQL-SAC and SAC + DR3 train on 20% of that replay, and bad input
(actions outside the box, a wrong agent kind, bad dataset arguments) is refused with
a message naming the binding."""
import os

import gin
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl import summary_writer
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import mujoco_data
from batch_rl.runners import common
from batch_rl.runners import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_NETWORKS = ["TwinCriticNetwork.hidden_sizes = (32, 32)",
                  "GaussianPolicyNetwork.hidden_sizes = (32,)",
                  "MujocoEnvironment.max_episode_steps = 25"]


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def make(base_dir, gin_files, bindings):
  gin.clear_config()
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", *f.split("/")) for f in gin_files],
                       bindings)
  return registry.create_runner(base_dir=str(base_dir))


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("sac") / "online"
  bindings = ["OnlineRunner.training_steps = 100", "OnlineRunner.num_iterations = 2",
              "OnlineRunner.evaluation_steps = 1", "OnlineRunner.num_eval_envs = 3",
              "OnlineRunner.min_replay_history = 40", "OnlineRunner.replay_capacity = 200",
              "OnlineRunner.diagnostics_batch_size = 32", "OnlineRunner.log_dataset = True",
              "SACAgent.batch_size = 16"] + SMALL_NETWORKS
  make(base, ["mujoco/sac.gin"], bindings).run()
  gin.clear_config()
  return base


def test_online_sac_logs_the_continuous_control_tags(online_run):
  scalars = summary_writer.read_scalars(str(online_run))
  for tag in ("Rank/srank", "Features/dot_next", "Features/dot_next_backup",
              "Features/dot_next_data", "Value/QData", "Value/QMax", "Train/Alpha",
              "Train/Entropy", "Train/ActorLoss", "Train/TDLoss", "Eval/AverageReturn",
              "Dormant/tau0.1/Dense_1"):
    assert tag in scalars, tag
  # 60 updates at n = 1 after the 40 warm-up steps, then 100 more.
  assert scalars["Train/GradientSteps"][1] == [160]
  # Evaluation: 3 environments, one episode each, of at most 25 steps.
  assert scalars["Eval/NumEpisodes"][0] == [3]
  # The temperature moved from its initial 1.
  assert scalars["Train/Alpha"][1][0] < 1.0


def test_online_sac_logs_its_replay_with_action_vectors_in_the_box(online_run):
  replay_dir = os.path.join(online_run, "replay_logs")
  shard = fmt.read_shard(replay_dir, 1)
  assert shard.observation.dtype == np.float32 and shard.observation.shape[1:] == (11,)
  actions = shard.action
  assert actions.dtype == np.float32 and actions.shape[1:] == (3,)
  assert np.abs(actions).max() <= 1.0 and np.abs(actions).max() > 0.5
  # The warm-up's actions are uniform in the box, not all at one value.
  assert np.std(actions[:40]) > 0.3


@pytest.mark.parametrize("gin_files, extra, tag", [
    (["mujoco/cql_sac.gin"], [], "Train/CQLLoss"),
    (["mujoco/cql_sac.gin", "mujoco/cql_sac_lagrange.gin"], [], "Train/CQLAlphaPrime"),
    (["mujoco/cql_sac.gin", "mujoco/sac_offline.gin", "regularizers/dr3.gin"], [],
     "Train/DR3"),
])
def test_offline_agents_train_on_a_fifth_of_the_logged_replay(online_run, tmp_path,
                                                              gin_files, extra, tag):
  bindings = [f"load_fixed_replay.replay_dir = '{online_run}/replay_logs'",
              "load_fixed_replay.suffixes = [1]",
              "FixedReplayRunner.num_iterations = 1", "FixedReplayRunner.training_steps = 20",
              "FixedReplayRunner.num_eval_envs = 2",
              "FixedReplayRunner.diagnostics_batch_size = 32",
              "CQLSACAgent.batch_size = 16", "CQLSACAgent.num_sampled_actions = 3",
              "SACAgent.batch_size = 16"] + SMALL_NETWORKS + extra
  runner = make(tmp_path / "run", gin_files, bindings)
  assert runner.replay.num_transitions == pytest.approx(0.2 * 199, abs=1)
  runner.run()
  scalars = summary_writer.read_scalars(str(tmp_path / "run"))
  for wanted in (tag, "Rank/srank", "Eval/AverageReturn", "Features/dot_next_backup"):
    assert wanted in scalars, wanted
  assert np.isfinite(scalars["Train/Loss"][0][0])


def test_dataset_actions_outside_the_box_are_refused_or_clipped(online_run, tmp_path):
  replay_dir = tmp_path / "replay_logs"
  shard = fmt.read_shard(str(online_run / "replay_logs"), 1)
  action = shard.action.copy()
  action[5] = [1.5, 0.0, -3.0]
  action[7] = [0.0, 1.2, 0.0]
  fmt.write_shard(str(replay_dir), 0, observation=shard.observation, action=action,
                  reward=shard.reward, terminal=shard.terminal,
                  add_count=shard.info.add_count, stack_size=1,
                  observation_dtype=np.float32, action_shape=(3,), action_dtype=np.float32)
  bindings = [f"load_fixed_replay.replay_dir = '{replay_dir}'",
              "FixedReplayRunner.num_iterations = 1", "FixedReplayRunner.training_steps = 5",
              "FixedReplayRunner.evaluation_steps = 0",
              "FixedReplayRunner.diagnostics_batch_size = 32",
              "CQLSACAgent.batch_size = 16", "CQLSACAgent.num_sampled_actions = 2",
              "load_fixed_replay.data_fraction = 1.0"] + SMALL_NETWORKS
  with pytest.raises(common.ConfigError,
                     match=r"2 of the \d+ transitions .* outside mujoco:Hopper-v5's action "
                           r"box \[-1.0, 1.0\] \(the farthest by 2\).*"
                           r"FixedReplayRunner.out_of_box_actions = 'clip'"):
    make(tmp_path / "refused", ["mujoco/cql_sac.gin"], bindings)
  assert not os.path.exists(tmp_path / "refused")
  runner = make(tmp_path / "clipped", ["mujoco/cql_sac.gin"],
                bindings + ["FixedReplayRunner.out_of_box_actions = 'clip'"])
  actions = np.asarray(runner.replay.arrays.action).reshape(-1, 3)
  assert np.abs(actions).max() <= 1.0
  np.testing.assert_array_equal(actions[5], [1.0, 0.0, -1.0])


def test_mujoco_dataset_arguments_and_bindings():
  with pytest.raises(common.ConfigError, match=r"mujoco_dataset.game.*Hopper-v5"):
    mujoco_data.mujoco_dataset(game="Hopper-v2")
  with pytest.raises(common.ConfigError, match=r"mujoco_dataset.num_steps"):
    mujoco_data.mujoco_dataset(num_steps=1005)
  bindings = mujoco_data.behaviour_bindings("Walker2d-v5", 2, 50_000)
  assert "OnlineRunner.replay_capacity = 50000" in bindings  # the whole run is kept
  assert "OnlineRunner.min_replay_history = 5000" in bindings
  config_lib.parse_gin([], bindings)  # the behaviour run's bindings are valid gin
  assert gin.query_parameter("OnlineRunner.game") == "Walker2d-v5"


def test_vmapped_sac_seeds_log_what_their_solo_runs_log(tmp_path):
  base = ["OnlineRunner.training_steps = 60", "OnlineRunner.num_iterations = 1",
          "OnlineRunner.evaluation_steps = 1", "OnlineRunner.num_eval_envs = 2",
          "OnlineRunner.min_replay_history = 30", "OnlineRunner.replay_capacity = 100",
          "OnlineRunner.diagnostics_batch_size = 32", "SACAgent.batch_size = 16"
          ] + SMALL_NETWORKS
  make(tmp_path / "vmapped", ["mujoco/sac.gin"],
       base + ["OnlineRunner.seed = 0", "OnlineRunner.num_seeds = 2"]).run()
  make(tmp_path / "solo", ["mujoco/sac.gin"], base + ["OnlineRunner.seed = 1"]).run()
  got = summary_writer.read_scalars(str(tmp_path / "vmapped" / "seed_1"))
  want = summary_writer.read_scalars(str(tmp_path / "solo"))
  timing = lambda tag: tag == "Train/StepsPerSecond" or tag.startswith("Time/")
  assert sorted(t for t in got if not timing(t)) == sorted(t for t in want if not timing(t))
  for tag in want:
    if not timing(tag):
      np.testing.assert_allclose(got[tag][0], want[tag][0], rtol=2e-4, atol=1e-5,
                                 err_msg=tag)
  other = summary_writer.read_scalars(str(tmp_path / "vmapped" / "seed_0"))
  assert other["Train/ActorLoss"][0] != got["Train/ActorLoss"][0]


def test_the_policy_action_size_is_the_tasks_not_a_binding():
  with pytest.raises(Exception, match="denylisted kwarg 'action_size'"):
    config_lib.parse_gin([os.path.join(REPO, "gin_configs", "mujoco", "sac.gin")],
                         ["GaussianPolicyNetwork.action_size = 4"])

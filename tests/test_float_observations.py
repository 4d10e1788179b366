"""Float observations and continuous actions, end to end.

Environment specs and the gym family; float32 observations and float32 action vectors
through the DQN Replay format (against Dopamine's OutOfGraphReplayBuffer with
`observation_dtype` / `action_shape` / `action_dtype`), the replay logger, the loader,
the sampler and the online buffer; dummy inputs of the data's dtype; and an online
CartPole run whose logged dataset `train.py` trains on offline.
"""
import functools
import os
import subprocess
import sys

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dopamine.tf.replay_memory import circular_replay_buffer

from batch_rl import config as config_lib
from batch_rl import networks
from batch_rl import summary_writer
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.datasets.replay_logger import ReplayLogger
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.environments import specs
from batch_rl.replay import circular_buffer as cb
from batch_rl.replay import sampler
from batch_rl.runners import online
from batch_rl.runners import registry
from tests import helpers
from tests.test_sampler import assert_same_transitions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS_SHAPE, ACTION_SHAPE = (3,), (2,)


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


# ------------------------------------------------------------------ specs and gym


def test_specs_normalise_and_validate():
  spec = specs.ObservationSpec([4], "float32")
  assert spec == specs.ObservationSpec((4,), np.float32) and spec.dtype == np.float32
  assert specs.state_shape(spec, 1) == (4, 1)
  discrete = specs.DiscreteActionSpec(3)
  assert (discrete.shape, discrete.dtype) == ((), np.int32)
  box = specs.BoxActionSpec((2,), low=-1, high=(0.5, 2.0))
  assert box.low == (-1.0, -1.0) and box.high == (0.5, 2.0) and box.dtype == np.float32
  np.testing.assert_array_equal(box.high_array, np.array([0.5, 2.0], np.float32))
  hash(box)  # frozen and hashable
  with pytest.raises(ValueError, match="low <= high"):
    specs.BoxActionSpec((2,), low=1.0, high=0.0)
  with pytest.raises(ValueError, match="3 values for 2"):
    specs.BoxActionSpec((2,), low=(0.0, 0.0, 0.0), high=1.0)
  with pytest.raises(ValueError):
    specs.DiscreteActionSpec(0)


def test_atari_and_minatar_keep_their_uint8_specs():
  env = factory.create_environment("minatar:breakout", seed=0)
  assert env.observation_spec == specs.ObservationSpec((10, 10, 4), np.uint8)
  assert env.action_spec == specs.DiscreteActionSpec(env.num_actions)
  assert env.reset().dtype == np.uint8
  env = factory.create_environment("atari:Pong", seed=0)
  assert env.observation_spec == specs.ObservationSpec((84, 84), np.uint8)
  assert env.action_spec.num_actions == env.num_actions == 6


def test_an_environment_without_specs_is_read_as_uint8_discrete():
  class Legacy:
    observation_shape, stack_size, num_actions = (5, 5), 2, 3

  assert factory.observation_spec_of(Legacy()) == specs.ObservationSpec((5, 5), np.uint8)
  assert factory.action_spec_of(Legacy()) == specs.DiscreteActionSpec(3)


@pytest.mark.parametrize("game,shape,num_actions",
                         [("CartPole-v1", (4,), 2), ("Acrobot-v1", (6,), 3),
                          ("MountainCar-v0", (2,), 3)])
def test_gym_environments(game, shape, num_actions):
  env = factory.create_environment(f"gym:{game}", seed=3)
  assert isinstance(env, factory.Environment)
  assert env.observation_spec == specs.ObservationSpec(shape, np.float32)
  assert env.action_spec == specs.DiscreteActionSpec(num_actions)
  assert (env.observation_shape, env.stack_size, env.num_actions) == (shape, 1, num_actions)
  first = env.reset()
  assert first.dtype == np.float32 and first.shape == shape
  frame, reward, terminal, truncated = env.step(0)
  assert frame.dtype == np.float32 and isinstance(reward, float)
  assert not terminal and not truncated
  # Same seed, same episode; the next reset continues the environment's generator.
  again = factory.create_environment(f"gym:{game}", seed=3)
  np.testing.assert_array_equal(again.reset(), first)
  assert not np.array_equal(again.reset(), first)


def test_gym_terminal_and_truncated_are_gymnasiums():
  env = factory.create_environment("gym:CartPole-v1", seed=0)
  env.reset()
  for _ in range(500):  # always pushing left: the pole falls, a terminal, long before 500
    _, _, terminal, truncated = env.step(0)
    if terminal or truncated:
      break
  assert terminal and not truncated
  env = factory.create_environment("gym:CartPole-v1", seed=0, max_episode_steps=6)
  env.reset()
  ends = [env.step(k % 2)[2:] for k in range(6)]  # alternating: the pole stays up
  assert ends == [(False, False)] * 5 + [(False, True)]
  with pytest.raises(ValueError, match=r"action must be in \[0, 2\)"):
    env.step(2)


def test_unknown_gym_names_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown gym game 'CartPole-v0'\. Did you mean "
                                       r"'CartPole-v1'.*Valid games: CartPole-v1, "
                                       r"Acrobot-v1, MountainCar-v0"):
    factory.create_environment("gym:CartPole-v0", seed=0)
  with pytest.raises(ValueError, match=r"'atari', 'minatar', 'gym'"):
    factory.create_environment("dmc:cheetah-run", seed=0)


def test_evaluation_stacks_states_of_the_environments_dtype():
  seen = []

  def policy(states, keys):
    seen.append((states.dtype, states.shape))
    return np.zeros(len(states), np.int32)

  envs = [factory.create_environment("gym:CartPole-v1", seed=s) for s in (0, 1)]
  result = evaluation.evaluate(policy, envs, min_steps=20, key=jax.random.PRNGKey(0))
  assert result.num_episodes >= 2
  assert set(seen) == {(np.dtype(np.float32), (2, 4, 1))}


# ------------------------------------------------------------------ data path


def float_episodes(rng, lengths):
  """(observation float32 (3,), action float32 (2,), reward, terminal) per step."""
  for length in lengths:
    for k in range(length):
      yield (rng.normal(size=OBS_SHAPE).astype(np.float32),
             rng.uniform(-1, 1, ACTION_SHAPE).astype(np.float32),
             float(rng.normal()), k == length - 1)


def dopamine_float_buffer(capacity, stack_size, update_horizon=1, gamma=0.99):
  return circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=OBS_SHAPE, stack_size=stack_size, replay_capacity=capacity,
      batch_size=8, update_horizon=update_horizon, gamma=gamma,
      observation_dtype=np.float32, action_shape=ACTION_SHAPE, action_dtype=np.float32)


def test_writer_and_reader_round_trip_float_arrays_with_dopamine(tmp_path):
  rng = np.random.default_rng(0)
  capacity = 40
  arrays = dict(observation=rng.normal(size=(capacity, *OBS_SHAPE)).astype(np.float32),
                action=rng.uniform(-2, 2, (capacity, *ACTION_SHAPE)).astype(np.float32),
                reward=rng.normal(size=capacity).astype(np.float32),
                terminal=(rng.random(capacity) < 0.1).astype(np.uint8))
  replay_dir = str(tmp_path / "replay_logs")
  fmt.write_shard(replay_dir, 0, add_count=55, stack_size=2, observation_dtype=np.float32,
                  action_shape=ACTION_SHAPE, action_dtype=np.float32, **arrays)
  info = fmt.read_shard_info(replay_dir, 0)
  assert (info.observation_shape, info.action_shape) == (OBS_SHAPE, ACTION_SHAPE)
  assert info.observation_dtype == info.action_dtype == np.float32
  shard = fmt.read_shard(replay_dir, 0)
  ref = dopamine_float_buffer(capacity, stack_size=2)
  ref.load(replay_dir, 0)
  for key, stored in arrays.items():
    assert getattr(shard, key).dtype == stored.dtype == ref._store[key].dtype, key
    np.testing.assert_array_equal(getattr(shard, key), stored, err_msg=key)
    np.testing.assert_array_equal(ref._store[key], stored, err_msg=key)
  assert int(ref.add_count) == 55
  # uint8 frames stay the default: float data needs the explicit dtype.
  with pytest.raises(ValueError, match="cannot be stored as uint8"):
    fmt.write_shard(str(tmp_path / "never"), 0, add_count=1, **arrays)
  with pytest.raises(ValueError, match="observation_dtype must be one of"):
    fmt.write_shard(str(tmp_path / "never"), 0, add_count=1, observation_dtype=np.float64,
                    action_shape=ACTION_SHAPE, action_dtype=np.float32, **arrays)
  assert not (tmp_path / "never").exists()
  # A uint8 observation out buffer does not take float frames.
  with pytest.raises(fmt.ReplayFormatError, match="holds float32"):
    fmt.read_shard(replay_dir, 0, observation_out=np.empty((capacity, 3), np.uint8))


@pytest.mark.parametrize("stack_size,update_horizon", [(1, 1), (2, 3)])
def test_logged_float_data_loads_and_samples_as_dopamine(tmp_path, stack_size,
                                                         update_horizon):
  """Dopamine's save and our logger write the same files; loader + sampler return
  the stored transitions exactly (stacks on the trailing axis: states (3, S))."""
  capacity, gamma = 30, 0.9
  ours_dir, theirs_dir = str(tmp_path / "ours"), str(tmp_path / "theirs")
  os.makedirs(theirs_dir)
  logger = ReplayLogger(ours_dir, OBS_SHAPE, capacity, stack_size=stack_size,
                        clip_rewards=False, observation_dtype=np.float32,
                        action_shape=ACTION_SHAPE, action_dtype=np.float32)
  ref = dopamine_float_buffer(capacity, stack_size, update_horizon, gamma)
  for step in float_episodes(np.random.default_rng(1), [4, 7, 1, 9, 6, 8]):
    logger.add(*step)
    ref.add(*step)
    if logger.suffixes_written:
      break
  assert logger.suffixes_written == [0]
  ref.save(theirs_dir, 0)
  ours, theirs = fmt.read_shard(ours_dir, 0), fmt.read_shard(theirs_dir, 0)
  for key in fmt.STORE_KEYS:
    np.testing.assert_array_equal(getattr(ours, key), getattr(theirs, key), err_msg=key)
    assert getattr(ours, key).dtype == ref._store[key].dtype, key
  assert ours.info.add_count == theirs.info.add_count == int(ref.add_count)

  data = fixed_replay.load_fixed_replay(ours_dir, stack_size=stack_size,
                                        update_horizon=update_horizon, gamma=gamma)
  assert data.state_shape == OBS_SHAPE + (stack_size,)
  assert data.observation_dtype == np.float32 and data.action_shape == ACTION_SHAPE
  assert data.arrays.action.shape == (1, capacity) + ACTION_SHAPE
  valid = np.asarray(data.arrays.valid)
  np.testing.assert_array_equal(
      valid, [i for i in range(capacity) if ref.is_valid_transition(i)])
  arrays = jax.device_put(data.arrays)
  got = sampler.gather_transitions(arrays, jnp.asarray(valid), stack_size=stack_size,
                                   update_horizon=update_horizon, gamma=gamma)
  assert got.state.dtype == jnp.float32 and got.state.shape == (len(valid), 3, stack_size)
  assert got.action.dtype == jnp.float32 and got.action.shape == (len(valid), 2)
  expected = ref.sample_transition_batch(batch_size=len(valid), indices=valid)
  assert_same_transitions(got, expected, gamma, update_horizon)
  # Sampled minibatches are drawn from those transitions.
  batch = sampler.sample_transitions(jax.random.PRNGKey(0), arrays, 16, stack_size=stack_size,
                                     update_horizon=update_horizon, gamma=gamma)
  rows = {int(i): k for k, i in enumerate(valid)}
  for b, index in enumerate(np.asarray(batch.index)):
    np.testing.assert_array_equal(np.asarray(batch.state[b]), expected[0][rows[int(index)]])
    np.testing.assert_array_equal(np.asarray(batch.action[b]), expected[1][rows[int(index)]])


def test_online_buffer_holds_float_frames_and_action_vectors_as_dopamine():
  capacity, stack_size = 25, 2
  buffer = cb.create(capacity, OBS_SHAPE, np.float32, ACTION_SHAPE, np.float32)
  assert buffer.observation.dtype == buffer.action.dtype == jnp.float32
  assert buffer.action.shape == (1, capacity) + ACTION_SHAPE
  ref = dopamine_float_buffer(capacity, stack_size)
  add = jax.jit(functools.partial(cb.add, stack_size=stack_size, clip_rewards=False))
  for step in float_episodes(np.random.default_rng(2), [3, 8, 2, 12, 5]):
    buffer = add(buffer, *step)
    ref.add(*step)
  host = cb.to_numpy(buffer)
  assert host["add_count"] == int(ref.add_count) > capacity
  for key in fmt.STORE_KEYS:
    np.testing.assert_array_equal(host[key], ref._store[key], err_msg=key)
  # The uint8 default is unchanged.
  default = cb.create(capacity, (10, 10, 4))
  assert (default.observation.dtype, default.action.dtype, default.action.shape) == (
      jnp.uint8, jnp.int32, (1, capacity))


def test_init_makes_dummy_inputs_of_the_datas_dtype():
  seen = []

  class Recorder(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, x, train=False):
      seen.append(x.dtype)
      phi = nn.Dense(8)(x.reshape((x.shape[0], -1)).astype(jnp.float32))
      return networks.QNetworkOutput(nn.Dense(self.num_actions)(phi), phi)

  agent = dqn.DQNAgent(num_actions=2, network=Recorder)
  assert agent_common.state_spec((10, 10, 4, 1)) == (10, 10, 4, 1)  # uint8: the shape
  agent.init(jax.random.PRNGKey(0), (10, 10, 4, 1))
  assert set(seen) == {np.dtype(np.uint8)}
  seen.clear()
  spec = agent_common.state_spec((4, 1), np.float32)
  assert spec == jax.ShapeDtypeStruct((4, 1), jnp.float32)
  agent.init(jax.random.PRNGKey(0), spec)
  assert set(seen) == {np.dtype(np.float32)}


def test_mlp_network_flattens_states():
  net = networks.MLPQNetwork(num_actions=3, hidden_sizes=(16, 8), activation="tanh")
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 1), jnp.float32))
  assert list(params["params"]) == ["Dense_0", "Dense_1", "Dense_2"]
  out = net.apply(params, jnp.ones((5, 4, 1)))
  assert out.q_values.shape == (5, 3) and out.representation.shape == (5, 8)
  # representation = the last hidden layer after its activation; q = phi W + b.
  head = params["params"]["Dense_2"]
  np.testing.assert_allclose(out.q_values, out.representation @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(out.representation))) <= 1.0
  with pytest.raises(ValueError, match="hidden_sizes"):
    networks.MLPQNetwork(num_actions=3, hidden_sizes=()).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4, 1)))


# ------------------------------------------------------------------ end to end

SMALL_NETWORK = ["MLPQNetwork.hidden_sizes = (32, 32)", "DQNAgent.batch_size = 32"]


def test_online_cartpole_logs_float_data_that_train_py_trains_on(tmp_path):
  base = tmp_path / "online"
  bindings = [
      "OnlineRunner.num_iterations = 2", "OnlineRunner.training_steps = 600",
      "OnlineRunner.replay_capacity = 500", "OnlineRunner.min_replay_history = 100",
      "OnlineRunner.evaluation_steps = 50", "OnlineRunner.diagnostics_batch_size = 64",
      "OnlineRunner.epsilon_decay_period = 500", "OnlineRunner.log_dataset = True",
      *SMALL_NETWORK]
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "cartpole_dqn.gin")],
                       bindings)
  runner = registry.create_runner(base_dir=str(base))
  assert isinstance(runner, online.OnlineRunner)
  assert runner.state_shape == (4, 1) and runner.observation_spec.dtype == np.float32
  metrics = runner.run()
  gin.clear_config()
  assert np.isfinite(metrics["Train/Loss"]) and metrics["Rank/srank"] >= 1
  assert np.isfinite(metrics["Eval/AverageReturn"])

  replay_dir = str(base / "replay_logs")
  assert fmt.list_suffixes(replay_dir) == [0, 1]
  shard = fmt.read_shard(replay_dir, 1)
  assert shard.observation.dtype == np.float32 and shard.observation.shape == (500, 4)
  assert shard.action.dtype == np.int32 and shard.terminal.sum() > 0
  assert shard.info.add_count == 1200  # stack size 1: no padding entries
  ref = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=(4,), stack_size=1, replay_capacity=500, batch_size=8,
      observation_dtype=np.float32)
  ref.load(replay_dir, 1)
  for key in fmt.STORE_KEYS:
    np.testing.assert_array_equal(getattr(shard, key), ref._store[key], err_msg=key)

  offline_base = tmp_path / "offline"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={offline_base}",
       "--gin_files=gin_configs/offline/cartpole_dqn.gin",
       *[f"--gin_bindings={b}" for b in [
           f"load_fixed_replay.replay_dir = '{replay_dir}'",
           "FixedReplayRunner.num_iterations = 2", "FixedReplayRunner.training_steps = 100",
           "FixedReplayRunner.evaluation_steps = 50",
           "FixedReplayRunner.diagnostics_batch_size = 64", *SMALL_NETWORK]]],
      cwd=REPO, capture_output=True, text=True, timeout=helpers.SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "iteration 2/2" in result.stderr and "srank" in result.stderr
  scalars = summary_writer.read_scalars(str(offline_base))
  for tag in ("Train/Loss", "Rank/srank", "Eval/AverageReturn"):
    assert sorted(scalars[tag]) == [0, 1], tag
  texts = summary_writer.read_texts(str(offline_base))
  assert "float32" in texts["Config/data"] and texts["Config/environment"] == "gym:CartPole-v1"

"""The offline bsuite datasets (an online DQN's replay in the DQN Replay format) and the
bsuite lab's MLP shapes."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import networks, validation
from batch_rl.datasets import bsuite_data
from batch_rl.datasets import dqn_replay_format as fmt


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory):
  """The same dataset (catch, noise 0.2, seed 3, 1000 steps) made in two caches."""
  dirs = [bsuite_data.bsuite_dataset("catch", 0.2, seed=3, num_steps=1000,
                                     cache_dir=str(tmp_path_factory.mktemp(f"c{i}")))
          for i in range(2)]
  return dirs


def test_the_dataset_is_the_whole_behaviour_run_in_the_dqn_replay_format(two_caches):
  replay_dir = two_caches[0]
  assert replay_dir.endswith(os.path.join("bsuite", "catch-noise0.2-s3-n1000", "replay_logs"))
  assert fmt.list_suffixes(replay_dir) == [0]
  shard = fmt.read_shard(replay_dir, 0)
  assert shard.observation.dtype == np.float32
  assert shard.observation.shape == (1000, 10, 5)
  assert set(np.unique(shard.action)) <= {0, 1, 2}
  # catch: every 9th step ends an episode with reward +1 or -1, the others give 0.
  ends = np.flatnonzero(shard.terminal)
  assert len(ends) >= 100 and np.all(np.diff(ends) == 9)
  assert set(np.unique(shard.reward[ends])) <= {-1.0, 1.0}
  assert not np.any(np.delete(shard.reward, ends))
  config = open(os.path.join(os.path.dirname(replay_dir), "config.gin")).read()
  assert "OnlineRunner.game = 'catch'" in config
  assert f"OnlineRunner.epsilon_train = {bsuite_data.behaviour_epsilon(0.2)!r}" in config


def test_the_same_seed_logs_the_same_data_and_a_made_dataset_is_reused(two_caches):
  a, b = (fmt.read_shard(d, 0) for d in two_caches)
  for field in ("observation", "action", "reward", "terminal"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  before = os.stat(os.path.join(two_caches[0], "add_count_ckpt.0.gz")).st_mtime_ns
  again = bsuite_data.bsuite_dataset("catch", 0.2, seed=3, num_steps=1000,
                                     cache_dir=os.path.dirname(os.path.dirname(
                                         os.path.dirname(two_caches[0]))))
  assert again == two_caches[0]
  assert os.stat(os.path.join(again, "add_count_ckpt.0.gz")).st_mtime_ns == before


def test_noise_level_is_the_random_action_probability_on_top_of_dqns_epsilon():
  assert bsuite_data.behaviour_epsilon(0.0) == pytest.approx(0.01)
  assert bsuite_data.behaviour_epsilon(0.5) == pytest.approx(0.5 + 0.5 * 0.01)
  bindings = bsuite_data.behaviour_bindings("cartpole", 0.3, 1, 20000)
  assert "OnlineRunner.replay_capacity = 20000" in bindings
  assert "OnlineRunner.training_steps = 2000" in bindings  # x 10 iterations
  assert "OnlineRunner.epsilon_decay_period = 2000" in bindings


@pytest.mark.parametrize("kwargs,match", [
    (dict(game="catchh"), r"`bsuite_dataset.game`.*Valid environments: catch, cartpole"),
    (dict(noise_level=1.5), r"bsuite_dataset.noise_level"),
    (dict(noise_level=-0.1), r"bsuite_dataset.noise_level"),
    (dict(num_steps=10), r"bsuite_dataset.num_steps"),
    (dict(num_steps=1005), r"bsuite_dataset.num_steps.*multiple of 10"),
])
def test_bad_dataset_arguments_name_the_binding(kwargs, match, tmp_path):
  with pytest.raises((ValueError, validation.ConfigError), match=match):
    bsuite_data.bsuite_dataset(**{"game": "catch", **kwargs}, cache_dir=str(tmp_path))
  assert not os.listdir(tmp_path)  # nothing written


def test_mlp_hidden_sizes():
  assert networks.mlp_hidden_sizes(2, 64) == (64, 64)
  assert networks.mlp_hidden_sizes(4, 64, bottleneck=8) == (64, 64, 64, 8)
  assert networks.mlp_hidden_sizes(1, 64, bottleneck=16) == (16,)
  with pytest.raises(ValueError, match="`mlp_hidden_sizes.depth` = 0"):
    networks.mlp_hidden_sizes(0, 64)
  with pytest.raises(ValueError, match="`mlp_hidden_sizes.bottleneck` = 128 is wider"):
    networks.mlp_hidden_sizes(2, 64, bottleneck=128)


def test_he_initialisation_has_the_he_variance():
  net = networks.MLPQNetwork(num_actions=3, hidden_sizes=(512, 512), kernel_init="he_normal")
  params = net.init(jax.random.key(0), jnp.zeros((1, 400, 1)))["params"]
  kernel = np.asarray(params["Dense_1"]["kernel"])  # fan_in 512
  assert np.std(kernel) == pytest.approx(np.sqrt(2.0 / 512), rel=0.03)
  with pytest.raises(ValueError, match="kernel_init must be one of"):
    networks.MLPQNetwork(num_actions=3, kernel_init="orthogonal").init(
        jax.random.key(0), jnp.zeros((1, 4, 1)))


def test_two_processes_asking_at_once_log_the_dataset_once(tmp_path, monkeypatch):
  import threading
  import time
  calls = []

  def fake_behaviour_run(base_dir, game, noise_level, seed, num_steps):
    calls.append(game)
    time.sleep(0.5)  # the second caller arrives while the first is logging
    os.makedirs(os.path.join(base_dir, "replay_logs"))
    open(os.path.join(base_dir, "config.gin"), "w").close()

  monkeypatch.setattr(bsuite_data, "_log_behaviour_run", fake_behaviour_run)
  found = []
  threads = [threading.Thread(target=lambda: found.append(bsuite_data.bsuite_dataset(
      "cartpole", 0.0, seed=1, num_steps=1000, cache_dir=str(tmp_path)))) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert calls == ["cartpole"]
  assert len(found) == 2 and found[0] == found[1] and os.path.isdir(found[0])
  assert not [n for n in os.listdir(tmp_path / "bsuite") if n.startswith(".tmp-")]

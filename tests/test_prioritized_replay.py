"""Prioritized replay: the sum tree against Dopamine's SumTree, PER's add, sampling,
weights and priority updates against numpy, and an online Rainbow run."""
import functools
import os

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dopamine.tf.replay_memory import sum_tree as dopamine_sum_tree

from batch_rl import config as config_lib
from batch_rl.runners import common, offline, registry
from batch_rl import summary_writer
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl import networks
from batch_rl.replay import prioritized_buffer as per
from batch_rl.replay import sum_tree
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("capacity", [1, 37, 64])
def test_sum_tree_matches_dopamine(capacity):
  rng = np.random.default_rng(capacity)
  priorities = rng.uniform(0.0, 2.0, capacity)
  priorities[rng.random(capacity) < 0.3] = 0.0
  priorities[0] = 0.5  # never empty
  ref = dopamine_sum_tree.SumTree(capacity)
  for i, p in enumerate(priorities):
    ref.set(i, p)
  # Set in two batches, the second overwriting part of the first.
  tree = sum_tree.create(capacity)
  tree = sum_tree.set_priorities(tree, jnp.arange(capacity), jnp.zeros(capacity) + 9.0)
  tree = sum_tree.set_priorities(tree, jnp.arange(capacity), jnp.asarray(priorities))
  np.testing.assert_allclose(sum_tree.total(tree), priorities.sum(), rtol=1e-5)
  np.testing.assert_allclose(sum_tree.leaves(tree, jnp.arange(capacity)), priorities,
                             rtol=1e-6)
  queries = np.concatenate([rng.uniform(0, 1, 200), [0.0, 0.999999]])
  ours = np.asarray(sum_tree.find(tree, jnp.asarray(queries * priorities.sum(), jnp.float32)))
  theirs = np.array([ref.sample(q) for q in queries])
  # float32 vs float64 sums can disagree only for queries within rounding of a boundary.
  boundaries = np.cumsum(priorities)
  near = np.min(np.abs(queries[:, None] * priorities.sum() - boundaries[None]), axis=1) < 1e-4
  np.testing.assert_array_equal(ours[~near], theirs[~near])
  assert np.all(priorities[ours] > 0)


def test_stratified_queries_fall_in_their_slices():
  tree = sum_tree.set_priorities(sum_tree.create(8), jnp.arange(8), jnp.arange(8.0))
  q = np.asarray(sum_tree.stratified_queries(jax.random.PRNGKey(0), tree, 4, candidates=5))
  low = np.arange(4) * 28.0 / 4
  assert q.shape == (4, 5) and np.all(q[:, 0] >= low) and np.all(q[:, 0] < low + 7.0)
  assert np.all(q[:, 1:] >= 0) and np.all(q[:, 1:] < 28.0)


def filled_buffer(capacity=40, stack_size=2, lengths=(5, 7, 3, 9, 6)):
  pbuffer = per.create(capacity, (3, 3))
  add = jax.jit(functools.partial(per.add, stack_size=stack_size))
  t = 0
  for length in lengths:
    for k in range(length):
      t += 1
      pbuffer = add(pbuffer, np.full((3, 3), t, np.uint8), t % 3, 0.5, k == length - 1)
  return pbuffer


def test_add_gives_new_entries_max_priority_and_padding_zero():
  pbuffer = filled_buffer()
  count = int(pbuffer.add_count)
  assert count == 30 + 5  # 30 entries, one padding entry before each of 5 episodes
  leaves = np.asarray(sum_tree.leaves(pbuffer.tree, jnp.arange(40)))
  obs = np.asarray(pbuffer.buffer.observation[0, :, 0, 0])
  np.testing.assert_array_equal(leaves[:count], np.where(obs[:count] > 0, 1.0, 0.0))
  # After an update, new entries get the new maximum.
  pbuffer = per.update_priorities(pbuffer, jnp.array([3, 4]), jnp.array([16.0, 0.0]))
  np.testing.assert_allclose(sum_tree.leaves(pbuffer.tree, jnp.array([3, 4])),
                             [4.0, 1e-5], rtol=1e-4)
  assert float(pbuffer.max_priority) == pytest.approx(4.0)
  # The last episode ended: the next add pads one zero entry (priority 0) first.
  pbuffer = per.add(pbuffer, np.ones((3, 3), np.uint8), 0, 0.0, False, stack_size=2)
  np.testing.assert_allclose(sum_tree.leaves(pbuffer.tree, jnp.array([count, count + 1])),
                             [0.0, 4.0], rtol=1e-6)


def test_sampling_follows_priorities_and_weights_match_numpy():
  pbuffer = filled_buffer()
  count = int(pbuffer.add_count)
  rng = np.random.default_rng(0)
  obs = np.asarray(pbuffer.buffer.observation[0, :count, 0, 0])
  priorities = np.where(obs > 0, rng.uniform(0.5, 3.0, count), 0.0)
  pbuffer = pbuffer._replace(tree=sum_tree.set_priorities(
      pbuffer.tree, jnp.arange(count), jnp.asarray(priorities, jnp.float32)))
  valid = np.asarray(per.circular_buffer.is_valid(pbuffer.buffer, jnp.arange(40),
                                                  stack_size=2, update_horizon=1))
  eligible = valid & (np.pad(priorities, (0, 40 - count)) > 0)
  sample = jax.jit(functools.partial(per.sample_transitions, batch_size=32, stack_size=2))
  counts = np.zeros(40)
  for i in range(300):
    batch = sample(jax.random.PRNGKey(i), pbuffer)
    index = np.asarray(batch.index)
    counts += np.bincount(index, minlength=40)
    if i == 0:
      p = np.pad(priorities, (0, 40 - count))[index]
      w = 1.0 / np.sqrt(p + 1e-10)
      np.testing.assert_allclose(batch.weight, w / w.max(), rtol=1e-5)
  assert set(np.flatnonzero(counts)) == set(np.flatnonzero(eligible))
  expected = np.where(eligible, np.pad(priorities, (0, 40 - count)), 0.0)
  expected = expected / expected.sum() * counts.sum()
  # Stratified draws are less variable than multinomial ones; bound by multinomial's.
  tolerance = 5 * np.sqrt(expected) + 1
  assert np.all(np.abs(counts - expected) < tolerance)


def test_weighted_dqn_loss_and_per_sample_losses():
  agent = dqn.DQNAgent(3, network=networks.MinAtarDQNNetwork)
  state = agent.init(jax.random.PRNGKey(0), (10, 10, 4, 1))
  batch = helpers.random_transitions(batch_size=8)
  key = jax.random.PRNGKey(0)
  plain_loss, _ = agent.loss(state.params, state.params, batch, key)
  weight = jnp.linspace(0.1, 1.0, 8)
  weighted = batch._replace(weight=weight)
  loss, _ = agent.loss(state.params, state.params, weighted, key)
  # The prioritized update's per-sample losses (d loss / d weight * B), against the
  # loss of each transition alone.
  update = learner.make_update(agent.loss, agent.optimizer, agent.target_update_period)
  state = state.replace(target_params=state.params)
  _, _, per_sample = update(state, weighted, key, key, with_per_sample=True)
  alone = [float(agent.loss(state.params, state.params,
                            jax.tree.map(lambda x, i=i: x[i:i + 1], batch), key)[0])
           for i in range(8)]
  np.testing.assert_allclose(per_sample, alone, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.mean(alone), plain_loss, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(np.asarray(weight) * np.asarray(alone)), rtol=1e-5)


@pytest.fixture
def clear_gin():
  yield
  gin.clear_config()


def test_online_rainbow_on_minatar_updates_priorities(tmp_path, clear_gin):
  del clear_gin
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "rainbow.gin")], [
      "OnlineRunner.game = 'breakout'", "OnlineRunner.domain = 'minatar'",
      "MinAtarEnvironment.minimal_action_set = True", "C51Agent.network = @MinAtarDQNNetwork",
      "OnlineRunner.training_steps = 120", "OnlineRunner.num_iterations = 1",
      "OnlineRunner.evaluation_steps = 20", "OnlineRunner.min_replay_history = 40",
      "OnlineRunner.replay_capacity = 100", "OnlineRunner.updates_per_step = 1",
      "OnlineRunner.diagnostics_batch_size = 32", "C51Agent.batch_size = 8"])
  runner = registry.create_runner(base_dir=str(tmp_path / "run"))
  assert runner.prioritized_replay and runner.agent.update_horizon == 3
  metrics = runner.run()
  assert metrics["Train/GradientSteps"] == 80 and np.isfinite(metrics["Train/Loss"])
  assert "Rank/srank" in summary_writer.read_scalars(str(tmp_path / "run"))


def test_prioritized_replay_needs_a_weighting_agent(tmp_path, clear_gin):
  del clear_gin
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")], [
      "OnlineRunner.agent_fn = @BCAgent", "BCAgent.network = @MinAtarDQNNetwork",
      "OnlineRunner.prioritized_replay = True", "OnlineRunner.replay_capacity = 100",
      "OnlineRunner.min_replay_history = 10", "MinAtarEnvironment.minimal_action_set = True"])
  with pytest.raises(common.ConfigError, match="prioritized_replay"):
    registry.create_runner(base_dir=str(tmp_path / "never"))

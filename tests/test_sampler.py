"""The fixed-replay sampler against Dopamine's OutOfGraphReplayBuffer (the reference).

Same files, same indices: same valid-index set, stacks, n-step rewards, next states,
next actions and terminals, including at episode ends and around the write cursor.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dopamine.tf.replay_memory import circular_replay_buffer

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.replay import sampler
from batch_rl.datasets.replay_logger import ReplayLogger

GENUINE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "dqn_replay",
                       "Pong", "1", "replay_logs")
needs_genuine = pytest.mark.skipif(not os.path.isdir(GENUINE),
                                   reason="../shared/data is not beside the checkout")


def dopamine_buffer(replay_dir, suffix, frame_shape, capacity, stack_size, update_horizon=1,
                    gamma=0.99):
  buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=frame_shape, stack_size=stack_size, replay_capacity=capacity,
      batch_size=32, update_horizon=update_horizon, gamma=gamma)
  buffer.load(replay_dir, suffix)
  return buffer


def dopamine_valid(buffer):
  return np.array([i for i in range(buffer._replay_capacity) if buffer.is_valid_transition(i)])


def assert_same_transitions(ours: sampler.Transition, theirs, gamma, update_horizon):
  (state, action, reward, next_state, next_action, _next_reward, terminal, _indices) = theirs
  np.testing.assert_array_equal(np.asarray(ours.state), state)
  np.testing.assert_array_equal(np.asarray(ours.action), action)
  np.testing.assert_allclose(np.asarray(ours.reward), reward, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ours.next_state), next_state)
  np.testing.assert_array_equal(np.asarray(ours.next_action), next_action)
  np.testing.assert_array_equal(np.asarray(ours.terminal), terminal.astype(bool))
  np.testing.assert_allclose(np.asarray(ours.discount),
                             gamma**update_horizon * (1 - terminal.astype(np.float32)), rtol=1e-6)


def interesting_indices(valid, terminal, cursor, capacity, rng, n_random=40):
  """Valid indices next to every terminal and the cursor, plus random ones."""
  near = set()
  for t in np.flatnonzero(terminal):
    near.update(range(t - 3, t + 8))
  near.update(range(cursor - 6, cursor + 6))
  near.update(range(0, 6))
  near.update(range(capacity - 6, capacity))
  near = np.array(sorted(i % capacity for i in near))
  picked = np.intersect1d(near, valid)
  return np.unique(np.concatenate([picked, rng.choice(valid, n_random, replace=False)]))


@needs_genuine
@pytest.mark.parametrize("suffix", [0, 1, 2])
@pytest.mark.parametrize("update_horizon", [1, 3])
def test_genuine_shards_match_dopamine(suffix, update_horizon):
  gamma = 0.99
  data = fixed_replay.load_fixed_replay(GENUINE, suffixes=[suffix], stack_size=4,
                                        update_horizon=update_horizon)
  ref = dopamine_buffer(GENUINE, suffix, (84, 84), 10_000, 4, update_horizon, gamma)
  ours_valid = np.asarray(data.arrays.valid)
  if update_horizon == 1:
    np.testing.assert_array_equal(ours_valid, dopamine_valid(ref))
  else:
    # Dopamine keeps the loaded (n=1) invalid range, so for n > 1 it would also let a
    # trajectory run into the cursor; ours additionally drops those n-1 indices.
    extra = np.setdiff1d(dopamine_valid(ref), ours_valid)
    assert np.all(np.isin(extra, (ref.cursor() - np.arange(1, update_horizon + 1)) % 10_000))
    assert np.all(np.isin(ours_valid, dopamine_valid(ref)))
  rng = np.random.default_rng(suffix)
  indices = interesting_indices(ours_valid, ref._store["terminal"], ref.cursor(), 10_000, rng)
  ours = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(indices),
                                    stack_size=4, update_horizon=update_horizon, gamma=gamma)
  theirs = ref.sample_transition_batch(batch_size=len(indices), indices=indices)
  assert_same_transitions(ours, theirs, gamma, update_horizon)
  assert np.asarray(ours.terminal).any(), "the chosen indices should include episode ends"


@needs_genuine
def test_stale_entries_of_partial_shard_are_never_sampled():
  # Suffix 2 has add_count 5,695: entries 5,695.. are leftovers of suffix 1.
  data = fixed_replay.load_fixed_replay(GENUINE, suffixes=[2], stack_size=4)
  valid = np.asarray(data.arrays.valid)
  assert valid.max() < 5695 - 1 and valid.min() >= 3
  batch = sampler.sample_indices(jax.random.PRNGKey(0), jax.device_put(data.arrays), 4096)
  assert np.all(np.asarray(batch) < 5694)


def log_tagged_episodes(tmp_path, episode_lengths, capacity, stack_size, frame_shape):
  """Episodes whose frame, reward and action tag the step: frame t is filled with t % 251."""
  logger = ReplayLogger(str(tmp_path), frame_shape, capacity, stack_size=stack_size,
                        clip_rewards=False)
  ref = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=frame_shape, stack_size=stack_size, replay_capacity=capacity,
      batch_size=8)
  t = 0
  for length in episode_lengths:
    for k in range(length):
      t += 1
      frame = np.full(frame_shape, t % 251, np.uint8)
      terminal = k == length - 1
      logger.add(frame, t % 7, float(t), terminal)
      ref.add(frame, t % 7, float(t), terminal)
  return logger, ref


@pytest.mark.parametrize("stack_size,frame_shape", [(4, (6, 5)), (1, (10, 10, 3))])
def test_logger_matches_dopamine_add_and_sampler_matches_dopamine(tmp_path, stack_size,
                                                                   frame_shape):
  capacity = 97
  # 130 + padding > capacity: the buffer wraps and the saved shard is full.
  logger, ref = log_tagged_episodes(tmp_path, [5, 1, 30, 2, 40, 3, 25, 7, 9], capacity,
                                    stack_size, frame_shape)
  # ReplayLogger's buffer is Dopamine's add() buffer, zero padding included.
  for key in ("observation", "action", "reward", "terminal"):
    np.testing.assert_array_equal(getattr(logger, key), ref._store[key])
  assert logger.add_count == int(ref.add_count)
  assert logger.suffixes_written == [0]  # written when the add count reached capacity

  data = fixed_replay.load_fixed_replay(str(tmp_path), stack_size=stack_size, update_horizon=2)
  loaded = dopamine_buffer(str(tmp_path), 0, frame_shape, capacity, stack_size, 2, gamma=0.9)
  valid = np.asarray(data.arrays.valid)
  assert set(valid) <= set(dopamine_valid(loaded))
  ours = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(valid),
                                    stack_size=stack_size, update_horizon=2, gamma=0.9)
  theirs = loaded.sample_transition_batch(batch_size=len(valid), indices=valid)
  assert_same_transitions(ours, theirs, 0.9, 2)


def test_tagged_stacks_are_consecutive_and_cut_at_episode_start(tmp_path):
  # Independent of Dopamine: check the semantics on tagged data directly. The logger
  # only writes full shards, so this partially filled one is written explicitly.
  lg, _ = log_tagged_episodes(tmp_path, [6, 8, 50], 200, 4, (2, 2))
  fmt.write_shard(str(tmp_path), 0, observation=lg.observation, action=lg.action,
                  reward=lg.reward, terminal=lg.terminal, add_count=lg.add_count)
  data = fixed_replay.load_fixed_replay(str(tmp_path), stack_size=4, update_horizon=1)
  valid = np.asarray(data.arrays.valid)
  batch = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(valid),
                                     stack_size=4, gamma=0.5)
  tags = np.asarray(batch.state)[:, 0, 0, :]        # [M, 4] frame tags of each stack
  rewards = np.asarray(batch.reward)                # reward t tags step t
  for tag_row, r, term in zip(tags, rewards, np.asarray(batch.terminal)):
    t = int(r)
    assert tag_row[-1] == t % 251                   # newest frame is the state's own
    nonzero = tag_row[tag_row > 0]
    # earlier frames are consecutive steps of the same episode, zeros before its start
    np.testing.assert_array_equal(nonzero, np.arange(t - len(nonzero) + 1, t + 1) % 251)
  # Episode starts (steps 1, 7, 15) have zero-padded stacks: [0, 0, 0, t].
  firsts = tags[np.isin(rewards, [1.0, 7.0, 15.0])]
  np.testing.assert_array_equal(firsts[:, :3], 0)
  # Terminal transitions: steps 6, 14 (and 64 is cut by the cursor).
  assert set(rewards[np.asarray(batch.terminal)]) == {6.0, 14.0}


def test_uniform_over_valid_indices():
  capacity, n_valid = 64, 20
  valid = np.sort(np.random.default_rng(0).choice(capacity, n_valid, replace=False))
  data = sampler.ReplayArrays(
      observation=jnp.zeros((1, capacity, 2, 2), jnp.uint8), action=jnp.zeros((1, capacity), jnp.int32),
      reward=jnp.zeros((1, capacity)), terminal=jnp.zeros((1, capacity), jnp.uint8),
      valid=jnp.asarray(valid, jnp.int32))
  draws = np.asarray(jax.jit(sampler.sample_indices, static_argnums=2)(
      jax.random.PRNGKey(1), data, 40_000))
  assert set(np.unique(draws)) == set(valid)
  counts = np.bincount(draws, minlength=capacity)[valid]
  expected = 40_000 / n_valid
  # Multinomial counts: each within 5 standard deviations of uniform.
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected * (1 - 1 / n_valid)))


def test_data_fraction_is_deterministic_subset(tmp_path):
  lg, _ = log_tagged_episodes(tmp_path, [40] * 12, 500, 4, (3, 3))
  fmt.write_shard(str(tmp_path), 0, observation=lg.observation, action=lg.action,
                  reward=lg.reward, terminal=lg.terminal, add_count=lg.add_count)
  full = np.asarray(fixed_replay.load_fixed_replay(str(tmp_path), stack_size=4).arrays.valid)
  a = np.asarray(fixed_replay.load_fixed_replay(str(tmp_path), stack_size=4, data_fraction=0.2,
                                                seed=3).arrays.valid)
  b = np.asarray(fixed_replay.load_fixed_replay(str(tmp_path), stack_size=4, data_fraction=0.2,
                                                seed=3).arrays.valid)
  c = np.asarray(fixed_replay.load_fixed_replay(str(tmp_path), stack_size=4, data_fraction=0.2,
                                                seed=4).arrays.valid)
  assert len(a) == round(0.2 * len(full))
  assert set(a) <= set(full)
  np.testing.assert_array_equal(a, b)
  assert set(a) != set(c)


def test_checkpoint_choice(tmp_path):
  available = [0, 1, 2, 3, 4, 5]
  a = fixed_replay.choose_suffixes(available, None, 3, seed=7, replay_dir="d")
  assert a == fixed_replay.choose_suffixes(available, None, 3, seed=7, replay_dir="d")
  assert len(a) == 3 and set(a) <= set(available)
  assert fixed_replay.choose_suffixes(available, [4, 0], None, 0, "d") == [0, 4]
  assert fixed_replay.choose_suffixes(available, None, None, 0, "d") == available
  with pytest.raises(ValueError, match=r"\[9\].*available"):
    fixed_replay.choose_suffixes(available, [9], None, 0, "d")
  with pytest.raises(ValueError, match="num_checkpoints"):
    fixed_replay.choose_suffixes(available, None, 7, 0, "d")


def forward_return(reward, terminal, order, start_pos, gamma):
  """Walks forward in time order from position start_pos to the episode's end."""
  g, discount = 0.0, 1.0
  for pos in range(start_pos, len(order)):
    i = order[pos]
    g += discount * reward[i]
    if terminal[i]:
      break
    discount *= gamma
  return g


@pytest.mark.parametrize("episodes,capacity", [([5, 1, 30, 2, 40, 3, 25, 7, 9], 97),
                                               ([6, 8, 50], 200)])
def test_returns_to_go_match_a_forward_walk(tmp_path, episodes, capacity):
  # [5, 1, ...] with capacity 97 wraps (full, cursor mid-buffer); [6, 8, 50] in 200 is
  # partial. Rewards are the step tags, so every return is distinct.
  lg, _ = log_tagged_episodes(tmp_path, episodes, capacity, 4, (2, 2))
  fmt.write_shard(str(tmp_path / "x"), 0, observation=lg.observation, action=lg.action,
                  reward=lg.reward, terminal=lg.terminal, add_count=lg.add_count)
  data = fixed_replay.load_fixed_replay(str(tmp_path / "x"), stack_size=4, gamma=0.9)
  full = lg.add_count >= capacity
  cursor = lg.add_count % capacity
  order = [(cursor + k) % capacity for k in range(capacity)] if full else list(range(cursor))
  got = np.asarray(data.arrays.return_to_go)[0]
  for pos, i in enumerate(order):
    expected = forward_return(lg.reward, lg.terminal, order, pos, 0.9)
    np.testing.assert_allclose(got[i], expected, rtol=1e-5, err_msg=f"index {i}")
  # The sampler hands them out with the transition.
  valid = np.asarray(data.arrays.valid)
  batch = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(valid),
                                     stack_size=4)
  np.testing.assert_array_equal(np.asarray(batch.return_to_go), got[valid])

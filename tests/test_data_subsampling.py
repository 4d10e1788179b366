"""Named subsampling schemes, on tagged data whose step t is written in reward t.

Episode boundaries and time order are known from the tags, independently of the code
under test; validity comes from Dopamine's OutOfGraphReplayBuffer.is_valid_transition.
"""
import gin
import numpy as np
import pytest
from dopamine.tf.replay_memory import circular_replay_buffer

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import subsampling
from batch_rl.datasets.replay_logger import ReplayLogger

FRAME = (3, 3)


def write_tagged(replay_dir, episode_lengths, capacity, stack_size=4, final_suffix=None):
  """Logs tagged episodes (frame t % 251, action t % 7, reward t); returns per-step episode.

  The logger writes a full shard every `capacity` adds (suffixes 0, 1, ...); with
  `final_suffix` the unsaved remainder is written too (a partial shard). Returns
  {t: episode number}.
  """
  logger = ReplayLogger(str(replay_dir), FRAME, capacity, stack_size=stack_size,
                        clip_rewards=False)
  episode_of, t = {}, 0
  for e, length in enumerate(episode_lengths):
    for k in range(length):
      t += 1
      episode_of[t] = e
      logger.add(np.full(FRAME, t % 251, np.uint8), t % 7, float(t), k == length - 1)
  if final_suffix is not None:
    fmt.write_shard(str(replay_dir), final_suffix, observation=logger.observation,
                    action=logger.action, reward=logger.reward, terminal=logger.terminal,
                    add_count=logger.add_count, stack_size=stack_size)
  return episode_of


def dopamine_valid(replay_dir, suffix, capacity, stack_size=4, update_horizon=1):
  buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=FRAME, stack_size=stack_size, replay_capacity=capacity, batch_size=8,
      update_horizon=update_horizon)
  buffer.load(str(replay_dir), suffix)
  return np.array([i for i in range(capacity) if buffer.is_valid_transition(i)]), buffer


def kept_steps(data):
  """Step tags t of the kept states (reward t tags step t)."""
  valid = np.asarray(data.arrays.valid)
  return np.asarray(data.arrays.reward).reshape(-1)[valid].astype(int)


def load(path, **kw):
  return fixed_replay.load_fixed_replay(str(path), stack_size=4, **kw)


# Three chronological checkpoints: two full ones written by the logger, a partial one.
EPISODES = [23, 7, 41, 2, 30, 55, 12, 19, 33, 8, 27, 44, 5, 36, 21]
CAPACITY = 150


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
  path = tmp_path_factory.mktemp("tagged")
  episode_of = write_tagged(path, EPISODES, CAPACITY, final_suffix=2)
  assert fmt.list_suffixes(str(path)) == [0, 1, 2]
  return path, episode_of


def test_default_is_the_historical_data_fraction(tagged):
  # The recipe data_fraction always used, rebuilt on Dopamine's valid sets.
  path, _ = tagged
  data = load(path, data_fraction=0.3, seed=5)
  expected = []
  for slot, suffix in enumerate([0, 1, 2]):
    valid, _ = dopamine_valid(path, suffix, CAPACITY)
    rng = np.random.default_rng([5, 1, suffix])
    pick = np.sort(rng.choice(valid, max(1, int(round(0.3 * valid.size))), replace=False))
    expected.append(pick + slot * CAPACITY)
  np.testing.assert_array_equal(np.asarray(data.arrays.valid), np.concatenate(expected))
  explicit = load(path, data_fraction=0.3, seed=5, subsample="uniform_transitions")
  np.testing.assert_array_equal(explicit.arrays.valid, data.arrays.valid)


@pytest.mark.parametrize("scheme", subsampling.SCHEMES)
def test_full_size_keeps_everything_and_is_deterministic(tagged, scheme):
  path, _ = tagged
  full = np.asarray(load(path).arrays.valid)
  np.testing.assert_array_equal(load(path, subsample=scheme).arrays.valid, full)
  a = np.asarray(load(path, subsample=scheme, data_fraction=0.25, seed=1).arrays.valid)
  b = np.asarray(load(path, subsample=scheme, data_fraction=0.25, seed=1).arrays.valid)
  np.testing.assert_array_equal(a, b)
  assert set(a) < set(full)


def trajectories(data, episode_of):
  """(checkpoint slot, episode) of each kept state: an episode cut by a checkpoint
  boundary is one trajectory per checkpoint."""
  slots = np.asarray(data.arrays.valid) // CAPACITY
  return [(int(s), episode_of[t]) for s, t in zip(slots, kept_steps(data))]


def test_uniform_trajectories_keeps_whole_episodes(tagged):
  path, episode_of = tagged
  full = trajectories(load(path), episode_of)
  sizes = {k: full.count(k) for k in set(full)}
  target = int(round(0.3 * len(full)))
  picks = []
  for seed in (0, 1):
    kept = trajectories(load(path, subsample="uniform_trajectories", data_fraction=0.3,
                             seed=seed), episode_of)
    chosen = set(kept)
    # Whole episodes: every valid state of a chosen trajectory, none of the others.
    assert sorted(kept) == sorted(k for k in full if k in chosen)
    assert target <= len(kept) < target + max(sizes.values())
    picks.append(chosen)
  assert picks[0] != picks[1]


def test_checkpoint_prefix_is_the_start_of_each_file(tagged):
  path, _ = tagged
  data = load(path, subsample="checkpoint_prefix", num_transitions=90)
  valid = np.asarray(data.arrays.valid)
  sizes = []
  for slot, suffix in enumerate([0, 1, 2]):
    ref, _ = dopamine_valid(path, suffix, CAPACITY)
    mine = valid[(valid >= slot * CAPACITY) & (valid < (slot + 1) * CAPACITY)] - slot * CAPACITY
    eligible = ref[ref >= 3]  # states whose stack does not wrap to the file's end
    np.testing.assert_array_equal(mine, eligible[:mine.size])
    sizes.append(mine.size)
  assert sum(sizes) == 90
  counts = [dopamine_valid(path, s, CAPACITY)[0].size for s in (0, 1, 2)]
  np.testing.assert_allclose(sizes, 90 * np.array(counts) / sum(counts), atol=1)


def test_first_fraction_is_the_earliest_data(tagged):
  path, _ = tagged
  full_steps = np.sort(kept_steps(load(path)))
  steps = np.sort(kept_steps(load(path, subsample="first_fraction", num_transitions=200)))
  np.testing.assert_array_equal(steps, full_steps[:200])


def test_first_fraction_follows_the_cursor_of_a_wrapped_checkpoint(tmp_path):
  # One full checkpoint whose cursor is mid-buffer: the oldest entry is at the cursor.
  write_tagged(tmp_path / "src", [5, 1, 30, 2, 40, 3, 25, 7, 9], 97, final_suffix=9)
  info = fmt.read_shard_info(str(tmp_path / "src"), 9)
  assert info.is_full and info.cursor not in (0, 96)
  full_steps = np.sort(kept_steps(load(tmp_path / "src", suffixes=[9])))
  steps = np.sort(kept_steps(load(tmp_path / "src", suffixes=[9], subsample="first_fraction",
                                  data_fraction=0.5)))
  np.testing.assert_array_equal(steps, full_steps[:int(round(0.5 * full_steps.size))])


def test_split_count():
  np.testing.assert_array_equal(subsampling.split_count(10, [1, 1, 1]), [4, 3, 3])
  np.testing.assert_array_equal(subsampling.split_count(7, [0, 5, 2]), [0, 5, 2])
  assert subsampling.split_count(1000, [3, 7, 11]).sum() == 1000


def test_bad_bindings_name_themselves(tagged):
  path, _ = tagged
  with pytest.raises(ValueError, match=r"load_fixed_replay.subsample.*'first_10'.*first_fraction"):
    load(path, subsample="first_10")
  with pytest.raises(ValueError, match="at most one of .*data_fraction.*num_transitions"):
    load(path, data_fraction=0.5, num_transitions=10)
  with pytest.raises(ValueError, match=r"num_transitions.*\[1, "):
    load(path, num_transitions=10**6)


def test_gin_binding(tagged):
  path, _ = tagged
  gin.clear_config()
  try:
    gin.parse_config([f"load_fixed_replay.replay_dir = '{path}'",
                      "load_fixed_replay.subsample = 'first_fraction'",
                      "load_fixed_replay.num_transitions = 50"])
    data = fixed_replay.load_fixed_replay(stack_size=4)
  finally:
    gin.clear_config()
  assert data.subsample == "first_fraction" and data.num_transitions == 50
  assert "first_fraction" in data.describe()

"""Tests for batch_rl.environments.minatar."""
import gin
import minatar
import numpy as np
import pytest

from batch_rl.environments.factory import Environment, create_environment
from batch_rl.environments.minatar import GAMES, MinAtarEnvironment

# (channels, minimal action set as MinAtar indices into 'n','l','u','r','d','f').
EXPECTED = {
    "asterix": (4, (0, 1, 2, 3, 4)),
    "breakout": (4, (0, 1, 3)),
    "freeway": (7, (0, 2, 4)),
    "seaquest": (10, (0, 1, 2, 3, 4, 5)),
    "space_invaders": (6, (0, 1, 3, 5)),
}


def _rollout(env, num_steps, action_seed=0):
  """Frames uint8 [num_steps + resets + 1, 10, 10, C] and the rewards, resetting on terminal."""
  actions = np.random.default_rng(action_seed).integers(env.num_actions, size=num_steps)
  frames, rewards = [env.reset()], []
  for action in actions:
    frame, reward, terminal, _ = env.step(action)
    frames.append(frame)
    rewards.append(reward)
    if terminal:
      frames.append(env.reset())
  return np.stack(frames), rewards


@pytest.mark.parametrize("game", GAMES)
def test_shapes_dtypes_and_actions(game):
  channels, minimal = EXPECTED[game]
  env = MinAtarEnvironment(game, seed=0, minimal_action_set=True)
  assert isinstance(env, Environment)
  assert env.observation_shape == (10, 10, channels)
  assert env.stack_size == 1
  assert (env.num_actions, env.action_set) == (len(minimal), minimal)
  full = MinAtarEnvironment(game)  # the default is Dopamine's: all 6 actions
  assert (full.num_actions, full.action_set) == (6, (0, 1, 2, 3, 4, 5))
  frames, rewards = _rollout(env, 100)
  assert frames.dtype == np.uint8 and frames.shape[1:] == (10, 10, channels)
  assert set(np.unique(frames)) <= {0, 1} and frames.any()
  assert all(type(r) is float for r in rewards)


@pytest.mark.parametrize("game", GAMES)
def test_same_seed_same_trajectory_different_seed_differs(game):
  # 300 steps span several episodes in most games, so resets are covered too.
  frames_a, rewards_a = _rollout(MinAtarEnvironment(game, seed=7), 300)
  frames_b, rewards_b = _rollout(MinAtarEnvironment(game, seed=7), 300)
  np.testing.assert_array_equal(frames_a, frames_b)
  assert rewards_a == rewards_b
  frames_c, _ = _rollout(MinAtarEnvironment(game, seed=8), 300)
  assert frames_a.shape != frames_c.shape or not np.array_equal(frames_a, frames_c)


def test_seed_controls_sticky_actions_not_global_numpy():
  # One seed drives both the game's randomness and the sticky-action draws; the global
  # np.random state must play no part.
  # 20 steps 'up' then 20 'down', repeated: a sticky repeat at a switch moves the
  # chicken the wrong way, so sticky actions visibly change the trajectory.
  actions = ([1] * 20 + [2] * 20) * 3

  def rollout(seed, sticky, global_seed):  # Frames uint8 [120, 10, 10, 7].
    np.random.seed(global_seed)  # Must have no effect: MinAtar has to use our seed.
    env = MinAtarEnvironment("freeway", seed=seed, sticky_action_prob=sticky)
    env.reset()
    return np.stack([env.step(a)[0] for a in actions])

  saved = np.random.get_state()
  try:
    reference = rollout(0, 0.5, global_seed=1)
    np.testing.assert_array_equal(reference, rollout(0, 0.5, global_seed=2))
    assert not np.array_equal(reference, rollout(1, 0.5, global_seed=1))
    # Same seed, so the same cars: only the sticky repeats differ.
    assert not np.array_equal(reference, rollout(0, 0.0, global_seed=1))
  finally:
    np.random.set_state(saved)


def test_action_mapping_matches_minatar_minimal_action_set():
  # Agent action i must play minatar's minimal_action_set()[i]: compare with raw
  # MinAtar, seeded the same way, playing the mapped actions.
  env = MinAtarEnvironment("space_invaders", seed=3, minimal_action_set=True)
  raw = minatar.Environment("space_invaders", sticky_action_prob=0.1)
  raw.seed(3)
  raw_set = raw.minimal_action_set()
  np.testing.assert_array_equal(env.reset(), (raw.reset(), raw.state())[1])
  for action in np.random.default_rng(0).integers(env.num_actions, size=200):
    frame, reward, terminal, _ = env.step(action)
    raw_reward, raw_terminal = raw.act(raw_set[action])
    np.testing.assert_array_equal(frame, raw.state())
    assert (reward, terminal) == (raw_reward, raw_terminal)
    if terminal:
      env.reset(), raw.reset()

  # Behaviourally: in Breakout agent actions 1 and 2 are left and right.
  env = MinAtarEnvironment("breakout", seed=0, sticky_action_prob=0.0,
                           minimal_action_set=True)
  paddle = lambda frame: int(np.argmax(frame[9, :, 0]))  # Channel 0, bottom row.
  start = paddle(env.reset())
  assert paddle(env.step(1)[0]) == start - 1
  assert paddle(env.step(2)[0]) == start
  assert paddle(env.step(2)[0]) == start + 1


def test_truncation_and_terminal():
  # Freeway only ends after 2500 steps, so a short limit always truncates first.
  env = MinAtarEnvironment("freeway", seed=0, max_episode_steps=20)
  for _ in range(2):
    env.reset()
    flags = [env.step(1)[2:] for _ in range(20)]
    assert flags == [(False, False)] * 19 + [(False, True)]

  env = MinAtarEnvironment("breakout", seed=0)
  env.reset()
  for step in range(1, 1000):
    _, _, terminal, truncated = env.step(0)
    assert not truncated
    if terminal:
      break
  assert terminal and step < 1000


def test_unknown_game_and_factory():
  with pytest.raises(ValueError) as err:
    MinAtarEnvironment("Breakout")
  message = str(err.value).splitlines()[0]  # gin appends a line of its own.
  assert "'Breakout'" in message and "Did you mean 'breakout'" in message
  assert all(game in message for game in GAMES)

  env = create_environment("minatar:seaquest", seed=1, max_episode_steps=5)
  assert isinstance(env, MinAtarEnvironment)
  assert env.observation_shape == (10, 10, 10)
  with pytest.raises(ValueError, match="Unknown MinAtar game 'pong'"):
    create_environment("minatar:pong", seed=0)

  # Constructor kwargs can be bound in gin; explicit overrides still win.
  gin.parse_config(
      "MinAtarEnvironment.minimal_action_set = True\n"
      "MinAtarEnvironment.max_episode_steps = 2"
  )
  try:
    env = create_environment("minatar:breakout", seed=0, max_episode_steps=3)
  finally:
    gin.clear_config()
  assert env.num_actions == 3
  env.reset()
  assert [env.step(0)[3] for _ in range(3)] == [False, False, True]

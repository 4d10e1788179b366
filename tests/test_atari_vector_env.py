"""Tests for batch_rl.environments.atari_vector (ale-py's C++ AtariVectorEnv)."""
import sys
import types

import gin
import numpy as np
import pytest

from batch_rl import validation
from batch_rl.environments import atari_vector
from batch_rl.environments import factory
from batch_rl.environments.atari import AtariEnvironment, ale_seed, resolve_rom_id
from batch_rl.environments.atari_vector import AtariVectorEnvironments, atari_vector_env_class


def _actions(num_actions, shape, seed=0):
  return np.random.default_rng(seed).integers(num_actions, size=shape)


def _play_both(game, num_steps, vector_seed=0, python_seed=0, sticky_action_prob=0.0):
  """Plays one random action sequence in AtariEnvironment and a 1-env vector env.

  Yields per step (python (frame, reward, terminal, truncated), vector (...)), the
  Python env being reset by hand after an episode end, as the vector env resets
  itself, so that both frames are then the next episode's first.
  """
  python_env = AtariEnvironment(game, seed=python_seed, sticky_action_prob=sticky_action_prob)
  vector_env = AtariVectorEnvironments(game, [vector_seed],
                                       sticky_action_prob=sticky_action_prob)
  np.testing.assert_array_equal(vector_env.reset()[0], python_env.reset())
  for action in _actions(python_env.num_actions, num_steps):
    frame, reward, terminal, truncated = python_env.step(action)
    if terminal or truncated:
      frame = python_env.reset()
    frames, rewards, terminals, truncateds = vector_env.step(np.array([action]))
    yield ((frame, reward, terminal, truncated),
           (frames[0], rewards[0], terminals[0], truncateds[0]))
  vector_env.close()


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_interface_and_action_set_equal_python_env(game):
  env = AtariVectorEnvironments(game, [0, 1])
  python_env = AtariEnvironment(game)
  # Both ask the same ALE for getMinimalActionSet(): same actions, same order.
  assert env.action_set == python_env.action_set
  assert env.num_actions == python_env.num_actions
  assert env.observation_spec == python_env.observation_spec
  assert env.action_spec == python_env.action_spec
  assert (env.observation_shape, env.stack_size, env.num_envs) == ((84, 84), 4, 2)
  assert (env.rom_id, env.rom_md5, env.rom_warning) == (
      python_env.rom_id, python_env.rom_md5, python_env.rom_warning)
  assert "md5 " + env.rom_md5 in factory.describe_environment(f"atari:{game}", env)
  frames = env.reset()
  assert frames.shape == (2, 84, 84) and frames.dtype == np.uint8
  frames, rewards, terminals, truncated = env.step(np.zeros(2, np.int64))
  assert frames.shape == (2, 84, 84) and frames.dtype == np.uint8
  assert rewards.dtype == np.float64 and rewards.shape == (2,)
  assert terminals.dtype == bool and truncated.dtype == bool
  env.close()


def test_frames_equal_python_env():
  # The vector env's C++ preprocessing is atari.py's pipeline: the ALE palette's
  # grayscale, the max of the last two frames of a step, OpenCV's INTER_AREA resize to
  # 84x84; the frames agree exactly (no pixel differs), and so do rewards and
  # episode ends. The sequence runs through Breakout's game over: the frame after
  # it is the next game's first in both.
  terminals = 0
  for (frame, reward, terminal, truncated), vector in _play_both("Breakout", 300):
    assert (reward, terminal, truncated) == vector[1:]
    np.testing.assert_array_equal(frame, vector[0])
    terminals += terminal
  assert terminals >= 1


def test_rewards_unclipped():
  # Space Invaders scores 5 to 30 per invader: reward_clipping=False keeps the score.
  rewards = []
  for (_, reward, _, _), vector in _play_both("SpaceInvaders", 150):
    assert vector[1] == reward
    rewards.append(vector[1])
  assert max(rewards) > 1


def test_sticky_actions_match_python_env_with_its_ale_seed():
  # AtariEnvironment(seed=s) seeds its ALE with ale_seed(s): a vector env given that
  # ALE seed draws the same sticky actions and plays the same game.
  seed = next(s for s in range(100) if ale_seed(s) >= 0)
  for python, vector in _play_both("Pong", 200, vector_seed=ale_seed(seed),
                                   python_seed=seed, sticky_action_prob=0.25):
    assert python[1:] == vector[1:]
    np.testing.assert_array_equal(python[0], vector[0])


def test_episodes_depend_only_on_own_seed():
  # Env 1 of three (seeds a, b, c) against a lone env seeded b, same actions for it,
  # different ones for its neighbours: identical frames, rewards and episode ends.
  num_steps = 300
  trio = AtariVectorEnvironments("Breakout", [7, 11, 13], sticky_action_prob=0.25)
  solo = AtariVectorEnvironments("Breakout", [11], sticky_action_prob=0.25)
  actions = _actions(trio.num_actions, (num_steps, 3))
  np.testing.assert_array_equal(trio.reset()[1], solo.reset()[0])
  ends = 0
  for row in actions:
    trio_out = trio.step(row)
    solo_out = solo.step(row[1:2])
    for trio_value, solo_value in zip(trio_out, solo_out):
      np.testing.assert_array_equal(trio_value[1], solo_value[0])
    ends += trio_out[2][1]
  assert ends >= 1  # the comparison crossed an autoreset
  # Seeding is per environment: another seed plays differently.
  other = AtariVectorEnvironments("Breakout", [12], sticky_action_prob=0.25)
  other.reset()
  differs = False
  for row in actions[:100]:
    differs |= not np.array_equal(other.step(row[1:2])[0][0], solo.step(row[1:2])[0][0])
  assert differs


def test_reset_reseeds():
  env = AtariVectorEnvironments("Pong", [5])
  actions = _actions(env.num_actions, (60, 1))
  runs = []
  for _ in range(2):
    env.reset()
    runs.append(np.stack([env.step(row)[0] for row in actions]))
  np.testing.assert_array_equal(runs[0], runs[1])


def test_truncation_after_exactly_max_episode_steps():
  max_steps = 50
  env = AtariVectorEnvironments("Pong", [0, 1], sticky_action_prob=0.0,
                                max_episode_steps=max_steps)
  first_frames = env.reset()
  actions = _actions(env.num_actions, (2 * max_steps, 2))
  for step, row in enumerate(actions, start=1):
    frames, _, terminals, truncated = env.step(row)
    assert not terminals.any()  # no Pong game ends in 50 steps
    expected = step % max_steps == 0
    assert truncated.tolist() == [expected, expected], step
    np.testing.assert_array_equal(env.episode_steps, [step % max_steps] * 2)
    if expected:
      # SameStep autoreset: the truncating step returns the next episode's first
      # frame, which for Pong without sticky actions is the game's start screen.
      np.testing.assert_array_equal(frames, first_frames)


def test_truncated_frame_is_python_env_reset_frame():
  # Each episode of the 1-env vector env ends after 20 steps, as the Python env's
  # truncated flag says; the vector env's frame then is the Python env's after reset().
  python_env = AtariEnvironment("Breakout", sticky_action_prob=0.0, max_episode_steps=20)
  vector_env = AtariVectorEnvironments("Breakout", [0], sticky_action_prob=0.0,
                                       max_episode_steps=20)
  python_env.reset()
  vector_env.reset()
  for step, action in enumerate(_actions(4, 45), start=1):
    frame, reward, terminal, truncated = python_env.step(action)
    frames, rewards, terminals, truncateds = vector_env.step(np.array([action]))
    assert (reward, terminal, truncated) == (rewards[0], terminals[0], truncateds[0])
    assert truncated == (step % 20 == 0)
    if truncated:
      frame = python_env.reset()
    np.testing.assert_array_equal(frame, frames[0])


def test_terminal_on_life_loss_restarts_the_game():
  # The vector env's episodic life ends the episode at a lost life and starts a new
  # game (5 lives again), unlike Dopamine, which plays the same game on.
  env = AtariVectorEnvironments("Breakout", [0], sticky_action_prob=0.0,
                                terminal_on_life_loss=True)
  env.reset()
  assert env.lives.tolist() == [5]
  terminals = 0
  for row in _actions(env.num_actions, (100, 1)):
    terminals += env.step(row)[2][0]
    assert env.lives.tolist() == [5]
  assert terminals >= 2


def test_unknown_game_message_lists_valid_games():
  with pytest.raises(ValueError) as err:
    AtariVectorEnvironments("Pongg", [0])
  message = str(err.value).splitlines()[0]
  assert "'Pongg'" in message and "Did you mean 'Pong'" in message
  for game in ("Pong", "SpaceInvaders", "MsPacman", "YarsRevenge"):
    assert game in message
  with pytest.raises(ValueError) as python_err:
    resolve_rom_id("Pongg")
  assert message == str(python_err.value)
  assert AtariVectorEnvironments("space_invaders", [0]).game == "SpaceInvaders"


def test_invalid_arguments_rejected():
  with pytest.raises(ValueError, match="seeds"):
    AtariVectorEnvironments("Pong", [])
  with pytest.raises(ValueError, match=r"\[-1\]"):
    AtariVectorEnvironments("Pong", [0, -1])
  with pytest.raises(ValueError, match="frame_skip"):
    AtariVectorEnvironments("Pong", [0], frame_skip=0)
  env = AtariVectorEnvironments("Pong", [0, 1])
  with pytest.raises(RuntimeError, match="reset"):
    env.step(np.zeros(2, np.int64))
  env.reset()
  with pytest.raises(ValueError, match=r"\[0, 6\)"):
    env.step(np.array([0, 6]))
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    env.step(np.zeros(3, np.int64))


def test_vector_env_configured_as_dopamine_evaluation(monkeypatch):
  real_class = atari_vector_env_class()
  calls = []

  def recording_class(*args, **kwargs):
    calls.append((args, kwargs))
    return real_class(*args, **kwargs)

  monkeypatch.setattr(atari_vector, "atari_vector_env_class", lambda: recording_class)
  env = AtariVectorEnvironments("Pong", [0, 1], sticky_action_prob=0.1, frame_skip=3,
                                max_episode_steps=7, terminal_on_life_loss=True)
  (args, kwargs), = calls
  assert args == ("pong", 2)
  assert kwargs == dict(
      num_threads=0, repeat_action_probability=0.1, frameskip=3, maxpool=True,
      grayscale=True, img_height=84, img_width=84, stack_num=1, noop_max=0,
      use_fire_reset=False, episodic_life=True, reward_clipping=False,
      max_num_frames_per_episode=21, autoreset_mode="SameStep", full_action_space=False)
  assert env.reset().shape == (2, 84, 84)


def test_evaluation_builds_it_with_the_atari_environments_bindings():
  """One place configures the protocol: AtariEnvironment's gin bindings reach the
  vector env that the evaluation steps."""
  from batch_rl.environments import evaluation  # pylint: disable=g-import-not-at-top
  gin.parse_config("AtariEnvironment.max_episode_steps = 3")
  try:
    env = evaluation.create_environments("atari:Pong", [0])
  finally:
    gin.clear_config()
  assert isinstance(env, AtariVectorEnvironments)
  env.reset()
  assert [env.step(np.zeros(1, np.int64))[3][0] for _ in range(3)] == [False, False, True]
  env.close()


def test_missing_vector_env_is_config_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "ale_py.vector_env", None)
  with pytest.raises(validation.ConfigError) as err:
    atari_vector_env_class()
  message = str(err.value)
  assert "ale_py.vector_env.AtariVectorEnv" in message
  assert "ale-py 0.12" in message and "0.11" in message
  import ale_py  # pylint: disable=g-import-not-at-top
  assert ale_py.__version__ in message
  with pytest.raises(validation.ConfigError):
    AtariVectorEnvironments("Pong", [0])


def test_vector_env_without_same_step_autoreset_is_config_error(monkeypatch):
  # ale-py 0.11.0's AtariVectorEnv had no autoreset_mode argument.
  class OldAtariVectorEnv:

    def __init__(self, game, num_envs, repeat_action_probability=0.0):
      pass

  old_module = types.ModuleType("ale_py.vector_env")
  old_module.AtariVectorEnv = OldAtariVectorEnv
  monkeypatch.setitem(sys.modules, "ale_py.vector_env", old_module)
  with pytest.raises(validation.ConfigError, match="'SameStep' autoreset"):
    atari_vector_env_class()

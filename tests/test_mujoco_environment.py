"""The `mujoco:` family (batch_rl/environments/mujoco_env.py): gymnasium's MuJoCo tasks
with continuous action specs, checked against gymnasium's own environments."""
import gymnasium
import numpy as np
import pytest

from batch_rl.environments import factory, specs

SHAPES = {"HalfCheetah-v5": ((17,), (6,)), "Hopper-v5": ((11,), (3,)),
          "Walker2d-v5": ((17,), (6,)), "Ant-v5": ((105,), (8,))}


@pytest.mark.parametrize("game", sorted(SHAPES))
def test_specs_are_the_tasks(game):
  env = factory.create_environment(f"mujoco:{game}", seed=0)
  observation_shape, action_shape = SHAPES[game]
  assert env.observation_spec == specs.ObservationSpec(observation_shape, np.float32)
  assert isinstance(env.action_spec, specs.BoxActionSpec)
  assert env.action_spec.shape == action_shape
  np.testing.assert_array_equal(env.action_spec.low_array, -np.ones(action_shape))
  np.testing.assert_array_equal(env.action_spec.high_array, np.ones(action_shape))
  assert env.stack_size == 1
  with pytest.raises(AttributeError, match="continuous actions"):
    env.num_actions  # pylint: disable=pointless-statement


def actions(n, size, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size)).astype(np.float32)


def test_episodes_are_gymnasiums_own():
  """The same seed and actions give gymnasium's observations, rewards and ends."""
  env = factory.create_environment("mujoco:Hopper-v5", seed=3)
  reference = gymnasium.make("Hopper-v5")
  np.testing.assert_array_equal(env.reset(), reference.reset(seed=3)[0].astype(np.float32))
  ends = 0
  for action in actions(400, 3):
    observation, reward, terminal, truncated = env.step(action)
    ref_observation, ref_reward, ref_terminal, ref_truncated, _ = reference.step(action)
    np.testing.assert_array_equal(observation, ref_observation.astype(np.float32))
    assert (reward, terminal, truncated) == (ref_reward, ref_terminal, ref_truncated)
    if terminal or truncated:
      ends += 1
      np.testing.assert_array_equal(env.reset(), reference.reset()[0].astype(np.float32))
  assert ends >= 2  # random actions make Hopper fall within 400 steps: resets are checked


def test_snapshot_continues_exactly_mid_episode_and_across_resets():
  env = factory.create_environment("mujoco:Walker2d-v5", seed=1)
  env.reset()
  for action in actions(7, 6, seed=1):
    env.step(action)
  copy = factory.create_environment("mujoco:Walker2d-v5", seed=99)
  copy.restore(env.snapshot())
  for action in actions(300, 6, seed=2):
    a, b = env.step(action), copy.step(action)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]
    if a[2] or a[3]:
      np.testing.assert_array_equal(env.reset(), copy.reset())


def test_truncation_at_the_step_limit():
  env = factory.create_environment("mujoco:HalfCheetah-v5", seed=0, max_episode_steps=5)
  env.reset()
  ends = [env.step(np.zeros(6, np.float32))[2:] for _ in range(5)]
  assert ends == [(False, False)] * 4 + [(False, True)]


@pytest.mark.parametrize("action, message", [
    (np.zeros(2, np.float32), r"shape \(3,\)"),
    (np.array([0.0, 1.5, 0.0], np.float32), "outside the action box"),
    (np.array([0.0, np.nan, 0.0], np.float32), "not finite")])
def test_bad_actions_are_refused(action, message):
  env = factory.create_environment("mujoco:Hopper-v5", seed=0)
  env.reset()
  with pytest.raises(ValueError, match=message):
    env.step(action)


def test_unknown_task_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"Did you mean 'Hopper-v5'.*Valid games: "
                                       r"HalfCheetah-v5, Hopper-v5, Walker2d-v5, Ant-v5"):
    factory.create_environment("mujoco:Hopper-v2", seed=0)
  with pytest.raises(ValueError, match="'mujoco'"):
    factory.create_environment("mujoco_:Hopper-v5", seed=0)

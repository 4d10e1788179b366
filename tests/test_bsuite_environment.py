"""bsuite's catch, cartpole and mountain_car behind the Environment contract, and
bsuite's score checked against bsuite's own analysis code."""
import numpy as np
import pandas as pd
import pytest

from batch_rl.environments import evaluation, factory
from batch_rl.environments.bsuite_env import GAMES, BsuiteEnvironment, bsuite_score

SHAPES = {"catch": (10, 5), "cartpole": (1, 6), "mountain_car": (1, 3)}


def _episode(env, rng):
  frames, done = [env.reset()], False
  while not done:
    frame, reward, terminal, truncated = env.step(int(rng.integers(env.num_actions)))
    frames.append(frame)
    done = terminal or truncated
  return np.stack(frames), reward, terminal


@pytest.mark.parametrize("game", GAMES)
def test_specs_and_an_episode(game):
  env = factory.create_environment(f"bsuite:{game}", seed=3)
  assert isinstance(env, factory.Environment)
  assert env.observation_spec.shape == SHAPES[game]
  assert env.observation_spec.dtype == np.float32
  assert env.num_actions == 3 and env.stack_size == 1
  frames, _, terminal = _episode(env, np.random.default_rng(0))
  assert frames.dtype == np.float32 and frames.shape[1:] == SHAPES[game]
  assert terminal  # the three tasks end with discount 0
  if game == "catch":
    assert len(frames) == 10  # the first frame and 9 steps
    assert frames[0].sum() == 2.0  # the ball and the paddle


def test_seeded_episodes_repeat_and_snapshots_continue_exactly():
  def rollout(env, n):
    rng, out = np.random.default_rng(1), []
    env.reset()
    for _ in range(n):
      frame, reward, terminal, truncated = env.step(int(rng.integers(3)))
      out.append((frame.copy(), reward))
      if terminal or truncated:
        env.reset()
    return out

  a, b = BsuiteEnvironment("catch", seed=5), BsuiteEnvironment("catch", seed=5)
  for (fa, ra), (fb, rb) in zip(rollout(a, 40), rollout(b, 40)):
    np.testing.assert_array_equal(fa, fb)
    assert ra == rb
  env = BsuiteEnvironment("cartpole", seed=2)
  env.reset()
  for _ in range(5):
    env.step(0)
  saved = env.snapshot()
  first = [env.step(2) for _ in range(20)]
  env.restore(saved)
  again = [env.step(2) for _ in range(20)]
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x[0], y[0])
    assert x[1:] == y[1:]


def test_unknown_game_lists_the_valid_ones():
  with pytest.raises(ValueError, match="Did you mean 'catch'.*catch, cartpole, mountain_car"):
    factory.create_environment("bsuite:cacth", seed=0)
  with pytest.raises(ValueError, match="family one of.*'bsuite'"):
    factory.create_environment("bsuit:catch", seed=0)


def _bsuite_reference_score(game, returns):
  """bsuite's own `analysis.score` on the results log an agent with these episode
  returns would have written (cumulative columns, one row per episode)."""
  from bsuite.experiments.cartpole import analysis as cartpole_analysis
  from bsuite.experiments.catch import analysis as catch_analysis
  from bsuite.experiments.mountain_car import analysis as mountain_car_analysis
  returns = np.asarray(returns, float)
  df = pd.DataFrame({"episode": np.arange(1, len(returns) + 1),
                     "raw_return": np.cumsum(returns), "bsuite_id": f"{game}/0"})
  if game == "catch":
    df["total_regret"] = np.cumsum(1.0 - returns)
    return catch_analysis.score(df)
  if game == "cartpole":
    df["best_episode"] = np.maximum.accumulate(returns)
    return cartpole_analysis.score(df)
  return mountain_car_analysis.score(df)


@pytest.mark.parametrize("game,returns", [
    ("catch", [1, 1, -1, 1, -1, 1]),
    ("catch", [-1, -1, -1]),
    ("catch", [1] * 7),
    ("cartpole", [1000, 120, 45]),
    ("cartpole", [300, 420]),
    ("mountain_car", [-1000, -1000, -250]),
    ("mountain_car", [-130, -110]),
])
def test_score_matches_bsuite_analysis(game, returns):
  assert bsuite_score(game, returns) == pytest.approx(_bsuite_reference_score(game, returns))


def test_evaluation_reports_the_score():
  envs = evaluation.create_environments("bsuite:catch", [0, 1])
  stay = lambda states, keys: np.ones(len(states), int)
  import jax
  result = evaluation.evaluate(stay, envs, 300, jax.random.key(0))
  metrics = (result[0] if isinstance(result, list) else result).metrics()
  assert metrics["Eval/Score"] == pytest.approx(
      bsuite_score("catch", (result[0] if isinstance(result, list) else result).episode_returns))
  gym_envs = evaluation.create_environments("gym:CartPole-v1", [0])
  result = evaluation.evaluate(lambda s, k: np.zeros(len(s), int), gym_envs, 50,
                               jax.random.key(0))
  assert "Eval/Score" not in (result[0] if isinstance(result, list) else result).metrics()

"""Gridworld generator and exact solvers against the spec's reference values and a
brute-force check on a tiny grid (the gridworld spec, sections 1-3)."""
import itertools

import numpy as np
import pytest

from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import exact_jax
from batch_rl.gridworld import tabular

# Seed-0 layout of the spec (independent numpy re-implementation of Fu's rules).
REFERENCE_SEED0 = (
    "G...##...#.#.#..|........#.......|.#..#.#.#...#...|..#.........#...|"
    "...#.#....#...##|..#........#.##.|.........#......|...#..#.........|"
    ".#..#..#S......#|.#......#...###.|#....#.#........|.....##..#.#.#..|"
    ".......#......#.|....#....#..#...|........#.......|....#.#..#......")


@pytest.fixture(scope="module")
def env0():
  return env_lib.GridworldEnv(seed=0)


def test_seed0_layout_matches_spec(env0):
  assert env0.layout.render() == REFERENCE_SEED0
  assert env0.layout.goal == (0, 0) and env0.layout.start == (8, 8)
  assert env0.wall_order[:5] == [(13, 9), (6, 2), (12, 3), (14, 4), (6, 11)]
  assert len(env0.layout.walls) == 51
  assert env0.reachable[~env0.walls].sum() == 205


def test_seed0_solutions_match_spec(env0):
  # Spec section 3: Q* in [3.058, 22.344], mean 12.824, V*(start) = 14.546;
  # expert return 40.32, random 4.25; value iteration converges at ~362 iterations.
  q = env0.q_star
  assert q.min() == pytest.approx(3.058, abs=1e-3)
  assert q.max() == pytest.approx(22.344, abs=1e-3)
  assert q.mean() == pytest.approx(12.824, abs=1e-3)
  assert tabular.soft_value(q, 0.1)[env0.start_state] == pytest.approx(14.546, abs=1e-3)
  assert env0.return_expert == pytest.approx(40.32, abs=5e-3)
  assert env0.return_random == pytest.approx(4.25, abs=5e-3)
  assert 355 <= env0.value_iterations <= 370
  bellman = tabular.bellman_backup(q, env0.transitions, env0.rewards, 0.95, 0.1)
  assert np.abs(bellman - q).max() < 1e-6


def test_mdp_structure(env0):
  p = env0.transitions
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
  assert env0.rewards[env0.goal_state] == 1.0
  assert env0.rewards[env0.start_state] == 0.0
  # Hand-worked: the goal (0,0) moving "right" (4) reaches (1,0) w.p. 0.95 + 0.01; the
  # up (1) and left (3) moves are clipped to the cell itself, as is no-op (0): 0.01 each.
  s, right = env0.goal_state, 1
  assert p[s, 4, right] == pytest.approx(0.96)
  assert p[s, 4, s] == pytest.approx(0.03)
  # Walls self-loop.
  w = np.flatnonzero(env0.walls)[0]
  assert (p[w, :, w] == 1.0).all()
  # Reward of (4, 4): 1 - 8/16.
  assert env0.rewards[4 + 16 * 4] == pytest.approx(0.5)


def test_features(env0):
  assert env0.features.shape == (256, 16) and env0.features.dtype == np.float32
  # Smoothing contracts the raw noise: neighbouring free cells become correlated.
  raw = np.random.RandomState(0).randn(256, 16)
  assert env0.features[~env0.walls].std() < 0.5 * raw.std()
  np.testing.assert_array_equal(env0.features[env0.walls], raw[env0.walls].astype(np.float32))
  two = env_lib.GridworldEnv(features="two_hot")
  assert two.features.shape == (256, 32)
  s = 3 + 16 * 5
  assert two.features[s, 3] == 1 and two.features[s, 16 + 5] == 1 and two.features[s].sum() == 2
  rnd = env_lib.GridworldEnv(features="random", feature_dim=8).features
  assert rnd.shape == (256, 8) and rnd.min() >= -1 and rnd.max() <= 1
  assert env_lib.GridworldEnv(features="one_hot").features.shape == (256, 256)


def test_generator_is_deterministic_and_seeded():
  a, b, c = (env_lib.GridworldEnv(seed=s) for s in (1, 1, 2))
  assert a.layout == b.layout and np.array_equal(a.features, b.features)
  assert a.layout != c.layout


def _tiny_mdp():
  """3x2 grid, one wall, transitions from the generator's rules."""
  layout = env_lib.Layout(3, 2, frozenset({(1, 0)}), (0, 1), (2, 0))
  return layout, env_lib.transition_matrix(layout, 0.05), env_lib.reward_vector(layout)


def test_solvers_brute_force_tiny_grid():
  layout, p, r = _tiny_mdp()
  gamma, alpha, horizon = 0.9, 0.3, 4
  s0 = layout.state(layout.start)
  # Hard Q*: enumerate all deterministic stationary policies, evaluate by linear solve.
  n_s, n_a = r.shape[0], 5
  best = np.full(n_s, -np.inf)
  for pol in itertools.product(range(n_a), repeat=n_s):
    pp = p[np.arange(n_s), pol]
    v = np.linalg.solve(np.eye(n_s) - gamma * pp, r)
    best = np.maximum(best, v)
  q_hard, _ = tabular.value_iteration(p, r, gamma, 0.0, tol=1e-12)
  np.testing.assert_allclose(q_hard.max(1), best, atol=1e-8)
  # Soft Q^pi of a random stochastic policy by a direct linear solve over (s, a).
  rng = np.random.default_rng(0)
  pi = rng.dirichlet(np.ones(n_a), n_s)
  ent = -(pi * np.log(pi)).sum(1)
  # Q = r + gamma P (Pi Q + alpha H)  <=>  (I - gamma P Pi) Q = r + gamma alpha P H
  pmat = p.reshape(n_s * n_a, n_s)
  pi_mat = np.zeros((n_s, n_s * n_a))
  for s in range(n_s):
    pi_mat[s, s * n_a:(s + 1) * n_a] = pi[s]
  rhs = np.repeat(r, n_a) + gamma * alpha * pmat @ ent
  q_direct = np.linalg.solve(np.eye(n_s * n_a) - gamma * pmat @ pi_mat, rhs).reshape(n_s, n_a)
  q_pe = tabular.policy_evaluation(p, r, gamma, pi, alpha)
  np.testing.assert_allclose(q_pe, q_direct, atol=1e-8)
  np.testing.assert_allclose(exact_jax.soft_q_pi(pi, p, r, gamma, alpha), q_direct,
                             rtol=1e-4, atol=1e-4)
  # Soft Q* is the soft Q^pi of its own Boltzmann policy.
  q_soft, _ = tabular.value_iteration(p, r, gamma, alpha, tol=1e-12)
  np.testing.assert_allclose(
      tabular.policy_evaluation(p, r, gamma, tabular.boltzmann_policy(q_soft, alpha), alpha),
      q_soft, atol=1e-8)
  # Exact H-step return vs enumeration of every trajectory.
  total = 0.0
  for traj in itertools.product(range(n_s), repeat=horizon - 1):
    for acts in itertools.product(range(n_a), repeat=horizon - 1):
      prob, s, ret = 1.0, s0, r[s0]
      for s_next, a in zip(traj, acts):
        prob *= pi[s, a] * p[s, a, s_next]
        s = s_next
        ret += r[s]
      total += prob * ret
  assert tabular.expected_return(p, r, pi, s0, horizon) == pytest.approx(total, abs=1e-10)
  assert float(exact_jax.expected_return(pi, p, r, s0, horizon)) == pytest.approx(
      total, rel=1e-5)


def test_hand_worked_soft_value():
  q = np.array([[0.0, np.log(3.0)]])
  # alpha * log(exp(0) + exp(log 3)) with alpha = 1: log 4.
  assert tabular.soft_value(q, 1.0)[0] == pytest.approx(np.log(4.0))
  assert tabular.soft_value(q, 0.0)[0] == pytest.approx(np.log(3.0))
  np.testing.assert_allclose(tabular.boltzmann_policy(q, 1.0), [[0.25, 0.75]])


@pytest.mark.parametrize("kwargs, binding", [
    (dict(wall_fraction=0.7), "GridworldEnv.wall_fraction"),
    (dict(wall_fraction=1.2), "GridworldEnv.wall_fraction"),
    (dict(feature_dim=0), "GridworldEnv.feature_dim"),
    (dict(features="pixels"), "GridworldEnv.features"),
    (dict(gamma=1.0), "GridworldEnv.gamma"),
])
def test_bad_input_names_binding(kwargs, binding):
  with pytest.raises(ValueError, match=binding.replace(".", r"\.")):
    env_lib.GridworldEnv(**kwargs)


def test_enclosed_start_message():
  # Find a seed whose 60% walls cut the start off from the goal (the generator does not
  # check connectivity), and check that it is reported with the binding to change.
  for seed in range(50):
    layout, _ = env_lib.generate_layout(seed, wall_fraction=0.6)
    if not env_lib.reachable_from(layout)[layout.state(layout.goal)]:
      break
  else:
    pytest.skip("no enclosed layout among 50 seeds")
  with pytest.raises(ValueError, match=r"`GridworldEnv\.wall_fraction`.*encloses the start"):
    env_lib.GridworldEnv(seed=seed, wall_fraction=0.6)

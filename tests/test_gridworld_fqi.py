"""Neural FQI on the gridworld: buffer, data, vmapped seeds, targets, models."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks
from batch_rl.gridworld import tabular


@pytest.fixture(scope="module")
def small():
  """A 6x6 grid: same code paths as 16x16, faster."""
  e = env_lib.GridworldEnv(width=6, height=6, horizon=10)
  return e, fqi.env_arrays(e)


def test_buffer_is_fifo():
  b = fqi.Buffer.empty(4)
  b = b.add(jnp.array([1, 2, 3]), jnp.array([0, 0, 0]), jnp.array([1, 2, 3]), jnp.zeros(3))
  b = b.add(jnp.array([4, 5]), jnp.array([1, 1]), jnp.array([4, 5]), jnp.zeros(2))
  # Capacity 4, five added: the oldest (1) was overwritten by 5 in slot 0.
  np.testing.assert_array_equal(b.state, [5, 2, 3, 4])
  assert int(b.count) == 5 and int(b.size()) == 4
  idx = b.sample_indices(jax.random.PRNGKey(0), 1000)
  assert int(idx.min()) == 0 and int(idx.max()) == 3


def test_dataset_rollouts_follow_the_mdp(small):
  e, arrays = small
  s, a, s2, g = jax.device_get(fqi.rollout_dataset(jax.random.PRNGKey(1), arrays, 3))
  h = e.horizon
  assert s.shape == (3 * h,)
  assert (s[::h] == e.start_state).all()               # every episode starts at start
  np.testing.assert_array_equal(s[1:h], s2[:h - 1])     # consecutive within an episode
  assert (e.transitions[s, a, s2] > 0).all()            # only possible transitions
  # Soft MC return-to-go, recomputed in float64 from the same trajectory.
  pi = tabular.uniform_policy(e.num_states, 5)
  bonus = tabular.entropy_bonus(pi, e.temperature)
  for ep in range(3):
    ss, nn = s[ep * h:(ep + 1) * h], s2[ep * h:(ep + 1) * h]
    ref, acc = np.zeros(h), 0.0
    for t in reversed(range(h)):
      acc = e.rewards[ss[t]] + (e.gamma * (bonus[nn[t]] + acc) if t < h - 1 else 0.0)
      ref[t] = acc
    np.testing.assert_allclose(g[ep * h:(ep + 1) * h], ref, rtol=1e-5, atol=1e-5)


def _program(e, **kw):
  cfg = fqi.FQIConfig(**{"gradient_steps": 5, "batch_size": 16, "dataset_episodes": 4,
                         "buffer_capacity": 64, **kw})
  model = networks.mlp_model(e.features, e.num_actions)
  return cfg, fqi.make_vmapped(cfg, model, optax.adam(5e-3, eps=1e-8))


def test_vmapped_seeds_differ_and_metrics_are_complete(small):
  e, arrays = small
  _, (v_init, v_run) = _program(e)
  state = v_init(fqi.seed_keys([0, 1]), arrays)
  w = state.params["params"]["Dense_0"]["kernel"]
  assert not np.allclose(w[0], w[1])                       # different network init
  assert not np.array_equal(state.buffer.action[0], state.buffer.action[1])  # data
  bound = 1 / np.sqrt(e.features.shape[1])                 # PyTorch default init law
  assert float(jnp.abs(w).max()) <= bound
  state, m = v_run(state, arrays, 3)
  m = fqi.to_numpy(m)
  for tag in ("Rank/srank", "Rank/sigma_max", "Rank/sigma_min", "Features/dead_units",
              "Features/dot_next", "Train/Loss", "Train/TDError", "Eval/AverageReturn",
              "Gridworld/srank_all_states", "Gridworld/srank_nonwall",
              "Gridworld/stable_rank", "Gridworld/sigma_max_sq", "Gridworld/sigma_min_sq",
              "Gridworld/QError_mean", "Gridworld/QError_max", "Gridworld/TQError_mean",
              "Gridworld/NormalizedReturn", "Gridworld/ExactReturn"):
    assert m[tag].shape == (2, 3) and np.isfinite(m[tag]).all(), tag
  assert (m["Gridworld/srank_all_states"] <= 64).all()
  assert (m["Gridworld/stable_rank"] >= 1).all()
  assert np.array_equal(np.asarray(state.iteration), [3, 3])
  # The frozen table is the network's Q on every state; metrics agree with it.
  model = networks.mlp_model(e.features, e.num_actions)
  p0 = jax.tree.map(lambda x: x[0], state.params)
  np.testing.assert_allclose(state.q_table[0], model.q_table(p0), rtol=1e-6)
  err = np.abs(np.asarray(state.q_table[0]) - e.q_star)
  assert m["Gridworld/QError_mean"][0, -1] == pytest.approx(err.mean(), rel=1e-4)
  ret = tabular.expected_return(e.transitions, e.rewards,
                                tabular.boltzmann_policy(np.asarray(state.q_table[0],
                                                                    np.float64), 0.1),
                                e.start_state, e.horizon)
  assert m["Gridworld/ExactReturn"][0, -1] == pytest.approx(ret, rel=1e-3, abs=1e-3)


def test_supervised_regression_fits_q_star(small):
  e, arrays = small
  _, (v_init, v_run) = _program(e, target=fqi.Target.Q_STAR, full_batch=True,
                                gradient_steps=100)
  state = v_init(fqi.seed_keys([0]), arrays)
  before = np.abs(np.asarray(state.q_table[0]) - e.q_star).mean()
  _, m = v_run(state, arrays, 3)
  after = fqi.to_numpy(m)["Gridworld/QError_mean"][0]
  assert after[-1] < 0.2 * before and after[-1] < after[0]


def test_online_collection_and_reinit(small):
  e, arrays = small
  cfg, (v_init, v_run) = _program(e, env_steps_per_iteration=3, reinitialize=True)
  state = v_init(fqi.seed_keys([0]), arrays)
  assert int(state.buffer.count[0]) == 0
  state, _ = v_run(state, arrays, 2)
  assert int(state.buffer.count[0]) == 6
  # Transitions of the online episode chain together (no reset within 6 < horizon steps).
  s, s2 = np.asarray(state.buffer.state[0, :6]), np.asarray(state.buffer.next_state[0, :6])
  assert s[0] == e.start_state and (s[1:] == s2[:-1]).all()
  del cfg


def test_deep_linear_model_is_consistent():
  feats = np.zeros((4, 1), np.float32)  # 4 states, 2 actions -> D = 8
  model = networks.deep_linear_model(feats, 2, num_layers=3, init_scale=0.5, init_noise=0.1)
  params = model.init(jax.random.PRNGKey(0))
  w1, w2 = params["hidden"]
  phi = np.asarray(w2 @ w1)
  q = np.asarray(params["out"]) @ phi
  np.testing.assert_allclose(model.q_table(params).reshape(-1), q, rtol=1e-5)
  np.testing.assert_allclose(model.features_all(params), phi.T, rtol=1e-5)
  s, a = jnp.array([1, 3]), jnp.array([1, 0])
  qs, f = model.q_and_features(params, s, a)
  np.testing.assert_allclose(qs, q[[3, 6]], rtol=1e-5)
  np.testing.assert_allclose(f, phi[:, [3, 6]].T, rtol=1e-5)

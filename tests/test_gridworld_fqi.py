"""Neural FQI on the gridworld: buffer, targets, loss, supervised and online programs, models.

The offline program (vmapped seeds, dataset rollouts, metrics) is run and checked through
the runner in tests/test_gridworld_train.py; each compiled program costs a compile, so
the programs here are the ones that path does not run (full-batch supervised, online with
re-initialisation) and the targets of the other variants are checked without training. The
loss with the shared regulariser terms is checked against the penalties written out.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batch_rl import regularizers
from batch_rl.agents import regularizer_terms
from batch_rl.gridworld import data
from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks
from batch_rl.gridworld import tabular


@pytest.fixture(scope="module")
def small():
  """A 6x6 grid: same code paths as 16x16, faster."""
  e = env_lib.GridworldEnv(width=6, height=6, horizon=10)
  return e, data.env_arrays(e)


def test_buffer_is_fifo():
  b = data.Buffer.empty(4)
  b = b.add(jnp.array([1, 2, 3]), jnp.array([0, 0, 0]), jnp.array([1, 2, 3]), jnp.zeros(3))
  b = b.add(jnp.array([4, 5]), jnp.array([1, 1]), jnp.array([4, 5]), jnp.zeros(2))
  # Capacity 4, five added: the oldest (1) was overwritten by 5 in slot 0.
  np.testing.assert_array_equal(b.state, [5, 2, 3, 4])
  assert int(b.count) == 5 and int(b.size()) == 4
  idx = b.sample_indices(jax.random.PRNGKey(0), 1000)
  assert int(idx.min()) == 0 and int(idx.max()) == 3


def _program(e, **kw):
  cfg = fqi.FQIConfig(**{"gradient_steps": 5, "batch_size": 16, "dataset_episodes": 4,
                         "buffer_capacity": 64, **kw})
  model = networks.mlp_model(e.features, e.num_actions)
  return cfg, fqi.make_vmapped(cfg, model, optax.adam(5e-3, eps=1e-8), fast_compile=True)


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


@pytest.mark.parametrize("target", list(fqi.Target), ids=lambda t: t.value)
def test_targets_match_the_float64_solvers(small, target):
  """The frozen targets of every variant against numpy float64 (spec sections 3, 5, 7)."""
  e, arrays = small
  rng = np.random.default_rng(0)
  q = e.q_star + rng.normal(0.0, 1.0, e.q_star.shape)      # some current table
  v, y_table = jax.device_get(fqi._targets(fqi.FQIConfig(target=target),  # pylint: disable=protected-access
                                           jnp.asarray(q, jnp.float32), arrays))
  alpha, uniform = e.temperature, tabular.uniform_policy(e.num_states, 5)
  backup = lambda values: e.rewards[:, None] + e.gamma * e.transitions @ values
  if target == fqi.Target.SOFT_Q:
    ref_v = tabular.soft_value(q, alpha)
  elif target in (fqi.Target.FQE, fqi.Target.MC):
    ref_v = np.sum(uniform * q, -1) + tabular.entropy_bonus(uniform, alpha)
  else:
    ref_v = None
  if ref_v is not None:
    np.testing.assert_allclose(v, ref_v, rtol=1e-5, atol=1e-4)
  if target == fqi.Target.Q_STAR:
    ref = e.q_star
  elif target == fqi.Target.ORACLE:   # exact soft Q^pi of pi = softmax(Q / alpha)
    ref = tabular.policy_evaluation(e.transitions, e.rewards, e.gamma,
                                    tabular.boltzmann_policy(q, alpha), alpha)
  else:
    ref = backup(ref_v)
  np.testing.assert_allclose(y_table, ref, rtol=1e-4, atol=1e-3)
  # Sampled targets: bootstrapped ones use v at s', MC the stored return, others the table.
  s, a, s2 = np.array([0, 7, 20]), np.array([1, 4, 0]), np.array([1, 8, 14])
  g = np.array([0.5, 1.5, 2.5], np.float32)
  y = np.asarray(fqi._sample_targets(fqi.FQIConfig(target=target), v, y_table, s, a, s2,  # pylint: disable=protected-access
                                     g, arrays))
  if target in fqi.BOOTSTRAPPED:
    np.testing.assert_allclose(y, e.rewards[s] + e.gamma * ref_v[s2], rtol=1e-4)
  elif target == fqi.Target.MC:
    np.testing.assert_array_equal(y, g)
  else:
    np.testing.assert_allclose(y, ref[s, a], rtol=1e-4, atol=1e-3)


def _minibatch(e, model, key=0, n=32):
  ks, ka, k2, ky, kp = jax.random.split(jax.random.PRNGKey(key), 5)
  s = jax.random.randint(ks, (n,), 0, e.num_states)
  a = jax.random.randint(ka, (n,), 0, e.num_actions)
  s2 = jax.random.randint(k2, (n,), 0, e.num_states)
  y = jax.random.normal(ky, (n,))
  return model.init(kp), s, a, s2, y


def _reference_loss(model, penalty):
  """TD + penalty(q_values [B, A], phi, phi_next, a) written out, without the terms."""
  def loss(params, s, a, s2, y):
    q_values, phi = model.q_values_and_features(params, s, a)
    q = q_values[jnp.arange(a.shape[0]), a]
    _, phi_next = model.q_and_features(params, s2, a)
    return jnp.mean((q - y) ** 2) + penalty(q_values, phi, phi_next, a)
  return loss


@pytest.mark.parametrize("model_name", ["mlp", "deep_linear"])
@pytest.mark.parametrize("term, tag, penalty", [
    (regularizer_terms.LpRegularizer(0.001, method="gram"), "Train/LpPenalty",
     lambda q, phi, phi2, a: 0.001 * regularizers.lp_penalty(phi, method="gram")),
    (regularizer_terms.DR3Regularizer(0.001, variant="paper"), "Train/DR3",
     lambda q, phi, phi2, a: 0.001 * jnp.mean(jnp.sum(phi * phi2, axis=-1))),
    (regularizer_terms.CQLRegularizer(0.5), "Train/CQLLoss",
     lambda q, phi, phi2, a: 0.5 * jnp.mean(jax.nn.logsumexp(q, axis=-1)
                                            - q[jnp.arange(a.shape[0]), a])),
], ids=["lp", "dr3", "cql"])
def test_loss_with_a_term_is_td_plus_its_penalty(small, model_name, term, tag, penalty):
  """The FQI loss through the shared terms equals TD + c * penalty computed directly
  (value and gradient); DR3 pairs s' with the minibatch's own action, as before."""
  e, _ = small
  if model_name == "mlp":
    model = networks.mlp_model(e.features, e.num_actions)
  else:
    model = networks.deep_linear_model(e.features, e.num_actions)
  params, s, a, s2, y = _minibatch(e, model)
  loss_fn = fqi.make_loss(fqi.FQIConfig(regularizers=(term,)), model)
  (value, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, s, a, s2, y, jax.random.PRNGKey(1))
  reference = _reference_loss(model, penalty)
  ref_value, ref_grads = jax.value_and_grad(reference)(params, s, a, s2, y)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/Loss"], value, rtol=0)
  td = jnp.mean((model.q_and_features(params, s, a)[0] - y) ** 2)
  np.testing.assert_allclose(metrics["Gridworld/TDLoss"], td, rtol=1e-6)
  np.testing.assert_allclose(value - metrics["Gridworld/TDLoss"],
                             term.coefficient * metrics[tag], rtol=1e-4, atol=1e-7)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_loss_without_terms_is_td_and_needs_no_key(small):
  e, _ = small
  model = networks.mlp_model(e.features, e.num_actions)
  params, s, a, s2, y = _minibatch(e, model)
  value, metrics = fqi.make_loss(fqi.FQIConfig(), model)(params, s, a, s2, y)
  q, _ = model.q_and_features(params, s, a)
  np.testing.assert_allclose(value, jnp.mean((q - y) ** 2), rtol=1e-6)
  assert sorted(metrics) == ["Gridworld/TDLoss", "Train/Loss"]


def test_phi_next_is_computed_only_for_terms_that_need_it(small):
  e, _ = small
  model = networks.mlp_model(e.features, e.num_actions)
  seen = []

  class Probe:
    needs_next_representation = False

    def __call__(self, inputs, key):
      seen.append(inputs)
      return jnp.zeros(()), {}

  params, s, a, s2, y = _minibatch(e, model)
  fqi.make_loss(fqi.FQIConfig(regularizers=(Probe(),)), model)(params, s, a, s2, y, None)
  inputs = seen[-1]
  assert inputs.phi_next is None and inputs.q_values.shape == (32, e.num_actions)
  assert not np.asarray(inputs.terminal).any()
  np.testing.assert_array_equal(inputs.next_action, a)


@pytest.mark.parametrize("term", [regularizer_terms.CURLRegularizer(),
                                  regularizer_terms.VIBRegularizer()],
                         ids=lambda t: type(t).__name__)
def test_terms_needing_network_options_are_rejected(small, term):
  e, _ = small
  model = networks.mlp_model(e.features, e.num_actions)
  with pytest.raises(ValueError, match=type(term).__name__ + " needs network options"):
    fqi.make_program(fqi.FQIConfig(regularizers=(term,)), model, optax.adam(1e-3))

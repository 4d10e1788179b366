"""batch_rl.regularizers against numpy / scipy references and hand-worked examples.

Every reference is recomputed here (np.linalg.svd, explicit Python loops, explicit
Kronecker features, scipy.special.logsumexp); nothing is compared with numbers that the
code under test produced.
"""
import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from batch_rl import regularizers as reg

# ------------------------------------------------------------------------------ Lp


def np_lp(phi):
  s = np.linalg.svd(np.asarray(phi, np.float64), compute_uv=False)
  return s[0] ** 2 - s[-1] ** 2


def np_lp_finite_difference_grad(phi, h=1e-6):
  """Central differences of np_lp, entry by entry (the independent gradient reference)."""
  fd = np.zeros_like(phi)
  for i, j in itertools.product(range(phi.shape[0]), range(phi.shape[1])):
    e = np.zeros_like(phi)
    e[i, j] = h
    fd[i, j] = (np_lp(phi + e) - np_lp(phi - e)) / (2 * h)
  return fd


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (32, 16), (5, 5)])
def test_lp_value_matches_numpy_svd(shape):
  phi = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  got = float(reg.lp_penalty(jnp.asarray(phi)))
  np.testing.assert_allclose(got, np_lp(phi), rtol=1e-5)
  # Jitted gives the same value.
  np.testing.assert_allclose(float(jax.jit(reg.lp_penalty)(phi)), np_lp(phi), rtol=1e-5)


def test_lp_hand_examples_with_known_singular_values():
  # Diagonal blocks: the singular values are |diagonal entries|.
  phi = np.zeros((5, 3), np.float32)
  phi[0, 0], phi[1, 1], phi[2, 2] = 3.0, -2.0, 1.0
  assert float(reg.lp_penalty(jnp.asarray(phi))) == pytest.approx(9.0 - 1.0, rel=1e-6)
  # B < D: sigma_min is the smaller of the min(B, D) = 2 singular values (2, 5), not one
  # of the structural zeros of the 4 columns.
  wide = np.array([[2.0, 0, 0, 0], [0, 5.0, 0, 0]], np.float32)
  assert float(reg.lp_penalty(jnp.asarray(wide))) == pytest.approx(25.0 - 4.0, rel=1e-6)
  # Rank deficient: sigma_min = 0.
  deficient = np.diag([4.0, 1.0, 0.0]).astype(np.float32)
  assert float(reg.lp_penalty(jnp.asarray(deficient))) == pytest.approx(16.0, rel=1e-6)
  # All singular values equal: the minimum, 0.
  assert float(reg.lp_penalty(2.0 * jnp.eye(4))) == pytest.approx(0.0, abs=1e-5)


def test_lp_gradient_matches_finite_differences_and_svd_formula_float64():
  with jax.enable_x64(True):
    phi = np.random.default_rng(1).standard_normal((6, 4))  # distinct singular values
    grad = np.asarray(jax.grad(reg.lp_penalty)(jnp.asarray(phi, jnp.float64)))
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, np_lp_finite_difference_grad(phi), rtol=1e-6, atol=1e-7)
    # Closed form for simple singular values: 2 s_1 u_1 v_1^T - 2 s_k u_k v_k^T.
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    closed = 2 * s[0] * np.outer(u[:, 0], vt[0]) - 2 * s[-1] * np.outer(u[:, -1], vt[-1])
    np.testing.assert_allclose(grad, closed, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("phi", [
    np.eye(4),                      # all singular values equal
    np.diag([3.0, 3.0, 1.0]),       # repeated sigma_max
    np.diag([2.0, 1.0, 0.0, 0.0]),  # repeated zero sigma_min
    np.zeros((3, 2)),
])
def test_lp_gradient_finite_for_repeated_singular_values(phi):
  grad = np.asarray(jax.grad(reg.lp_penalty)(jnp.asarray(phi, jnp.float32)))
  assert np.all(np.isfinite(grad))
  # Whatever subgradient is returned, it is 2 s u v^T - 2 s' u' v'^T for unit singular
  # vectors, so its Frobenius norm is at most 2 sqrt(s_max^2 + s_min^2).
  s = np.linalg.svd(phi, compute_uv=False)
  assert np.linalg.norm(grad) <= 2 * math.sqrt(s[0] ** 2 + s[-1] ** 2) + 1e-5


def test_lp_rejects_non_matrix():
  with pytest.raises(ValueError, match=r"\[B, D\]"):
    reg.lp_penalty(jnp.ones(3))


# "gram": extreme eigenpairs of the smaller Gram matrix, eigenvectors held fixed.
LP_SHAPES = [(6, 4), (4, 6), (32, 16), (16, 32), (5, 5), (128, 64), (32, 512)]


@pytest.mark.parametrize("shape", LP_SHAPES)
def test_lp_gram_value_matches_numpy_svd(shape):
  phi = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
  lp = functools.partial(reg.lp_penalty, method="gram")
  # float32 Gram: absolute error ~ eps * sigma_max^2.
  np.testing.assert_allclose(float(lp(jnp.asarray(phi))), np_lp(phi), rtol=2e-5)
  np.testing.assert_allclose(float(jax.jit(lp)(phi)), np_lp(phi), rtol=2e-5)


def test_lp_gram_hand_examples():
  lp = functools.partial(reg.lp_penalty, method="gram")
  phi = np.zeros((5, 3), np.float32)
  phi[0, 0], phi[1, 1], phi[2, 2] = 3.0, -2.0, 1.0
  assert float(lp(jnp.asarray(phi))) == pytest.approx(9.0 - 1.0, rel=1e-6)
  wide = np.array([[2.0, 0, 0, 0], [0, 5.0, 0, 0]], np.float32)  # B < D: not 25 - 0
  assert float(lp(jnp.asarray(wide))) == pytest.approx(25.0 - 4.0, rel=1e-6)
  assert float(lp(jnp.asarray(np.diag([4.0, 1.0, 0.0]).astype(np.float32)))) == (
      pytest.approx(16.0, rel=1e-6))
  assert float(lp(2.0 * jnp.eye(4))) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (9, 3), (3, 9), (5, 5)])
def test_lp_gram_gradient_matches_finite_differences_and_svd_float64(shape):
  with jax.enable_x64(True):
    phi = np.random.default_rng(3).standard_normal(shape)  # distinct singular values
    grad = np.asarray(jax.grad(functools.partial(reg.lp_penalty, method="gram"))(
        jnp.asarray(phi, jnp.float64)))
    assert grad.dtype == np.float64
    np.testing.assert_allclose(grad, np_lp_finite_difference_grad(phi), rtol=1e-6, atol=1e-7)
    u, s, vt = np.linalg.svd(phi, full_matrices=False)
    closed = 2 * s[0] * np.outer(u[:, 0], vt[0]) - 2 * s[-1] * np.outer(u[:, -1], vt[-1])
    np.testing.assert_allclose(grad, closed, rtol=1e-9, atol=1e-10)
    # And the "svd" method's gradient.
    grad_svd = np.asarray(jax.grad(reg.lp_penalty)(jnp.asarray(phi, jnp.float64)))
    np.testing.assert_allclose(grad, grad_svd, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", [(128, 64), (32, 512)])
def test_lp_gram_equals_svd_float32_feature_sizes(shape):
  # The gridworld's [128, 64] and the Atari [32, 512] minibatches, ReLU-like features.
  phi = np.maximum(np.random.default_rng(4).standard_normal(shape), 0).astype(np.float32)
  x = jnp.asarray(phi)
  g_gram = np.asarray(jax.grad(functools.partial(reg.lp_penalty, method="gram"))(x))
  g_svd = np.asarray(jax.grad(reg.lp_penalty)(x))
  scale = np.abs(g_svd).max()
  np.testing.assert_allclose(g_gram, g_svd, atol=1e-3 * scale)


@pytest.mark.parametrize("phi", [
    np.eye(4),
    np.diag([3.0, 3.0, 1.0]),
    np.diag([2.0, 1.0, 0.0, 0.0]),
    np.zeros((3, 2)),
])
def test_lp_gram_gradient_finite_for_repeated_singular_values(phi):
  grad = np.asarray(jax.grad(functools.partial(reg.lp_penalty, method="gram"))(
      jnp.asarray(phi, jnp.float32)))
  assert np.all(np.isfinite(grad))
  s = np.linalg.svd(phi, compute_uv=False)
  assert np.linalg.norm(grad) <= 2 * math.sqrt(s[0] ** 2 + s[-1] ** 2) + 1e-5


def test_lp_gram_vmaps_like_svd():
  phi = jnp.asarray(np.random.default_rng(5).standard_normal((3, 12, 5)), jnp.float32)
  gram = jax.vmap(jax.value_and_grad(functools.partial(reg.lp_penalty, method="gram")))
  svd = jax.vmap(jax.value_and_grad(reg.lp_penalty))
  (v1, g1), (v2, g2) = gram(phi), svd(phi)
  np.testing.assert_allclose(v1, v2, rtol=2e-5)
  np.testing.assert_allclose(g1, g2, rtol=1e-3, atol=1e-4)


def test_lp_rejects_unknown_method():
  with pytest.raises(ValueError, match="method"):
    reg.lp_penalty(jnp.ones((3, 2)), method="power")


# ------------------------------------------------------------------------------ DR3

B, D, A = 7, 5, 3


def dr3_data(seed=0):
  rng = np.random.default_rng(seed)
  phi = rng.standard_normal((B, D)).astype(np.float32)
  phi_next = rng.standard_normal((B, D)).astype(np.float32)
  action = np.array([0, 1, 2, 0, 1, 2, 0], np.int32)
  next_action = np.array([0, 2, 2, 1, 1, 0, 0], np.int32)   # matches at rows 0, 2, 4, 6
  terminal = np.array([False, True, False, False, True, False, False])
  return phi, phi_next, action, next_action, terminal


def np_dr3(phi, phi_next, action, next_action, terminal, cfg):
  """Python-loop reference of the documented definition."""
  vals = []
  for b in range(phi.shape[0]):
    if cfg.mask_terminal and terminal[b]:
      continue
    d = sum(float(phi[b, i]) * float(phi_next[b, i]) for i in range(phi.shape[1]))
    if cfg.features == "action" and action[b] != next_action[b]:
      d = 0.0
    if cfg.absolute:
      d = abs(d)
    vals.append(d)
  if cfg.reduction == "sum":
    return sum(vals)
  return sum(vals) / len(vals) if vals else 0.0


ALL_CONFIGS = [
    reg.DR3Config(features=f, absolute=ab, reduction=r, stop_gradient_next=sg,
                  mask_terminal=m)
    for f, ab, r, sg, m in itertools.product(("state", "action"), (False, True),
                                             ("mean", "sum"), (False, True),
                                             (False, True))
]


def call(cfg, phi, phi_next, action, next_action, terminal, **kw):
  return reg.dr3_penalty(jnp.asarray(phi), jnp.asarray(phi_next),
                         action=jnp.asarray(action), next_action=jnp.asarray(next_action),
                         terminal=jnp.asarray(terminal), config=cfg, **kw)


def test_dr3_data_exercises_every_branch():
  phi, phi_next, action, next_action, terminal = dr3_data()
  dots = np.sum(phi * phi_next, axis=1)
  assert (dots > 0).any() and (dots < 0).any()  # abs matters
  assert (action == next_action).any() and (action != next_action).any()
  assert terminal.any() and not terminal.all()


@pytest.mark.parametrize("cfg", ALL_CONFIGS, ids=str)
def test_dr3_every_variant_matches_loop_reference(cfg):
  data = dr3_data()
  got = float(call(cfg, *data))
  np.testing.assert_allclose(got, np_dr3(*data, cfg), rtol=1e-5, atol=1e-6)


def test_dr3_variants_differ_where_they_should():
  data = dr3_data()
  base = reg.DR3_PAPER
  v = lambda **kw: float(call(dataclasses.replace(base, **kw), *data))
  paper = v()
  assert v(absolute=True) > paper          # mixed-sign dots
  assert v(reduction="sum") == pytest.approx(B * paper, rel=1e-5)
  assert v(mask_terminal=True) != pytest.approx(paper)
  assert v(features="action") != pytest.approx(paper)


def test_dr3_presets_are_the_documented_settings():
  assert reg.DR3_PAPER == reg.DR3Config(
      features="state", absolute=False, reduction="mean", stop_gradient_next=False,
      mask_terminal=False)
  assert reg.DR3_DOPAMINE_LAB == reg.DR3Config(
      features="state", absolute=True, reduction="mean", stop_gradient_next=False,
      mask_terminal=False)
  phi, phi_next, *_ = dr3_data()
  # Dopamine's compute_dr3_loss: mean(abs(einsum('ij,ij->i', phi, phi_next))).
  lab = np.mean(np.abs(np.einsum("ij,ij->i", phi.astype(np.float64), phi_next)))
  got = reg.dr3_penalty(jnp.asarray(phi), jnp.asarray(phi_next),
                        config=reg.DR3_DOPAMINE_LAB)
  np.testing.assert_allclose(float(got), lab, rtol=1e-5)
  paper = np.mean(np.einsum("ij,ij->i", phi.astype(np.float64), phi_next))
  got = reg.dr3_penalty(jnp.asarray(phi), jnp.asarray(phi_next), config=reg.DR3_PAPER)
  np.testing.assert_allclose(float(got), paper, rtol=1e-5)


def test_dr3_paper_and_lab_agree_on_relu_features():
  # Dopamine's representation is a ReLU output: nonnegative, so |dot| = dot and the two
  # presets coincide in value and gradient.
  phi, phi_next, *_ = dr3_data(3)
  phi, phi_next = np.maximum(phi, 0) + 0.01, np.maximum(phi_next, 0) + 0.01
  f = lambda cfg: jax.value_and_grad(
      functools.partial(reg.dr3_penalty, config=cfg), argnums=(0, 1))(
          jnp.asarray(phi), jnp.asarray(phi_next))
  (v1, g1), (v2, g2) = f(reg.DR3_PAPER), f(reg.DR3_DOPAMINE_LAB)
  np.testing.assert_allclose(float(v1), float(v2), rtol=1e-6)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_dr3_registry_and_unknown_name():
  assert reg.dr3_config("paper") is reg.DR3_PAPER
  assert reg.dr3_config("dopamine_lab") is reg.DR3_DOPAMINE_LAB
  for name, cfg in reg.DR3_VARIANTS.items():
    assert reg.dr3_config(name) == cfg
  with pytest.raises(ValueError) as err:
    reg.dr3_config("dr4")
  assert "dr4" in str(err.value)
  for name in reg.DR3_VARIANTS:
    assert name in str(err.value)


def test_dr3_config_validation_and_frozen():
  with pytest.raises(ValueError, match="features"):
    reg.DR3Config(features="state_action")
  with pytest.raises(ValueError, match="reduction"):
    reg.DR3Config(reduction="max")
  with pytest.raises(dataclasses.FrozenInstanceError):
    reg.DR3_PAPER.absolute = True


def test_dr3_missing_inputs_raise():
  phi, phi_next, action, next_action, terminal = map(jnp.asarray, dr3_data())
  with pytest.raises(ValueError, match="action"):
    reg.dr3_penalty(phi, phi_next, config=reg.DR3Config(features="action"))
  with pytest.raises(ValueError, match="terminal"):
    reg.dr3_penalty(phi, phi_next, config=reg.DR3Config(mask_terminal=True))
  with pytest.raises(ValueError, match="shape"):
    reg.dr3_penalty(phi, phi_next[:, :-1], config=reg.DR3_PAPER)


@pytest.mark.parametrize("base", [reg.DR3_PAPER, reg.DR3_DOPAMINE_LAB,
                                  reg.DR3Config(features="action", reduction="sum")],
                         ids=["paper", "lab", "action_sum"])
def test_dr3_stop_gradient_next(base):
  phi, phi_next, action, next_action, terminal = dr3_data()
  grads = lambda cfg: jax.grad(
      lambda p, q: call(cfg, p, q, action, next_action, terminal), argnums=(0, 1))(
          jnp.asarray(phi), jnp.asarray(phi_next))
  g_phi, g_next = grads(base)
  s_phi, s_next = grads(dataclasses.replace(base, stop_gradient_next=True))
  assert np.abs(np.asarray(g_next)).max() > 0  # without the stop, phi_next gets gradient
  np.testing.assert_array_equal(np.asarray(s_next), 0.0)
  np.testing.assert_allclose(np.asarray(s_phi), np.asarray(g_phi), rtol=1e-6)


def test_dr3_paper_gradient_closed_form():
  # d/dphi mean_b phi_b . phi'_b = phi' / B (and symmetric for phi').
  phi, phi_next, *_ = dr3_data()
  g_phi, g_next = jax.grad(functools.partial(reg.dr3_penalty, config=reg.DR3_PAPER),
                           argnums=(0, 1))(jnp.asarray(phi), jnp.asarray(phi_next))
  np.testing.assert_allclose(np.asarray(g_phi), phi_next / B, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g_next), phi / B, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dr3_mask_terminal_ignores_terminal_rows(reduction):
  phi, phi_next, action, next_action, terminal = dr3_data()
  cfg = reg.DR3Config(mask_terminal=True, reduction=reduction)
  value = float(call(cfg, phi, phi_next, action, next_action, terminal))
  changed = phi_next.copy()
  changed[terminal] = 1e3
  assert float(call(cfg, phi, changed, action, next_action, terminal)) == pytest.approx(
      value, rel=1e-6)
  # A non-finite feature on a terminal row leaks into neither the value nor the gradients.
  changed[terminal] = np.nan
  v, (g_phi, g_next) = jax.value_and_grad(
      lambda p, q: call(cfg, p, q, action, next_action, terminal), argnums=(0, 1))(
          jnp.asarray(phi), jnp.asarray(changed))
  assert float(v) == pytest.approx(value, rel=1e-6)
  assert np.all(np.isfinite(np.asarray(g_phi)))
  assert np.all(np.isfinite(np.asarray(g_next)))
  np.testing.assert_array_equal(np.asarray(g_next)[terminal], 0.0)
  # Whereas a non-terminal row does change it.
  moved = phi_next.copy()
  moved[~terminal] += 1.0
  moved_value = float(call(cfg, phi, moved, action, next_action, terminal))
  assert moved_value != pytest.approx(value)
  # No gradient reaches terminal rows.
  g = jax.grad(lambda p: call(cfg, p, phi_next, action, next_action, terminal))(
      jnp.asarray(phi))
  np.testing.assert_array_equal(np.asarray(g)[terminal], 0.0)
  assert np.abs(np.asarray(g)[~terminal]).max() > 0
  # Mean is over the non-terminal rows only (5 of 7).
  kept = np.sum(phi[~terminal].astype(np.float64) * phi_next[~terminal], axis=1)
  expected = kept.mean() if reduction == "mean" else kept.sum()
  assert value == pytest.approx(expected, rel=1e-5)


def test_dr3_all_terminal_is_zero_with_finite_gradient():
  phi, phi_next, action, next_action, _ = dr3_data()
  terminal = np.ones(B, bool)
  cfg = reg.DR3Config(mask_terminal=True)
  value, g = jax.value_and_grad(
      lambda p: call(cfg, p, phi_next, action, next_action, terminal))(jnp.asarray(phi))
  assert float(value) == 0.0
  np.testing.assert_array_equal(np.asarray(g), 0.0)


@pytest.mark.parametrize("absolute", [False, True])
def test_dr3_action_aware_equals_explicit_kronecker_features(absolute):
  phi, phi_next, action, next_action, terminal = dr3_data(5)
  eye = np.eye(A)
  # phi(s, a) = phi(s) (x) e_a, a D*A vector; DR3 dots phi(s, a) with phi(s', a').
  dots = np.array([np.dot(np.kron(phi[b].astype(np.float64), eye[action[b]]),
                          np.kron(phi_next[b].astype(np.float64), eye[next_action[b]]))
                   for b in range(B)])
  if absolute:
    dots = np.abs(dots)
  cfg = reg.DR3Config(features="action", absolute=absolute)
  for kw in ({}, {"num_actions": A}):
    np.testing.assert_allclose(float(call(cfg, phi, phi_next, action, next_action,
                                          terminal, **kw)), dots.mean(), rtol=1e-5)


def test_dr3_action_aware_num_actions_zeroes_out_of_range_actions():
  # Hand example: row 0 has padding actions -1 == -1; row 1 matches on action 1.
  phi = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32)
  phi_next = np.array([[1.0, 1.0], [2.0, 5.0]], np.float32)   # dots 3 and 6
  a = np.array([-1, 1], np.int32)
  cfg = reg.DR3Config(features="action", reduction="sum")
  kw = dict(action=jnp.asarray(a), next_action=jnp.asarray(a), config=cfg)
  assert float(reg.dr3_penalty(phi, phi_next, **kw)) == pytest.approx(9.0)
  assert float(reg.dr3_penalty(phi, phi_next, num_actions=2, **kw)) == pytest.approx(6.0)


def test_dr3_jits():
  phi, phi_next, action, next_action, terminal = map(jnp.asarray, dr3_data())
  cfg = reg.DR3Config(features="action", absolute=True, mask_terminal=True)
  f = jax.jit(functools.partial(reg.dr3_penalty, config=cfg, num_actions=A))
  got = f(phi, phi_next, action=action, next_action=next_action, terminal=terminal)
  np.testing.assert_allclose(float(got), np_dr3(*dr3_data(), cfg), rtol=1e-5)


# ------------------------------------------------------------------------------ CQL


def np_cql(q, a, tau=1.0):
  q = np.asarray(q, np.float64)
  soft = tau * special.logsumexp(q / tau, axis=1)
  return np.mean(soft - q[np.arange(q.shape[0]), a])


@pytest.mark.parametrize("tau", [1.0, 0.5, 3.0])
def test_cql_matches_scipy(tau):
  rng = np.random.default_rng(7)
  q = rng.standard_normal((8, 4)).astype(np.float32) * 2
  a = rng.integers(0, 4, 8)
  got = float(reg.cql_penalty(jnp.asarray(q), jnp.asarray(a), tau))
  np.testing.assert_allclose(got, np_cql(q, a, tau), rtol=1e-5)


def test_cql_hand_example():
  q = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]], np.float32)
  a = np.array([0, 1])
  # Row 0: log(1 + 3) - 0; row 1: log 4 - log 3.
  expected = (math.log(4.0) + math.log(4.0 / 3.0)) / 2
  assert float(reg.cql_penalty(jnp.asarray(q), jnp.asarray(a))) == pytest.approx(
      expected, rel=1e-6)
  # tau -> 0: tau logsumexp(q / tau) -> max q, so the penalty -> mean(max q - q[a]).
  small = float(reg.cql_penalty(jnp.asarray(q), jnp.asarray(a), temperature=1e-3))
  assert small == pytest.approx(math.log(3.0) / 2, abs=1e-3)


@pytest.mark.parametrize("scale", [1e4, -1e4, 3e37])
def test_cql_large_magnitude_is_stable(scale):
  rng = np.random.default_rng(8)
  q = (scale * (1.0 + 0.01 * rng.standard_normal((6, 5)))).astype(np.float32)
  a = rng.integers(0, 5, 6)
  got = reg.cql_penalty(jnp.asarray(q), jnp.asarray(a))
  assert np.isfinite(float(got))
  # Naive exp would overflow in float32; the reference is computed in float64 by scipy.
  np.testing.assert_allclose(float(got), np_cql(q, a), rtol=1e-4,
                             atol=1e-6 * abs(scale))
  assert np.all(np.isfinite(np.asarray(
      jax.grad(reg.cql_penalty)(jnp.asarray(q), jnp.asarray(a)))))


def test_cql_gradient_is_softmax_minus_onehot_and_lowers_with_q_data():
  rng = np.random.default_rng(9)
  q = rng.standard_normal((5, 3)).astype(np.float32)
  a = np.array([0, 2, 1, 1, 0])
  tau = 0.7
  g = np.asarray(jax.grad(reg.cql_penalty)(jnp.asarray(q), jnp.asarray(a), tau))
  softmax = special.softmax(q.astype(np.float64) / tau, axis=1)
  onehot = np.eye(3)[a]
  np.testing.assert_allclose(g, (softmax - onehot) / 5, rtol=1e-5, atol=1e-7)
  # Increasing Q of the dataset action lowers the penalty; other actions raise it.
  assert np.all(g[np.arange(5), a] < 0)
  assert np.all(g[onehot == 0] > 0)
  bumped = q.copy()
  bumped[np.arange(5), a] += 0.1
  assert float(reg.cql_penalty(jnp.asarray(bumped), jnp.asarray(a), tau)) < float(
      reg.cql_penalty(jnp.asarray(q), jnp.asarray(a), tau))


def test_cql_rejects_nonpositive_temperature():
  q, a = jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32)
  for tau in (0.0, -1.0):
    with pytest.raises(ValueError, match="temperature"):
      reg.cql_penalty(q, a, tau)


def test_cql_quantiles_uses_quantile_mean():
  rng = np.random.default_rng(10)
  n = 6
  quantiles = rng.standard_normal((4, 3, n)).astype(np.float32) * 3
  a = np.array([2, 0, 1, 2])
  expected = np_cql(quantiles.astype(np.float64).mean(axis=2), a)
  got = float(reg.cql_penalty_quantiles(jnp.asarray(quantiles), jnp.asarray(a)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Not the same as treating every quantile as a logit (logsumexp over A * N atoms).
  atoms = special.logsumexp(quantiles.reshape(4, -1).astype(np.float64), axis=1)
  assert got != pytest.approx(np.mean(atoms - quantiles.mean(2)[np.arange(4), a]))
  # Gradient spreads (softmax(mean) - onehot) / B evenly over the N quantiles.
  g = np.asarray(jax.grad(reg.cql_penalty_quantiles)(jnp.asarray(quantiles),
                                                     jnp.asarray(a)))
  per_action = (special.softmax(quantiles.astype(np.float64).mean(2), axis=1)
                - np.eye(3)[a]) / 4
  np.testing.assert_allclose(g, np.repeat(per_action[:, :, None] / n, n, axis=2),
                             rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------ coefficient


@pytest.mark.parametrize("value", [0, 0.0, 0.001, 0.1, 10, np.float32(0.5)])
def test_check_coefficient_accepts_finite_nonnegative(value):
  assert reg.check_coefficient("DQNAgent.dr3_coefficient", value) is None


@pytest.mark.parametrize("value", [-0.1, -1, float("nan"), float("inf"), float("-inf"),
                                   "abc", None])
def test_check_coefficient_rejects(value):
  with pytest.raises(ValueError, match=r"FooAgent\.lp_coefficient"):
    reg.check_coefficient("FooAgent.lp_coefficient", value)

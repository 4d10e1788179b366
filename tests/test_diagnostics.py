"""Tests for batch_rl.diagnostics against float64 numpy references."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import diagnostics

TAGS = {"Rank/srank", "Rank/sigma_max", "Rank/sigma_min", "Features/norm",
        "Features/dead_units"}


def _ref_srank(phi_or_sv, delta):
  """Loop-based reference: float64 SVD, first k whose prefix reaches 1-delta."""
  a = np.asarray(phi_or_sv, np.float64)
  sv = np.linalg.svd(a, compute_uv=False) if a.ndim == 2 else a
  total = sv.sum()
  if total == 0:
    return 0
  running = 0.0
  for k, s in enumerate(sv, start=1):
    running += s
    if running / total >= 1 - delta:
      return k
  return len(sv)


def _margin(sv, delta):
  """Distance of the cumulative fractions from the 1-delta boundary.

  Used to assert that a test case is not a float32 coin flip (see the tie
  note in `diagnostics.srank`).
  """
  sv = np.asarray(sv, np.float64)
  return np.min(np.abs(np.cumsum(sv) / sv.sum() - (1 - delta)))


def _orthonormal(n, k, rng):
  q, _ = np.linalg.qr(rng.standard_normal((n, k)))
  return q


def _with_spectrum(s, n, d, seed):
  """[n, d] float64 matrix U diag(s) V^T with random orthonormal U, V."""
  rng = np.random.default_rng(seed)
  s = np.asarray(s, np.float64)
  k = len(s)
  return _orthonormal(n, k, rng) @ np.diag(s) @ _orthonormal(d, k, rng).T


# ---------------------------------------------------------------------------
# singular_values


@pytest.mark.parametrize("shape", [(64, 32), (16, 40)])
def test_singular_values_match_numpy(shape):
  phi = np.random.default_rng(0).standard_normal(shape)
  sv = diagnostics.singular_values(jnp.asarray(phi, jnp.float32))
  assert sv.shape == (min(shape),) and sv.dtype == jnp.float32
  assert np.all(np.diff(np.asarray(sv)) <= 0)  # descending
  ref = np.linalg.svd(phi, compute_uv=False)
  np.testing.assert_allclose(sv, ref, rtol=1e-4, atol=1e-4 * ref[0])


def test_singular_values_rejects_non_matrix():
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    diagnostics.singular_values(jnp.ones((2, 3, 4)))


# ---------------------------------------------------------------------------
# srank on explicit spectra


@pytest.mark.parametrize("sv, delta, expected", [
    # Exact rank with delta = 0: cumsum 2, 3, 3, 3 first reaches 3 at k = 2.
    ([2.0, 1.0, 0.0, 0.0], 0.0, 2),
    # Uniform spectrum, delta = 0: needs all 7.
    ([1.0] * 7, 0.0, 7),
    # s = (3, 1, 0.02), total 4.02: fractions 3/4.02 = 0.74627,
    # 4/4.02 = 0.99502, 1.0.
    ([3.0, 1.0, 0.02], 0.01, 2),    # 0.99502 >= 0.99
    ([3.0, 1.0, 0.02], 0.001, 3),   # 0.99502 <  0.999
    ([3.0, 1.0, 0.02], 0.3, 1),     # 0.74627 >= 0.7
    ([3.0, 1.0, 0.02], 0.25, 2),    # 0.74627 <  0.75
    # Cumulative, not a threshold on sv / sv_max: one value 1.0 and 100 tail
    # values 0.004 (each < 1% of sv_max, so a relative threshold would say 1).
    # Total 1.4; with m tail values the fraction is (1 + 0.004 m) / 1.4:
    # m = 96 -> 1.384 / 1.4 = 0.98857 < 0.99, m = 97 -> 1.388 / 1.4 = 0.99143.
    ([1.0] + [0.004] * 100, 0.01, 98),
    # Geometric s_i = 2^-(i-1), i = 1..20: fraction (1 - 2^-k) / (1 - 2^-20)
    # >= 0.99  <=>  2^-k <= 0.01 + 0.99 * 2^-20 = 0.0100009: 2^-6 = 0.0156,
    # 2^-7 = 0.0078 -> 7.
    (0.5 ** np.arange(20), 0.01, 7),
    # Geometric s_i = 0.9^(i-1), i = 1..100: 0.9^k <= 0.01 + 0.99 * 0.9^100
    # = 0.010026; 0.9^43 = 0.01078, 0.9^44 = 0.00970 -> 44.
    (0.9 ** np.arange(100), 0.01, 44),
    # Same, delta = 0.1: 0.9^k <= 0.1 + 0.9 * 0.9^100 = 0.100024;
    # 0.9^21 = 0.1094, 0.9^22 = 0.0985 -> 22.
    (0.9 ** np.arange(100), 0.1, 22),
])
def test_srank_hand_worked(sv, delta, expected):
  k = diagnostics.srank(jnp.asarray(sv, jnp.float32), delta)
  assert k.dtype == jnp.int32 and k.shape == ()
  assert int(k) == expected == _ref_srank(sv, delta)


def test_srank_all_zero_and_non_finite():
  assert int(diagnostics.srank(jnp.zeros(5))) == 0
  assert int(diagnostics.srank(jnp.array([1.0, jnp.nan]))) == -1
  assert int(diagnostics.srank(jnp.array([jnp.inf, 1.0]))) == -1


def test_srank_jits_with_traced_delta():
  sv = jnp.asarray([3.0, 1.0, 0.02], jnp.float32)
  f = jax.jit(diagnostics.srank)
  assert [int(f(sv, d)) for d in (0.3, 0.01, 0.001)] == [1, 2, 3]


# ---------------------------------------------------------------------------
# srank of matrices with prescribed spectra


@pytest.mark.parametrize("delta, expected", [
    # s = (5, 4, 3, 2, 1), total 15; fractions 1/3, 0.6, 0.8, 0.9333, 1.
    (0.01, 5), (0.1, 4), (0.25, 3), (0.5, 2), (0.7, 1),
])
def test_srank_of_exact_rank_5_matrix(delta, expected):
  # Rank 5 in a 64 x 32 matrix: the 27 zero singular values come out of the
  # float32 SVD as ~1e-6, far below delta * total.
  phi = _with_spectrum([5.0, 4.0, 3.0, 2.0, 1.0], 64, 32, seed=1)
  assert _ref_srank(phi, delta) == expected
  sv = diagnostics.singular_values(jnp.asarray(phi, jnp.float32))
  assert int(diagnostics.srank(sv, delta)) == expected
  out = diagnostics.feature_diagnostics(jnp.asarray(phi, jnp.float32), delta=delta)
  assert float(out["Rank/srank"]) == expected
  np.testing.assert_allclose(out["Rank/sigma_max"], 5.0, rtol=1e-5)
  assert abs(float(out["Rank/sigma_min"])) < 1e-4


def test_srank_hand_worked_3x3_matrix():
  # s = (3, 1, 0.02): fractions 0.74627, 0.99502, 1 (see test_srank_hand_worked).
  phi = jnp.asarray(_with_spectrum([3.0, 1.0, 0.02], 3, 3, seed=2), jnp.float32)
  for delta, expected in ((0.01, 2), (0.001, 3), (0.3, 1)):
    assert float(diagnostics.feature_diagnostics(phi, delta=delta)["Rank/srank"]) \
        == expected
  out = diagnostics.feature_diagnostics(phi)
  np.testing.assert_allclose(out["Rank/sigma_max"], 3.0, rtol=1e-5)
  np.testing.assert_allclose(out["Rank/sigma_min"], 0.02, rtol=1e-3)


def test_srank_random_spectra_match_float64_reference():
  checked = 0
  for seed in range(12):
    rng = np.random.default_rng(100 + seed)
    # Sorted spectra with a random decay rate and random level noise.
    s = np.sort(rng.exponential(1.0, 48) * np.exp(-np.arange(48) / rng.uniform(3, 30)))[::-1]
    phi = _with_spectrum(s, 96, 48, seed=seed)
    sv = diagnostics.singular_values(jnp.asarray(phi, jnp.float32))
    ref_sv = np.linalg.svd(phi, compute_uv=False)
    for delta in (0.01, 0.05, 0.2):
      # float32 cumulative fractions are within ~1e-6 of float64 (measured);
      # skip exact-boundary coin flips.
      if _margin(ref_sv, delta) < 1e-5:
        continue
      checked += 1
      assert int(diagnostics.srank(sv, delta)) == _ref_srank(ref_sv, delta), (seed, delta)
  assert checked >= 30


# ---------------------------------------------------------------------------
# feature_diagnostics


def _np_diagnostics(phi, phi_next=None, delta=0.01):
  phi = np.asarray(phi, np.float64)
  sv = np.linalg.svd(phi, compute_uv=False)
  out = {
      "Rank/srank": _ref_srank(sv, delta),
      "Rank/sigma_max": sv[0],
      "Rank/sigma_min": sv[-1],
      "Features/norm": np.mean([np.sqrt(row @ row) for row in phi]),
      "Features/dead_units": np.mean([not np.any(col) for col in phi.T]),
  }
  if phi_next is not None:
    phi_next = np.asarray(phi_next, np.float64)
    out["Features/dot_next"] = np.mean([a @ b for a, b in zip(phi, phi_next)])
  return out


def _assert_matches(out, ref):
  assert set(out) == set(ref)
  assert float(out["Rank/srank"]) == ref["Rank/srank"]
  for key in ref:
    if key != "Rank/srank":
      np.testing.assert_allclose(out[key], ref[key], rtol=1e-4,
                                 atol=1e-5 * ref["Rank/sigma_max"], err_msg=key)


def test_feature_diagnostics_keys_dtypes_and_values():
  rng = np.random.default_rng(3)
  phi = np.maximum(rng.standard_normal((128, 32)), 0).astype(np.float32)
  phi_next = np.maximum(rng.standard_normal((128, 32)), 0).astype(np.float32)
  out = diagnostics.feature_diagnostics(jnp.asarray(phi))
  assert set(out) == TAGS
  out_next = diagnostics.feature_diagnostics(jnp.asarray(phi), jnp.asarray(phi_next))
  assert set(out_next) == TAGS | {"Features/dot_next"}
  for v in out_next.values():
    assert v.shape == () and v.dtype == jnp.float32
  _assert_matches(out_next, _np_diagnostics(phi, phi_next))


def test_feature_diagnostics_wide_matrix_sigma_min():
  # N < D: sigma_min is the smallest of the N singular values, not 0.
  phi = _with_spectrum([4.0, 2.0, 1.0, 0.5], 4, 16, seed=4).astype(np.float32)
  out = diagnostics.feature_diagnostics(jnp.asarray(phi))
  np.testing.assert_allclose(out["Rank/sigma_min"], 0.5, rtol=1e-4)
  _assert_matches(out, _np_diagnostics(phi))


def test_dead_units_on_constructed_matrix():
  rng = np.random.default_rng(5)
  phi = np.abs(rng.standard_normal((100, 8))).astype(np.float32) + 0.1
  phi[:, 2] = 0.0                   # dead
  phi[:, 5] = 0.0                   # dead
  phi[:, 7] = 0.0
  phi[37, 7] = 1e-30                # alive on one row only: not dead
  phi[:, 0] = -np.abs(phi[:, 0])    # negative but non-zero: not dead
  out = diagnostics.feature_diagnostics(jnp.asarray(phi))
  assert float(out["Features/dead_units"]) == 2 / 8
  _assert_matches(out, _np_diagnostics(phi))


def test_all_zero_matrix():
  out = diagnostics.feature_diagnostics(jnp.zeros((16, 8)), jnp.ones((16, 8)))
  assert float(out["Rank/srank"]) == 0
  for key in ("Rank/sigma_max", "Rank/sigma_min", "Features/norm",
              "Features/dot_next"):
    assert float(out[key]) == 0.0, key
  assert float(out["Features/dead_units"]) == 1.0


def test_non_finite_features_give_nan_srank():
  phi = jnp.ones((8, 4)).at[3, 1].set(jnp.nan)
  out = diagnostics.feature_diagnostics(phi)
  assert np.isnan(float(out["Rank/srank"]))


def test_norm_and_dot_next_hand_worked():
  phi = jnp.array([[3.0, 4.0], [0.0, 1.0]])        # norms 5, 1 -> mean 3
  phi_next = jnp.array([[1.0, 1.0], [2.0, -2.0]])  # dots 7, -2 -> mean 2.5
  out = diagnostics.feature_diagnostics(phi, phi_next)
  assert float(out["Features/norm"]) == pytest.approx(3.0)
  assert float(out["Features/dot_next"]) == pytest.approx(2.5)


def test_shape_errors():
  with pytest.raises(ValueError, match="phi_next shape"):
    diagnostics.feature_diagnostics(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    diagnostics.feature_diagnostics(jnp.ones((4,)))


def test_jit_matches_eager():
  rng = np.random.default_rng(6)
  phi = jnp.asarray(np.maximum(rng.standard_normal((128, 32)), 0), jnp.float32)
  phi_next = jnp.asarray(rng.standard_normal((128, 32)), jnp.float32)
  f = jax.jit(diagnostics.feature_diagnostics)
  for args in ((phi,), (phi, phi_next)):
    eager = diagnostics.feature_diagnostics(*args)
    jitted = f(*args)
    assert set(eager) == set(jitted)
    for key in eager:
      np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, err_msg=key)


def test_realistic_size_2048x512_and_timing():
  """Batch of N = 2048 states, D = 512 features, as logged during training."""
  f = jax.jit(diagnostics.feature_diagnostics)
  # (a) Prescribed spectrum s_i = exp(-(i-1)/40), i = 1..512, r = e^(-1/40):
  # fraction (1 - r^k) / (1 - r^512) >= 0.99  <=>  r^k <= 0.01 + 0.99 e^-12.8
  # = 0.0100027  <=>  k >= 40 ln(1 / 0.0100027) = 184.2 -> 185.
  s = np.exp(-np.arange(512) / 40.0)
  phi = _with_spectrum(s, 2048, 512, seed=7).astype(np.float32)
  assert _ref_srank(s, 0.01) == 185 and _margin(s, 0.01) > 1e-5
  out = f(jnp.asarray(phi))
  assert float(out["Rank/srank"]) == 185
  _assert_matches(out, _np_diagnostics(phi))
  # (b) ReLU features of a noisy rank-64 pre-activation (dead units included).
  rng = np.random.default_rng(8)
  pre = rng.standard_normal((2048, 64)) @ rng.standard_normal((64, 512)) / 8 \
      + 0.1 * rng.standard_normal((2048, 512))
  pre[:, :20] -= 100.0  # 20 dead units
  phi = np.maximum(pre, 0).astype(np.float32)
  phi_next = np.roll(phi, 1, axis=0)
  ref = _np_diagnostics(phi, phi_next)
  assert _margin(np.linalg.svd(phi.astype(np.float64), compute_uv=False), 0.01) > 1e-5
  out = jax.block_until_ready(f(jnp.asarray(phi), jnp.asarray(phi_next)))
  _assert_matches(out, ref)
  assert float(out["Features/dead_units"]) == 20 / 512
  # Timing after compilation (reported, not asserted: the CPU is shared).
  args = (jnp.asarray(phi), jnp.asarray(phi_next))
  times = []
  for _ in range(3):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  print(f"\nfeature_diagnostics 2048x512 jitted: {1e3 * min(times):.1f} ms "
        f"(min of 3, after compilation)")


# ===========================================================================
# Extended diagnostics: other rank definitions, eigenvalue srank (IUP A.7),
# spectrum quantiles, dormant units (Sokar et al. 2023), cosine similarity.

EXT_TAGS = {"Rank/srank_eig", "Rank/rank_eps", "Rank/rank_rel",
            "Rank/effective_rank_roy", "Rank/feature_rank_lyle",
            "Rank/sigma_q10", "Rank/sigma_q50", "Rank/sigma_q90",
            "Features/dormant"}


def _ref_rank_eps(sv, eps):
  return sum(1 for s in np.asarray(sv, np.float64) if s > eps)


def _ref_rank_rel(sv, t):
  """Dopamine MoE lab `srank_{t}`: sum(sv / max(sv) > t), in float64."""
  sv = np.asarray(sv, np.float64)
  return 0 if sv.max() == 0 else int(np.sum(sv / sv.max() > t))


def _ref_eig_moduli(m):
  return np.sort(np.abs(np.linalg.eigvals(np.asarray(m, np.float64))))[::-1]


def _ref_erank_roy(sv):
  """Roy and Vetterli (2007): exp of the entropy of sv / sum(sv), float64 loop."""
  sv = np.asarray(sv, np.float64)
  total = sv.sum()
  entropy = -sum(s / total * np.log(s / total) for s in sv if s > 0)
  return float(np.exp(entropy))


def _ref_feature_rank_lyle(sv, n, eps=0.01):
  """Lyle et al. (2022): #{sigma of Phi / sqrt(n) > eps}, float64."""
  return sum(1 for s in np.asarray(sv, np.float64) if s / np.sqrt(n) > eps)


def _ref_dormant_scores(phi):
  phi = np.asarray(phi, np.float64)
  e = np.array([np.mean([abs(x) for x in col]) for col in phi.T])
  return e / e.mean() if e.mean() > 0 else np.zeros_like(e)


def _ref_cosine(phi, phi_next):
  cos = []
  for a, b in zip(np.asarray(phi, np.float64), np.asarray(phi_next, np.float64)):
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    cos.append(0.0 if na == 0 or nb == 0 else (a @ b) / (na * nb))
  return np.mean(cos)


def _similar(p, seed, cond_log=0.5):
  """Random well-conditioned P = U diag(e^u) V^T, u in +-cond_log: cond(P) <= e^(2 cond_log)."""
  rng = np.random.default_rng(seed)
  return (_orthonormal(p, p, rng) @ np.diag(np.exp(rng.uniform(-cond_log, cond_log, p)))
          @ _orthonormal(p, p, rng).T)


# ---------------------------------------------------------------------------
# rank_above_threshold / matrix_rank_tolerance


@pytest.mark.parametrize("eps, expected", [
    # sv = (3, 1, 0.02, 1e-6, 0); count of values strictly above eps.
    (1e-5, 3), (1e-7, 4), (0.0, 4), (0.02, 2), (0.019, 3), (0.5, 2),
    (2.9, 1), (3.0, 0),
])
def test_rank_above_threshold_hand_worked(eps, expected):
  sv = [3.0, 1.0, 0.02, 1e-6, 0.0]
  k = diagnostics.rank_above_threshold(jnp.asarray(sv, jnp.float32), eps)
  assert k.dtype == jnp.int32 and k.shape == ()
  assert int(k) == expected == _ref_rank_eps(sv, eps)


def test_rank_above_threshold_matrix_and_scaled_tolerance():
  # Exact rank 5 in 64 x 32, spectrum (5, 4, 3, 2, 1, 0 x 27). The float32 SVD
  # turns the 27 zeros into noise < 1e-5; tolerance 5 * 64 * 2^-23 = 3.81e-5.
  phi = _with_spectrum([5.0, 4.0, 3.0, 2.0, 1.0], 64, 32, seed=1)
  phi32 = phi.astype(np.float32)
  sv = diagnostics.singular_values(jnp.asarray(phi32))
  assert float(np.max(np.asarray(sv)[5:])) < 1e-5
  tol = diagnostics.matrix_rank_tolerance(sv, phi.shape)
  np.testing.assert_allclose(tol, 5.0 * 64 * np.finfo(np.float32).eps, rtol=1e-5)
  assert int(diagnostics.rank_above_threshold(sv, tol)) == 5
  # Same decision as numpy's matrix_rank on the float32 matrix (float32 eps).
  assert np.linalg.matrix_rank(phi32) == 5
  assert int(diagnostics.rank_above_threshold(sv, 1e-5)) == 5
  assert int(diagnostics.rank_above_threshold(sv, 1.5)) == 4
  # Absolute epsilon is scale-dependent, the scaled tolerance is not.
  sv_small = diagnostics.singular_values(jnp.asarray(phi32 * 1e-6))
  assert int(diagnostics.rank_above_threshold(sv_small, 1e-5)) == 0
  tol_small = diagnostics.matrix_rank_tolerance(sv_small, phi.shape)
  assert int(diagnostics.rank_above_threshold(sv_small, tol_small)) == 5
  # Random full-rank matrices agree with numpy.
  for seed in range(3):
    a = np.random.default_rng(seed).standard_normal((40, 24)).astype(np.float32)
    s = diagnostics.singular_values(jnp.asarray(a))
    assert int(diagnostics.rank_above_threshold(
        s, diagnostics.matrix_rank_tolerance(s, a.shape))) == \
        np.linalg.matrix_rank(a) == 24


def test_rank_above_threshold_edge_cases_and_jit():
  assert int(diagnostics.rank_above_threshold(jnp.zeros(4), 0.0)) == 0
  assert int(diagnostics.rank_above_threshold(jnp.array([1.0, jnp.nan]), 1e-5)) == -1
  assert int(diagnostics.rank_above_threshold(jnp.array([jnp.inf, 1.0]), 1e-5)) == -1
  f = jax.jit(diagnostics.rank_above_threshold)
  sv = jnp.asarray([3.0, 1.0, 0.02], jnp.float32)
  assert [int(f(sv, e)) for e in (0.01, 0.5, 2.0, 5.0)] == [3, 2, 1, 0]


# ---------------------------------------------------------------------------
# rank_relative_to_max


@pytest.mark.parametrize("sv, t, expected", [
    # One value 1.0 and 100 values 0.004: ratios 0.004 < 0.01 -> 1, while
    # IUP's cumulative srank_0.01 of the same spectrum is 98 (see above).
    ([1.0] + [0.004] * 100, 0.01, 1),
    ([1.0] + [0.004] * 100, 0.003, 101),
    # s = (4, 2, 1, 0.5, 0): ratios 1, 0.5, 0.25, 0.125, 0. Strict ">": the
    # ratio 0.5 (exact in binary) does not pass t = 0.5.
    ([4.0, 2.0, 1.0, 0.5, 0.0], 0.5, 1),
    ([4.0, 2.0, 1.0, 0.5, 0.0], 0.49, 2),
    ([4.0, 2.0, 1.0, 0.5, 0.0], 0.2, 3),
    ([4.0, 2.0, 1.0, 0.5, 0.0], 0.1, 4),
    ([4.0, 2.0, 1.0, 0.5, 0.0], 0.0, 4),   # t = 0: every non-zero value
    ([0.5, 4.0, 0.0, 1.0, 2.0], 0.2, 3),   # order does not matter
    ([0.0, 0.0, 0.0], 0.0, 0),             # all zero (Dopamine: 0/0 > 0 False)
])
def test_rank_relative_to_max_hand_worked(sv, t, expected):
  k = diagnostics.rank_relative_to_max(jnp.asarray(sv, jnp.float32), t)
  assert k.dtype == jnp.int32 and k.shape == ()
  assert int(k) == expected == _ref_rank_rel(sv, t)


def test_rank_relative_to_max_is_not_iup_srank_and_matrix():
  s = [1.0] + [0.004] * 100
  assert int(diagnostics.srank(jnp.asarray(s, jnp.float32), 0.01)) == 98
  assert int(diagnostics.rank_relative_to_max(jnp.asarray(s, jnp.float32), 0.01)) == 1
  # Matrix with spectrum (10, 5, 0.2, 0.05, 0.001): ratios 1, 0.5, 0.02, 0.005,
  # 1e-4 -> 3 at t = 0.01, 4 at t = 0.001, 5 at t = 1e-5.
  phi = _with_spectrum([10.0, 5.0, 0.2, 0.05, 0.001], 48, 5, seed=9)
  sv = diagnostics.singular_values(jnp.asarray(phi, jnp.float32))
  assert [int(diagnostics.rank_relative_to_max(sv, t))
          for t in (0.01, 0.001, 1e-5)] == [3, 4, 5]
  assert int(diagnostics.rank_relative_to_max(jnp.array([jnp.nan, 1.0]), 0.01)) == -1
  f = jax.jit(diagnostics.rank_relative_to_max)
  assert [int(f(sv, t)) for t in (0.01, 0.001)] == [3, 4]


# ---------------------------------------------------------------------------
# srank_eig (IUP Appendix A.7)


@pytest.mark.parametrize("delta, expected", [
    # Symmetric Q diag(l) Q^T, l = (5, -4, 3, -2, 1): |l| = (5, 4, 3, 2, 1) =
    # the singular values, total 15, fractions 1/3, 0.6, 0.8, 0.9333, 1.
    (0.01, 5), (0.1, 4), (0.25, 3), (0.5, 2), (0.7, 1),
])
def test_srank_eig_symmetric_equals_srank(delta, expected):
  q = _orthonormal(5, 5, np.random.default_rng(10))
  m = q @ np.diag([5.0, -4.0, 3.0, -2.0, 1.0]) @ q.T
  mj = jnp.asarray(m, jnp.float32)
  np.testing.assert_allclose(diagnostics.eigenvalue_moduli(mj), [5, 4, 3, 2, 1],
                             rtol=1e-5)
  k = diagnostics.srank_eig(mj, delta)
  assert k.dtype == jnp.int32 and k.shape == ()
  assert int(k) == expected == int(diagnostics.srank(diagnostics.singular_values(mj), delta))


@pytest.mark.parametrize("delta, expected", [
    # M = P B P^-1, B = blockdiag([[3, -4], [4, 3]], 2, -1, 0.5): eigenvalues
    # 3 +- 4i, 2, -1, 0.5; moduli (5, 5, 2, 1, 0.5), total 13.5; fractions
    # 5/13.5 = 0.37037, 10/13.5 = 0.74074, 12/13.5 = 0.88889,
    # 13/13.5 = 0.96296, 1.
    (0.01, 5), (0.05, 4), (0.12, 3), (0.3, 2), (0.65, 1),
    (0.03, 5),   # 0.96296 < 0.97
])
def test_srank_eig_complex_eigenvalues(delta, expected):
  b = np.zeros((5, 5))
  b[:2, :2] = [[3.0, -4.0], [4.0, 3.0]]
  b[2, 2], b[3, 3], b[4, 4] = 2.0, -1.0, 0.5
  p = _similar(5, seed=11)
  m = p @ b @ np.linalg.inv(p)
  assert not np.allclose(m, m.T)  # genuinely non-symmetric
  ref = _ref_eig_moduli(m)
  np.testing.assert_allclose(ref, [5, 5, 2, 1, 0.5], rtol=1e-10)
  mj = jnp.asarray(m, jnp.float32)
  np.testing.assert_allclose(diagnostics.eigenvalue_moduli(mj), ref, rtol=1e-4)
  assert int(diagnostics.srank_eig(mj, delta)) == expected == _ref_srank(ref, delta)


def test_srank_eig_differs_from_srank_on_non_normal_matrices():
  # [[1, 100], [0, 1]]: eigenvalues 1, 1 -> fractions 0.5, 1 -> 2 at 0.01.
  # Singular values: s1 s2 = det = 1, s1^2 + s2^2 = 10002 -> s1 = 100.0100,
  # s2 = 0.0099990; s1 / (s1 + s2) = 0.99990 >= 0.99 -> srank 1.
  jordan = jnp.array([[1.0, 100.0], [0.0, 1.0]])
  assert int(diagnostics.srank_eig(jordan, 0.01)) == 2
  assert int(diagnostics.srank(diagnostics.singular_values(jordan), 0.01)) == 1
  # Nilpotent [[0, 1], [0, 0]]: both eigenvalues 0 -> 0; singular values
  # (1, 0) -> srank 1.
  nil = jnp.array([[0.0, 1.0], [0.0, 0.0]])
  assert int(diagnostics.srank_eig(nil)) == 0
  assert int(diagnostics.srank(diagnostics.singular_values(nil))) == 1
  # Not the Gram matrix: eig(Phi^T Phi) = sigma^2 = (25, 16, 9, 4, 1),
  # total 55, fractions 0.4545, 0.7455, 0.9091, 0.9818, 1 -> 3 at delta 0.1,
  # whereas srank_eig(Phi) for symmetric Phi with |l| = (5..1) is 4.
  q = _orthonormal(5, 5, np.random.default_rng(10))
  phi = jnp.asarray(q @ np.diag([5.0, -4.0, 3.0, -2.0, 1.0]) @ q.T, jnp.float32)
  assert int(diagnostics.srank_eig(phi, 0.1)) == 4
  assert int(diagnostics.srank_eig(phi.T @ phi, 0.1)) == 3


def test_srank_eig_random_matrices_match_float64_reference():
  checked = 0
  for seed in range(6):
    rng = np.random.default_rng(200 + seed)
    d = 48
    # ReLU-like non-negative features with a decaying column scale.
    m = np.maximum(rng.standard_normal((d, d)), 0) * np.exp(-np.arange(d) / rng.uniform(4, 20))
    ref = _ref_eig_moduli(m)
    got = diagnostics.eigenvalue_moduli(jnp.asarray(m, jnp.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * ref[0])
    for delta in (0.01, 0.05, 0.2):
      if _margin(ref, delta) < 1e-4:
        continue
      checked += 1
      assert int(diagnostics.srank_eig(jnp.asarray(m, jnp.float32), delta)) == \
          _ref_srank(ref, delta), (seed, delta)
  assert checked >= 14


def test_srank_eig_edge_cases_and_jit():
  assert int(diagnostics.srank_eig(jnp.zeros((3, 3)))) == 0
  assert int(diagnostics.srank_eig(jnp.eye(4).at[1, 2].set(jnp.nan))) == -1
  assert int(diagnostics.srank_eig(jnp.eye(4).at[0, 0].set(jnp.inf))) == -1
  with pytest.raises(ValueError, match="square"):
    diagnostics.srank_eig(jnp.ones((4, 3)))
  m = jnp.asarray(np.diag([3.0, 1.0, 0.02]) @ np.array(
      [[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 1.0]]), jnp.float32)
  # Triangular: eigenvalues are the diagonal (3, 1, 0.02), fractions 0.74627,
  # 0.99502, 1.
  f = jax.jit(diagnostics.srank_eig)
  assert [int(f(m, d)) for d in (0.3, 0.01, 0.001)] == [1, 2, 3]


# ---------------------------------------------------------------------------
# spectrum_quantiles


def test_spectrum_quantiles_hand_worked():
  # Ascending (1, 2, 3, 4, 5), linear interpolation at position q * 4:
  # q = 0.1 -> 1.4, 0.5 -> 3, 0.9 -> 4.6; q = 0, 1 -> min, max.
  sv = jnp.asarray([5.0, 4.0, 3.0, 2.0, 1.0])
  q = diagnostics.spectrum_quantiles(sv)
  assert q.shape == (3,) and q.dtype == jnp.float32
  np.testing.assert_allclose(q, [1.4, 3.0, 4.6], rtol=1e-6)
  np.testing.assert_allclose(diagnostics.spectrum_quantiles(sv, (0.0, 0.25, 1.0)),
                             [1.0, 2.0, 5.0], rtol=1e-6)
  # Order does not matter.
  np.testing.assert_allclose(
      diagnostics.spectrum_quantiles(jnp.asarray([3.0, 1.0, 5.0, 2.0, 4.0])),
      [1.4, 3.0, 4.6], rtol=1e-6)
  assert np.isnan(diagnostics.spectrum_quantiles(jnp.array([1.0, jnp.nan]))).all()


def test_spectrum_quantiles_of_matrix():
  # Spectrum 32, 31, ..., 1 -> ascending 1..32, value at q is 1 + 31 q:
  # 4.1, 16.5, 28.9.
  s = np.arange(32, 0, -1.0)
  phi = _with_spectrum(s, 80, 32, seed=12).astype(np.float32)
  sv = diagnostics.singular_values(jnp.asarray(phi))
  q = diagnostics.spectrum_quantiles(sv)
  np.testing.assert_allclose(q, [4.1, 16.5, 28.9], rtol=1e-4)
  np.testing.assert_allclose(q, np.quantile(np.linalg.svd(phi.astype(np.float64),
                                                          compute_uv=False),
                                            [0.1, 0.5, 0.9]), rtol=1e-4)
  np.testing.assert_allclose(jax.jit(diagnostics.spectrum_quantiles)(sv), q, rtol=1e-6)


# ---------------------------------------------------------------------------
# dormant units (Sokar et al. 2023)


@pytest.mark.parametrize("tau, expected", [
    # phi rows (1, 0, 0.1, -3), (3, 0, -0.1, 1): E|h| = (2, 0, 0.1, 2), layer
    # mean 4.1 / 4 = 1.025, scores (1.95122, 0, 0.09756, 1.95122).
    (0.0, 1 / 4), (0.09, 1 / 4), (0.1, 2 / 4), (1.95, 2 / 4), (1.96, 4 / 4),
])
def test_dormant_fraction_hand_worked(tau, expected):
  phi = jnp.array([[1.0, 0.0, 0.1, -3.0], [3.0, 0.0, -0.1, 1.0]])
  scores = diagnostics.dormant_scores(phi)
  np.testing.assert_allclose(scores, [2 / 1.025, 0.0, 0.1 / 1.025, 2 / 1.025],
                             rtol=1e-6)
  np.testing.assert_allclose(scores, _ref_dormant_scores(phi), rtol=1e-6)
  frac = diagnostics.dormant_fraction(phi, tau)
  assert frac.shape == () and frac.dtype == jnp.float32
  assert float(frac) == expected


def test_dormant_tau_zero_equals_dead_units():
  rng = np.random.default_rng(5)
  # As in test_dead_units_on_constructed_matrix: 2 dead of 8; a unit alive on
  # one row only (1e-30) and a negative one are not dormant at tau = 0.
  phi = np.abs(rng.standard_normal((100, 8))).astype(np.float32) + 0.1
  phi[:, 2] = 0.0
  phi[:, 5] = 0.0
  phi[:, 7] = 0.0
  phi[37, 7] = 1e-30
  phi[:, 0] = -np.abs(phi[:, 0])
  dead = diagnostics.feature_diagnostics(jnp.asarray(phi))["Features/dead_units"]
  assert float(diagnostics.dormant_fraction(jnp.asarray(phi), 0.0)) == float(dead) == 2 / 8
  # But at tau = 0.1 the 1e-30 unit is dormant (score ~1e-32).
  assert float(diagnostics.dormant_fraction(jnp.asarray(phi), 0.1)) == 3 / 8
  # ReLU features with a spread of unit scales.
  for seed in range(4):
    r = np.random.default_rng(300 + seed)
    pre = r.standard_normal((256, 64)) * np.exp(r.uniform(-4, 1, 64)) \
        - r.uniform(0, 3, 64) * (r.random(64) < 0.3) * 100
    relu = np.maximum(pre, 0).astype(np.float32)
    n_dead = int(np.sum(~relu.any(axis=0)))
    assert n_dead > 0
    dead = diagnostics.feature_diagnostics(jnp.asarray(relu))["Features/dead_units"]
    assert float(diagnostics.dormant_fraction(jnp.asarray(relu), 0.0)) == \
        float(dead) == n_dead / 64
    # Against the float64 score reference at several tau, away from ties.
    ref = _ref_dormant_scores(relu)
    for tau in (0.025, 0.1, 0.5):
      assert np.min(np.abs(ref - tau)) > 1e-4
      assert float(diagnostics.dormant_fraction(jnp.asarray(relu), tau)) == \
          np.mean(ref <= tau)


def test_dormant_edge_cases_scale_invariance_and_jit():
  assert float(diagnostics.dormant_fraction(jnp.zeros((4, 3)), 0.0)) == 1.0
  assert np.all(np.asarray(diagnostics.dormant_scores(jnp.zeros((4, 3)))) == 0)
  assert np.isnan(float(diagnostics.dormant_fraction(
      jnp.ones((4, 3)).at[0, 0].set(jnp.nan), 0.1)))
  phi = jnp.array([[1.0, 0.0, 0.1, -3.0], [3.0, 0.0, -0.1, 1.0]])
  # Scores are invariant to the layer's scale.
  np.testing.assert_allclose(diagnostics.dormant_scores(1e-20 * phi),
                             diagnostics.dormant_scores(phi), rtol=1e-5)
  f = jax.jit(diagnostics.dormant_fraction)
  assert [float(f(phi, t)) for t in (0.0, 0.1, 1.96)] == [0.25, 0.5, 1.0]
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    diagnostics.dormant_fraction(jnp.ones(3), 0.1)


# ---------------------------------------------------------------------------
# mean_cosine_similarity


def test_cosine_hand_worked_and_zero_rows():
  # Rows: (3,4)/(4,3) -> 24/25 = 0.96; (1,0)/(0,1) -> 0; (1,1)/(-2,-2) -> -1;
  # (0,0)/(1,2) -> 0 by convention; (5,0)/(0,0) -> 0. Mean -0.04 / 5 = -0.008.
  phi = jnp.array([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [5.0, 0.0]])
  nxt = jnp.array([[4.0, 3.0], [0.0, 1.0], [-2.0, -2.0], [1.0, 2.0], [0.0, 0.0]])
  c = diagnostics.mean_cosine_similarity(phi, nxt)
  assert c.shape == () and c.dtype == jnp.float32
  assert float(c) == pytest.approx(-0.008, abs=1e-7)
  assert _ref_cosine(phi, nxt) == pytest.approx(-0.008, abs=1e-12)
  assert float(diagnostics.mean_cosine_similarity(jnp.zeros((3, 4)), jnp.ones((3, 4)))) == 0


def test_cosine_random_tiny_huge_and_jit():
  rng = np.random.default_rng(13)
  phi = rng.standard_normal((128, 32))
  nxt = 0.7 * phi + 0.7 * rng.standard_normal((128, 32))
  ref = _ref_cosine(phi, nxt)
  got = diagnostics.mean_cosine_similarity(jnp.asarray(phi, jnp.float32),
                                           jnp.asarray(nxt, jnp.float32))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  # Row scales 1e-25 .. 1e25: squared norms would under/overflow float32.
  scale = 10.0 ** rng.uniform(-25, 25, (128, 1))
  got = diagnostics.mean_cosine_similarity(jnp.asarray(phi * scale, jnp.float32),
                                           jnp.asarray(nxt / scale, jnp.float32))
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  f = jax.jit(diagnostics.mean_cosine_similarity)
  np.testing.assert_allclose(f(jnp.asarray(phi, jnp.float32),
                               jnp.asarray(nxt, jnp.float32)), ref, rtol=1e-5)
  assert np.isnan(float(diagnostics.mean_cosine_similarity(
      jnp.ones((2, 2)).at[0, 0].set(jnp.inf), jnp.ones((2, 2)))))
  with pytest.raises(ValueError, match="one shape"):
    diagnostics.mean_cosine_similarity(jnp.ones((4, 3)), jnp.ones((4, 2)))


# ---------------------------------------------------------------------------
# extended_diagnostics / all_diagnostics


def _np_extended(phi, phi_next=None, delta=0.01, eps=None, t=0.01, tau=0.1):
  phi = np.asarray(phi, np.float64)
  n, d = phi.shape
  sv = np.linalg.svd(phi, compute_uv=False)
  if eps is None:
    eps = sv.max() * max(n, d) * np.finfo(np.float32).eps
  out = {
      "Rank/srank_eig": _ref_srank(_ref_eig_moduli(phi[:d]), delta) if n >= d else np.nan,
      "Rank/rank_eps": _ref_rank_eps(sv, eps),
      "Rank/rank_rel": _ref_rank_rel(sv, t),
      "Rank/effective_rank_roy": _ref_erank_roy(sv),
      "Rank/feature_rank_lyle": _ref_feature_rank_lyle(sv, n),
      "Features/dormant": np.mean(_ref_dormant_scores(phi) <= tau),
  }
  for q in (10, 50, 90):
    out[f"Rank/sigma_q{q}"] = np.quantile(sv, q / 100)
  if phi_next is not None:
    out["Features/cosine_next"] = _ref_cosine(phi, phi_next)
  return out


def _assert_ext_matches(out, ref, atol=0.0):
  """Ranks and dormant fraction exactly; atol for sigma quantiles near 0."""
  assert set(out) == set(ref)
  for key, v in ref.items():
    assert out[key].shape == () and out[key].dtype == jnp.float32, key
    if key in ("Rank/srank_eig", "Rank/rank_eps", "Rank/rank_rel",
               "Rank/feature_rank_lyle", "Features/dormant"):
      np.testing.assert_equal(float(out[key]), v, err_msg=key)
    else:
      np.testing.assert_allclose(out[key], v, rtol=1e-4, atol=atol, err_msg=key)


def _relu_batch(n, d, seed, n_dead=0):
  rng = np.random.default_rng(seed)
  pre = rng.standard_normal((n, d // 4)) @ rng.standard_normal((d // 4, d)) / 4 \
      + 0.3 * rng.standard_normal((n, d))
  pre[:, :n_dead] -= 100.0
  return np.maximum(pre, 0).astype(np.float32)


def test_extended_diagnostics_keys_and_values():
  phi = _relu_batch(256, 64, seed=14, n_dead=3)
  nxt = np.roll(phi, 1, axis=0)
  ref = _np_extended(phi, nxt)
  assert ref["Features/dormant"] >= 3 / 64
  out = diagnostics.extended_diagnostics(jnp.asarray(phi))
  assert set(out) == EXT_TAGS
  out = diagnostics.extended_diagnostics(jnp.asarray(phi), jnp.asarray(nxt))
  assert set(out) == EXT_TAGS | {"Features/cosine_next"}
  _assert_ext_matches(out, ref)
  # Explicit epsilon / threshold / tau / delta are honoured.
  ref2 = _np_extended(phi, None, delta=0.2, eps=1.0, t=0.1, tau=0.5)
  out2 = diagnostics.extended_diagnostics(
      jnp.asarray(phi), delta=0.2, rank_epsilon=1.0, relative_threshold=0.1,
      dormant_tau=0.5)
  _assert_ext_matches(out2, ref2)
  assert ref2["Rank/rank_rel"] < ref["Rank/rank_rel"]


def test_extended_diagnostics_known_spectrum():
  # 128 x 16 with spectrum (8, 4, 2, 1, 0.5, 0.25, 0.1, 0.01, 0 x 8):
  # rank_eps (tol = 8 * 128 * 2^-23 = 1.2e-4) = 8; rank_rel at 0.01: ratios
  # ..., 0.1/8 = 0.0125, 0.01/8 = 0.00125 -> 7. Quantiles of ascending
  # (0 x 8, 0.01, 0.1, 0.25, 0.5, 1, 2, 4, 8) at position 15 q: q10 -> 1.5
  # -> 0; q50 -> 7.5 -> (0 + 0.01) / 2 = 0.005; q90 -> 13.5 -> (2 + 4)/2 = 3.
  s = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.1, 0.01]
  phi = _with_spectrum(s, 128, 16, seed=15).astype(np.float32)
  out = diagnostics.extended_diagnostics(jnp.asarray(phi))
  assert float(out["Rank/rank_eps"]) == 8
  assert float(out["Rank/rank_rel"]) == 7
  assert abs(float(out["Rank/sigma_q10"])) < 1e-5
  np.testing.assert_allclose(out["Rank/sigma_q50"], 0.005, atol=1e-5)
  np.testing.assert_allclose(out["Rank/sigma_q90"], 3.0, rtol=1e-5)
  # q10 is float32 SVD noise (~1e-7) around an exact 0.
  _assert_ext_matches(out, _np_extended(phi), atol=1e-5 * 8)


def test_extended_diagnostics_square_batch_rules():
  phi = _relu_batch(64, 64, seed=16)
  out = diagnostics.extended_diagnostics(jnp.asarray(phi))
  assert float(out["Rank/srank_eig"]) == _ref_srank(_ref_eig_moduli(phi), 0.01)
  # N > D: the first D rows; the remaining rows do not enter srank_eig.
  tall = np.concatenate([phi, 1e3 * _relu_batch(32, 64, seed=17)])
  assert float(diagnostics.extended_diagnostics(jnp.asarray(tall))["Rank/srank_eig"]) \
      == float(out["Rank/srank_eig"])
  # N < D: no square batch -> NaN.
  wide = diagnostics.extended_diagnostics(jnp.asarray(phi[:40]))
  assert np.isnan(float(wide["Rank/srank_eig"]))
  # Backends without eig: the key is omitted.
  no_eig = diagnostics.extended_diagnostics(jnp.asarray(phi), compute_srank_eig=False)
  assert set(no_eig) == EXT_TAGS - {"Rank/srank_eig"}
  # Other quantiles name their own tags.
  qs = diagnostics.extended_diagnostics(jnp.asarray(phi), quantiles=(0.05, 0.25))
  assert {"Rank/sigma_q05", "Rank/sigma_q25"} <= set(qs)
  assert "Rank/sigma_q50" not in qs


def test_extended_diagnostics_non_finite_and_errors():
  phi = jnp.ones((8, 4)).at[3, 1].set(jnp.nan)
  out = diagnostics.extended_diagnostics(phi, jnp.ones((8, 4)))
  for key in out:
    assert np.isnan(float(out[key])), key
  with pytest.raises(ValueError, match="phi_next shape"):
    diagnostics.extended_diagnostics(jnp.ones((4, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    diagnostics.extended_diagnostics(jnp.ones((4,)))


def test_extended_diagnostics_sv_passthrough_and_jit():
  phi = jnp.asarray(_relu_batch(128, 32, seed=18, n_dead=2))
  nxt = jnp.asarray(_relu_batch(128, 32, seed=19))
  eager = diagnostics.extended_diagnostics(phi, nxt)
  shared = diagnostics.extended_diagnostics(phi, nxt, sv=diagnostics.singular_values(phi))
  f = jax.jit(diagnostics.extended_diagnostics)
  jitted = f(phi, nxt)
  for other in (shared, jitted):
    assert set(other) == set(eager)
    for key in eager:
      np.testing.assert_allclose(other[key], eager[key], rtol=1e-5, err_msg=key)
  # sv really is used: a fake spectrum changes the SVD-based entries only.
  fake = diagnostics.extended_diagnostics(phi, nxt, sv=jnp.array([5.0, 4, 3, 2, 1]))
  np.testing.assert_allclose(fake["Rank/sigma_q50"], 3.0)
  assert float(fake["Features/dormant"]) == float(eager["Features/dormant"])


def _count_primitive(jaxpr, name):
  """Occurrences of a primitive in a jaxpr, sub-jaxprs (pjit, cond) included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == name
    for v in eqn.params.values():
      for sub in v if isinstance(v, (tuple, list)) else (v,):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          n += _count_primitive(sub.jaxpr, name)
        elif hasattr(sub, "eqns"):
          n += _count_primitive(sub, name)
  return n


def test_all_diagnostics_one_svd_and_union():
  phi = jnp.asarray(_relu_batch(128, 32, seed=20, n_dead=4))
  nxt = jnp.asarray(np.roll(np.asarray(phi), 1, axis=0))
  out = diagnostics.all_diagnostics(phi, nxt, delta=0.05, dormant_tau=0.2)
  base = diagnostics.feature_diagnostics(phi, nxt, delta=0.05)
  ext = diagnostics.extended_diagnostics(phi, nxt, delta=0.05, dormant_tau=0.2)
  assert set(out) == set(base) | set(ext) and not set(base) & set(ext)
  for key, v in {**base, **ext}.items():
    np.testing.assert_allclose(out[key], v, rtol=1e-6, err_msg=key)
  assert float(out["Features/dormant"]) >= float(out["Features/dead_units"]) == 4 / 32
  # One SVD (and one eig) in the traced computation; separate calls trace two
  # (XLA may merge them after compilation, but that is not ours to rely on).
  jaxpr = jax.make_jaxpr(diagnostics.all_diagnostics)(phi, nxt).jaxpr
  assert _count_primitive(jaxpr, "svd") == 1
  assert _count_primitive(jaxpr, "eig") == 1
  separate = jax.make_jaxpr(lambda p, n: {**diagnostics.feature_diagnostics(p, n),
                                          **diagnostics.extended_diagnostics(p, n)})
  assert _count_primitive(separate(phi, nxt).jaxpr, "svd") == 2
  jitted = jax.jit(diagnostics.all_diagnostics)(phi, nxt, delta=0.05)
  eager = diagnostics.all_diagnostics(phi, nxt, delta=0.05)
  for key in eager:
    np.testing.assert_allclose(jitted[key], eager[key], rtol=1e-5, err_msg=key)


def test_extended_realistic_2048x512_and_timing():
  """N = 2048, D = 512 as logged during training; srank_eig on 512 x 512."""
  phi = _relu_batch(2048, 512, seed=21, n_dead=20)
  nxt = np.roll(phi, 1, axis=0)
  ref = _np_extended(phi, nxt)
  moduli = _ref_eig_moduli(phi[:512].astype(np.float64))
  assert _margin(moduli, 0.01) > 1e-4
  f = jax.jit(diagnostics.all_diagnostics)
  args = (jnp.asarray(phi), jnp.asarray(nxt))
  out = jax.block_until_ready(f(*args))
  _assert_ext_matches({k: out[k] for k in ref}, ref)
  assert float(out["Features/dead_units"]) == 20 / 512
  print(f"\nsrank={float(out['Rank/srank'])} srank_eig={float(out['Rank/srank_eig'])} "
        f"rank_eps={float(out['Rank/rank_eps'])} rank_rel={float(out['Rank/rank_rel'])} "
        f"dormant={float(out['Features/dormant']):.4f}")
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  print(f"all_diagnostics 2048x512 jitted: {1e3 * min(times):.1f} ms "
        f"(min of 2, after compilation)")

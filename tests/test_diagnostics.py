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

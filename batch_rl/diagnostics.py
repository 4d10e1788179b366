"""Feature-matrix diagnostics: effective rank (srank) and feature statistics.

Pure, jittable functions of a feature matrix Phi [N, D] (N states, D features,
e.g. the `representation` of a `batch_rl.networks` Q-network on a batch). No
network is evaluated here.

srank follows Kumar et al. (2021), "Implicit Under-Parameterization Inhibits
Data-Efficient Deep Reinforcement Learning", Sec. 3:

  srank_delta(Phi) = min{ k : sum_{i<=k} sigma_i / sum_{i} sigma_i >= 1 - delta }

with sigma_1 >= sigma_2 >= ... the singular values of Phi. This is the
cumulative (nuclear-norm fraction) definition, not a count of singular values
above delta * sigma_max.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def singular_values(phi: jax.Array) -> jax.Array:
  """Singular values of a feature matrix.

  Args:
    phi: [N, D] features, any float (or int) dtype; computed in float32.

  Returns:
    [min(N, D)] float32, descending, non-negative.
  """
  if phi.ndim != 2:
    raise ValueError(f"phi must be [N, D], got shape {tuple(phi.shape)}")
  return jnp.linalg.svd(phi.astype(jnp.float32), compute_uv=False)


def srank(sv: jax.Array, delta: float = 0.01) -> jax.Array:
  """Effective rank of a spectrum, Kumar et al. (2021) cumulative definition.

  Args:
    sv: [K] singular values, descending and non-negative (as returned by
      `singular_values`).
    delta: fraction of the nuclear norm allowed to be left out; 0 <= delta < 1.
      May be a traced value.

  Returns:
    int32 scalar in [0, K]: min{k : sum_{i<=k} sv_i >= (1 - delta) sum_i sv_i}.
    0 for an all-zero spectrum (no k satisfies a meaningful version of the
    definition; the matrix has rank 0). If the spectrum holds a NaN/inf
    (diverged features) the result is -1, which `feature_diagnostics`
    reports as NaN.

  Numerics: the cumulative sum is taken in float32 and the total is its last
  entry (not a separate `sum`, whose pairwise reduction may round
  differently), so the comparison `cumsum >= (1 - delta) * total` always
  holds at k = K and the result never exceeds K. The ratio is never formed,
  avoiding a division. When the exact fraction at some k equals 1 - delta
  (a tie, e.g. sv = (1, 1, 1, 1), delta = 0.25 at k = 3) float32 rounding
  (relative ~1e-7 * K) decides which side it falls on, so the result may be
  k or k + 1; spectra in practice are never exactly on the boundary.
  """
  sv = jnp.asarray(sv, jnp.float32)
  cumsum = jnp.cumsum(sv)
  total = cumsum[-1]
  threshold = (1.0 - jnp.asarray(delta, jnp.float32)) * total
  # cumsum is non-decreasing, so the number of prefixes still below the
  # threshold, plus one, is the first k that reaches it.
  k = jnp.sum(cumsum < threshold).astype(jnp.int32) + 1
  k = jnp.minimum(k, sv.shape[0])
  k = jnp.where(total > 0, k, 0)
  return jnp.where(jnp.isfinite(total), k, -1).astype(jnp.int32)


def feature_diagnostics(
    phi: jax.Array,
    phi_next: jax.Array | None = None,
    delta: float = 0.01,
) -> dict[str, jax.Array]:
  """Rank and feature statistics of a feature matrix, keyed by TensorBoard tag.

  Args:
    phi: [N, D] features Phi(s) of N states.
    phi_next: optional [N, D] features Phi(s') of the matching next states.
    delta: srank threshold (see `srank`).

  Returns:
    dict of float32 scalars:
      "Rank/srank": srank_delta(phi), as float32 so every entry logs the same
        way (an exact integer; NaN if phi is not finite);
      "Rank/sigma_max": largest singular value;
      "Rank/sigma_min": smallest of the min(N, D) singular values;
      "Features/norm": mean over rows of ||phi(s)||_2;
      "Features/dead_units": fraction of the D columns that are exactly zero
        on every row (a dead ReLU unit);
      "Features/dot_next" (only if phi_next is given): mean over rows of
        phi(s)^T phi(s'), the quantity DR3 penalizes.
  """
  if phi.ndim != 2:
    raise ValueError(f"phi must be [N, D], got shape {tuple(phi.shape)}")
  phi = phi.astype(jnp.float32)
  sv = singular_values(phi)
  k = srank(sv, delta)
  out = {
      "Rank/srank": jnp.where(k >= 0, k.astype(jnp.float32), jnp.nan),
      "Rank/sigma_max": sv[0],
      "Rank/sigma_min": sv[-1],
      "Features/norm": jnp.mean(jnp.linalg.norm(phi, axis=1)),
      "Features/dead_units": jnp.mean(
          jnp.all(phi == 0, axis=0).astype(jnp.float32)
      ),
  }
  if phi_next is not None:
    if phi_next.shape != phi.shape:
      raise ValueError(
          f"phi_next shape {tuple(phi_next.shape)} must equal phi shape "
          f"{tuple(phi.shape)}"
      )
    phi_next = phi_next.astype(jnp.float32)
    out["Features/dot_next"] = jnp.mean(jnp.sum(phi * phi_next, axis=1))
  return out

"""Feature-matrix diagnostics: effective rank (srank), feature statistics, plasticity.

Pure, jittable functions of a feature matrix Phi [N, D] (N states, D features,
e.g. the `representation` of a `batch_rl.networks` Q-network on a batch), of a
layer's activations, or of a parameter pytree. No network is evaluated here.

srank follows Kumar et al. (2021), "Implicit Under-Parameterization Inhibits
Data-Efficient Deep Reinforcement Learning", Sec. 3:

  srank_delta(Phi) = min{ k : sum_{i<=k} sigma_i / sum_{i} sigma_i >= 1 - delta }

with sigma_1 >= sigma_2 >= ... the singular values of Phi. This is the
cumulative (nuclear-norm fraction) definition, not a count of singular values
above delta * sigma_max.

Papers mean different things by "rank". The other quantities here (see
`extended_diagnostics`) are named after their source so that one paper's rank
is never compared with another's by mistake:

  * `rank_above_threshold`: numerical rank, #{i : sigma_i > epsilon}.
  * `rank_relative_to_max`: #{i : sigma_i / sigma_max > threshold}; what
    Dopamine's MoE lab logs as `srank_{t}` (google/dopamine,
    dopamine/labs/moes/agents/full_rainbow_moe_agent.py). NOT Kumar et al.'s
    srank.
  * `effective_rank_roy`: Roy and Vetterli (2007), "The effective rank: a
    measure of effective dimensionality", exp of the entropy of the normalised
    singular values; what several plasticity papers call "effective rank".
    Real-valued, in [1, rank(Phi)].
  * `feature_rank_lyle`: Lyle, Rowland and Dabney (2022), "Understanding and
    preventing capacity loss in reinforcement learning", #{i : sigma_i(Phi /
    sqrt(N)) > 0.01}: an absolute threshold on the spectrum of the
    second-moment matrix, so it depends on the features' scale (srank,
    rank_relative_to_max and effective_rank_roy do not).
  * `srank_eig`: Kumar et al. (2021) Appendix A.7, the same cumulative
    definition on the moduli of the (complex) eigenvalues of a square d x d
    feature batch.
  * `spectrum_quantiles`: sigma at quantiles of the spectrum.
  * `dormant_scores` / `dormant_fraction` / `layer_dormant_fractions`: Sokar
    et al. (2023), "The dormant neuron phenomenon in deep reinforcement
    learning" (ReDo), for any hidden layer, convolutional ones included.
  * `mean_cosine_similarity`: mean over rows of cos(phi(s), phi(s')).
  * `parameter_diagnostics`: the global L2 norm of the parameters and their L2
    distance from the initial ones.
"""

from __future__ import annotations

from typing import Mapping, Sequence

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
  return _feature_diagnostics_from_sv(phi, singular_values(phi), phi_next,
                                      delta)


def _feature_diagnostics_from_sv(phi, sv, phi_next, delta):
  """`feature_diagnostics` given the singular values of phi."""
  phi = phi.astype(jnp.float32)
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


# ---------------------------------------------------------------------------
# Other rank definitions in circulation. The counts return int32 scalars and -1
# for a spectrum holding a NaN/inf, like `srank`; Roy's effective rank is real.


def matrix_rank_tolerance(sv: jax.Array, shape: tuple[int, int]) -> jax.Array:
  """Matrix-size-scaled tolerance for `rank_above_threshold`.

  sigma_max * max(N, D) * eps(float32), the default tolerance of
  `np.linalg.matrix_rank` for a float32 matrix: singular values below it are
  at the level of the rounding noise of a float32 SVD of an [N, D] matrix.
  Scale-invariant, unlike a fixed epsilon.

  Args:
    sv: [K] singular values (any order).
    shape: (N, D), the shape of the matrix `sv` came from (static).

  Returns:
    float32 scalar (0 for an all-zero spectrum).
  """
  sv = jnp.asarray(sv, jnp.float32)
  return jnp.max(sv) * max(shape) * jnp.finfo(jnp.float32).eps


def rank_above_threshold(sv: jax.Array, epsilon: float) -> jax.Array:
  """Numerical rank: number of singular values strictly greater than epsilon.

  epsilon is absolute, so the result depends on the scale of the features:
  a fixed value such as 1e-5 suits features of order one; pass
  `matrix_rank_tolerance(sv, phi.shape)` for the scale-invariant
  `np.linalg.matrix_rank` convention (what `extended_diagnostics` uses by
  default).

  Args:
    sv: [K] singular values (any order), non-negative.
    epsilon: threshold; may be traced.

  Returns:
    int32 scalar in [0, K]; -1 if `sv` holds a NaN/inf.
  """
  sv = jnp.asarray(sv, jnp.float32)
  k = jnp.sum(sv > jnp.asarray(epsilon, jnp.float32)).astype(jnp.int32)
  return jnp.where(jnp.all(jnp.isfinite(sv)), k, -1).astype(jnp.int32)


def rank_relative_to_max(sv: jax.Array, threshold: float) -> jax.Array:
  """Number of singular values with sigma_i / sigma_max > threshold.

  This is what Dopamine's MoE lab logs as `srank_{t}` (t in 0, 0.001, 0.01):
  `jnp.sum(singular_vals / jnp.max(singular_vals) > t)`. It is NOT the srank
  of Kumar et al. (2021) (`srank`), which is cumulative: a spectrum with one
  value 1.0 and 100 values 0.004 has rank_relative_to_max(., 0.01) = 1 but
  srank_0.01 = 98. The ratio is formed as in Dopamine (so ties round the same
  way); with threshold = 0 every non-zero singular value counts, float32 SVD
  noise (~1e-7 sigma_max) included.

  Args:
    sv: [K] singular values (any order), non-negative.
    threshold: relative threshold in [0, 1); may be traced.

  Returns:
    int32 scalar in [0, K]: 0 for an all-zero spectrum (Dopamine's 0/0 = NaN
    compares False too); -1 if `sv` holds a NaN/inf.
  """
  sv = jnp.asarray(sv, jnp.float32)
  sv_max = jnp.max(sv)
  ratio = sv / jnp.where(sv_max > 0, sv_max, 1.0)
  k = jnp.sum(ratio > jnp.asarray(threshold, jnp.float32)).astype(jnp.int32)
  return jnp.where(jnp.all(jnp.isfinite(sv)), k, -1).astype(jnp.int32)


LYLE_EPSILON = 0.01


def feature_rank_lyle(sv: jax.Array, num_rows: int,
                      epsilon: float = LYLE_EPSILON) -> jax.Array:
  """Feature rank of Lyle, Rowland and Dabney (2022), "Understanding and preventing
  capacity loss in reinforcement learning":

    rho(Phi, epsilon) = #{i : sigma_i(Phi / sqrt(n)) > epsilon},  epsilon = 0.01,

  with n the number of rows (states) of Phi. sigma_i(Phi) / sqrt(n) are the square
  roots of the eigenvalues of the empirical second-moment matrix Phi^T Phi / n, so
  for i.i.d. rows the count does not grow with the batch size, unlike
  `rank_above_threshold`. The threshold is absolute: scaling the features by c
  changes the count (all of 1e-3 * Phi's singular values may fall below it), whereas
  `srank`, `rank_relative_to_max` (Dopamine's `srank_{t}`, "Rank/rank_rel") and
  `effective_rank_roy` are invariant to the scale. Against "Rank/rank_rel", which
  counts sigma_i > 0.01 sigma_max: a 4-row Phi with spectrum (10, 0.05) has feature
  rank 2 (sigma / 2 = 5, 0.025 > 0.01) but rank_rel 1 (0.05 / 10 = 0.005), and
  with spectrum (0.01, 0.01) feature rank 0 but rank_rel 2. Against "Rank/srank"
  (the cumulative 99% of sum sigma_i): that counts the singular values needed to
  hold most of the spectrum's mass, this one those that clear a fixed floor.

  Args:
    sv: [K] singular values of Phi (any order), non-negative.
    num_rows: n, the number of rows of Phi (static).
    epsilon: threshold on sigma_i / sqrt(n); may be traced.

  Returns:
    int32 scalar in [0, K]; -1 if `sv` holds a NaN/inf.
  """
  if num_rows < 1:
    raise ValueError(f"num_rows must be >= 1, got {num_rows}")
  sv = jnp.asarray(sv, jnp.float32)
  scaled = sv / jnp.sqrt(jnp.float32(num_rows))
  k = jnp.sum(scaled > jnp.asarray(epsilon, jnp.float32)).astype(jnp.int32)
  return jnp.where(jnp.all(jnp.isfinite(sv)), k, -1).astype(jnp.int32)


def effective_rank_roy(sv: jax.Array) -> jax.Array:
  """Effective rank of Roy and Vetterli (2007), "The effective rank: a measure of
  effective dimensionality":

    p_i = sigma_i / sum_j sigma_j,   erank = exp(-sum_i p_i log p_i),

  the exponential of the Shannon entropy of the l1-normalised singular values
  (0 log 0 = 0). It is what several plasticity papers log as "effective rank"; it
  is real-valued, 1 for a rank-one matrix and k for k equal non-zero singular
  values (e.g. (1, 1, 0, 0) -> 2), and is not Kumar et al.'s `srank`, which counts
  the singular values holding 1 - delta of the nuclear norm. Scale-invariant.

  Args:
    sv: [K] singular values (any order), non-negative.

  Returns:
    float32 scalar in [1, K] up to float32 rounding (about 1e-6 relative; a float32
    SVD's ~1e-7 sigma_max noise in exactly-zero singular values adds about
    K * 1e-6); 0 for an all-zero spectrum (the zero matrix, where the definition has
    no distribution to take the entropy of); NaN if `sv` holds a NaN/inf.
  """
  sv = jnp.asarray(sv, jnp.float32)
  total = jnp.sum(sv)
  p = sv / jnp.where(total > 0, total, 1.0)
  positive = p > 0
  entropy = -jnp.sum(jnp.where(positive, p * jnp.log(jnp.where(positive, p, 1.0)), 0.0))
  erank = jnp.where(total > 0, jnp.exp(entropy), 0.0)
  return jnp.where(jnp.all(jnp.isfinite(sv)), erank, jnp.nan).astype(jnp.float32)


def eigenvalue_moduli(phi_square: jax.Array) -> jax.Array:
  """|lambda_i| of a square matrix, descending (float32).

  The eigenvalues of a real non-symmetric matrix are complex in general
  (conjugate pairs); A.7 orders and sums their norms |lambda_i|. A
  non-finite input gives all-NaN moduli (LAPACK's geev is not called on it).
  Non-symmetric eig is implemented by JAX on CPU and GPU only (not TPU).
  """
  if phi_square.ndim != 2 or phi_square.shape[0] != phi_square.shape[1]:
    raise ValueError(
        f"phi_square must be square [d, d], got shape {tuple(phi_square.shape)}"
    )
  a = phi_square.astype(jnp.float32)
  finite = jnp.all(jnp.isfinite(a))
  moduli = jnp.abs(jnp.linalg.eigvals(jnp.where(finite, a, 0.0)))
  moduli = -jnp.sort(-moduli.astype(jnp.float32))
  return jnp.where(finite, moduli, jnp.nan)


def srank_eig(phi_square: jax.Array, delta: float = 0.01) -> jax.Array:
  """Eigenvalue effective rank srank_{delta, lambda}, Kumar et al. (2021) A.7.

  With lambda_1, lambda_2, ... the (complex) eigenvalues ordered by
  |lambda_1| >= |lambda_2| >= ...:

    srank_{delta,lambda}(M) = min{ k : sum_{i<=k} |lambda_i|
                                       / sum_{i<=d} |lambda_i| >= 1 - delta },

  i.e. `srank` applied to the eigenvalue moduli. "Since eigenvalues are only
  defined for a square matrix Phi, in practice, we use a batch of
  d = dim(phi(s, a)) state-action pairs": pass a [d, d] feature batch (d
  states, d features), not the Gram matrix Phi^T Phi, whose eigenvalues are
  sigma_i^2 and give a different (smaller) number. For a normal matrix
  |lambda_i| = sigma_i and srank_eig == srank; for a non-normal one they
  differ (e.g. [[1, 100], [0, 1]]: eigenvalues 1, 1 -> 2; singular values
  100.01, 0.0099990 -> srank 1).

  Args:
    phi_square: [d, d] features of d states.
    delta: as in `srank`; may be traced.

  Returns:
    int32 scalar in [0, d]; 0 if all eigenvalues are 0 (e.g. a nilpotent
    matrix); -1 if `phi_square` is not finite. Float32 eigenvalues of a
    non-normal matrix can be ill-conditioned, so |lambda_i| carries more
    rounding error than sigma_i.
  """
  return srank(eigenvalue_moduli(phi_square), delta)


# ---------------------------------------------------------------------------
# Spectrum summary, dormant units, cosine similarity.

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


def spectrum_quantiles(
    sv: jax.Array, quantiles=DEFAULT_QUANTILES
) -> jax.Array:
  """Singular values at quantiles of the spectrum.

  Quantiles of the K values, with numpy's default linear interpolation
  (`np.quantile(sv, q)`): q = 0 is sigma_min, q = 1 is sigma_max, q = 0.5 the
  median; so the q = 0.1 value is near the small end of the spectrum. The
  order of `sv` does not matter.

  Args:
    sv: [K] singular values.
    quantiles: static sequence of q in [0, 1].

  Returns:
    [len(quantiles)] float32 (NaN if `sv` holds a NaN).
  """
  sv = jnp.asarray(sv, jnp.float32)
  return jnp.quantile(sv, jnp.asarray(quantiles, jnp.float32))


def _unit_axes(h: jax.Array) -> tuple[int, ...]:
  """The axes a unit's activation is averaged over: all but the last (units)."""
  if h.ndim < 2:
    raise ValueError(
        f"activations must be [N, D] (or [N, ..., C] with units on the last axis, "
        f"e.g. a conv layer's [N, H, W, C]), got shape {tuple(h.shape)}")
  return tuple(range(h.ndim - 1))


def dormant_scores(phi: jax.Array) -> jax.Array:
  """Per-unit dormancy scores of Sokar et al. (2023), "The dormant neuron phenomenon
  in deep reinforcement learning" (ReDo):

    s_i = E_x |h_i(x)| / ( (1/H) sum_k E_x |h_k(x)| ),

  the mean absolute activation of unit i normalised by the layer's average over its
  H units, the expectation taken over the inputs x.

  Args:
    phi: activations h(x) of N inputs: [N, D] for a dense layer, or [N, ..., C] for
      a convolutional feature map, whose C channels are the units and whose spatial
      positions are averaged over with the batch (as ReDo's implementation does).

  Returns:
    [D] (or [C]) float32 scores, mean 1; all 0 if every activation is 0.
  """
  axes = _unit_axes(phi)
  a = jnp.mean(jnp.abs(phi.astype(jnp.float32)), axis=axes)
  avg = jnp.mean(a)
  return a / jnp.where(avg > 0, avg, 1.0)


def dormant_fraction(phi: jax.Array, tau: float = 0.1) -> jax.Array:
  """Fraction of tau-dormant units (Sokar et al. 2023): s_i <= tau.

  Evaluated as sum_x |h_i(x)| <= tau * (1/H) sum_k sum_x |h_k(x)| (the score
  inequality multiplied by the number of averaged entries and the layer average, no
  division), so tau = 0 selects exactly the units whose activation is 0 on every
  row (and, for a conv map, at every position): for ReLU (or any) features it equals
  "Features/dead_units" of `feature_diagnostics`. An all-zero phi has every unit
  dormant (1.0).

  Args:
    phi: [N, D] activations, or [N, ..., C] with the units on the last axis (see
      `dormant_scores`).
    tau: dormancy threshold >= 0 (Sokar et al. use 0, 0.025 and 0.1); may be traced.

  Returns:
    float32 scalar in [0, 1]; NaN if phi is not finite.
  """
  return _dormant_fraction_of_mass(_unit_mass(phi), tau)


def _unit_mass(h: jax.Array) -> jax.Array:
  """[units] sum of |h| over the inputs (and positions) of each unit, float32."""
  return jnp.sum(jnp.abs(h.astype(jnp.float32)), axis=_unit_axes(h))


def _dormant_fraction_of_mass(mass: jax.Array, tau) -> jax.Array:
  """Fraction of units with mass_i <= tau * mean(mass); NaN if mass is not finite."""
  dormant = mass <= jnp.asarray(tau, jnp.float32) * jnp.mean(mass)
  frac = jnp.mean(dormant.astype(jnp.float32))
  return jnp.where(jnp.all(jnp.isfinite(mass)), frac, jnp.nan)


# The thresholds of ReDo's figures (Sokar et al. 2023).
DORMANT_TAUS = (0.0, 0.025, 0.1)


def dormant_tag(tau: float, layer: str) -> str:
  """The TensorBoard tag of a layer's dormant fraction: "Dormant/tau0.1/Dense_0"."""
  return f"Dormant/tau{float(tau):g}/{layer}"


def layer_dormant_fractions(activations: Mapping[str, jax.Array],
                            taus: Sequence[float] = DORMANT_TAUS) -> dict[str, jax.Array]:
  """`dormant_fraction` of every layer at every tau, keyed by TensorBoard tag.

  Args:
    activations: {layer name: its post-activation output}, [N, D] or [N, ..., C]
      (`networks.hidden_activations` gives them for every hidden layer of the
      networks in `batch_rl.networks`, named after their parameter subtree).
    taus: static thresholds.

  Returns:
    {dormant_tag(tau, layer): float32 fraction of the layer's units that are
    tau-dormant}; {} for no layers.
  """
  out = {}
  for layer, h in activations.items():
    mass = _unit_mass(h)  # one pass over the activations for all taus
    for tau in taus:
      out[dormant_tag(tau, layer)] = _dormant_fraction_of_mass(mass, tau)
  return out


SPARSITY_TOLERANCE = 1e-6


def _unit_matrix(h: jax.Array) -> jax.Array:
  """[N, D] features of a layer: a Dense output as it is, a convolutional one [N, H, W,
  C] flattened per example (every position of every channel a feature)."""
  return h.reshape((h.shape[0], -1))


def activation_sparsity(h: jax.Array, tolerance: float = SPARSITY_TOLERANCE) -> jax.Array:
  """Fraction of a layer's activations on the batch that are zero: |h| <= tolerance.

  The empirical study's sparsity of a layer (Gulcehre et al. 2022, Appendix A.14, the
  zero entries of its Gram matrices): a ReLU unit is exactly 0 off its active region;
  ELU and tanh are zero only at 0, so they count only where they are (numerically) 0.
  """
  return jnp.mean((jnp.abs(h.astype(jnp.float32)) <= tolerance).astype(jnp.float32))


def layer_diagnostics(activations: Mapping[str, jax.Array], delta: float = 0.01,
                      ranks: bool = True) -> dict[str, jax.Array]:
  """Per-layer srank and sparsity, keyed by TensorBoard tag.

  Args:
    activations: {layer name: post-activation output} (`networks.hidden_activations`).
    delta: srank's delta.
    ranks: also compute every layer's srank (one SVD per layer: a convolutional layer's
      features are all its positions and channels, which costs more than the
      penultimate layer's SVD).

  Returns:
    {"Features/sparsity/<layer>": `activation_sparsity`} and, with `ranks`,
    {"Rank/srank/<layer>": srank of the layer's [N, D] feature matrix (IUP's definition,
    as Rank/srank; the empirical study's Figure 23 ranks of every layer)}.
  """
  out = {}
  for layer, h in activations.items():
    out[f"Features/sparsity/{layer}"] = activation_sparsity(h)
    if ranks:
      rank = srank(singular_values(_unit_matrix(h)), delta)
      out[f"Rank/srank/{layer}"] = _rank_to_float(rank)
  return out


def gram_image(phi: jax.Array) -> jax.Array:
  """|Phi Phi^T| / its largest entry, [N, N] in [0, 1]: the Gram matrix of a batch's
  features as the empirical study draws it (its Figure 37: dark where two states'
  features are orthogonal, e.g. where ReLU units are off for one of them); zeros for
  all-zero features."""
  phi = phi.astype(jnp.float32)
  gram = jnp.abs(phi @ phi.T)
  top = jnp.max(gram)
  return jnp.where(top > 0, gram / jnp.where(top > 0, top, 1.0), 0.0)


def global_norm(tree) -> jax.Array:
  """sqrt(sum of the squares of every entry of every leaf), float32 (0 for no leaves)."""
  leaves = jax.tree_util.tree_leaves(tree)
  total = sum((jnp.sum(jnp.square(leaf.astype(jnp.float32))) for leaf in leaves),
              jnp.float32(0.0))
  return jnp.sqrt(total)


def parameter_diagnostics(params, initial_params=None) -> dict[str, jax.Array]:
  """Norms of the online parameters, keyed by TensorBoard tag.

  Args:
    params: the parameter pytree (every leaf: kernels and biases of every layer).
    initial_params: the same pytree at initialisation (before any update), or None.

  Returns:
    "Params/weight_norm": ||theta||_2, the global L2 norm of all parameters;
    "Params/distance_from_init" (only with initial_params): ||theta - theta_0||_2,
      the global L2 distance from the initial parameters (0 before the first
      update). Both float32 scalars, NaN if a parameter is not finite.
  """
  out = {"Params/weight_norm": global_norm(params)}
  if initial_params is not None:
    out["Params/distance_from_init"] = global_norm(jax.tree.map(
        lambda p, p0: p.astype(jnp.float32) - p0.astype(jnp.float32), params,
        initial_params))
  return out


def mean_cosine_similarity(phi: jax.Array, phi_next: jax.Array) -> jax.Array:
  """Mean over rows of cos(phi(s), phi(s')) = <a, b> / (||a|| ||b||).

  A pair in which either row is all zero has cosine 0 (the convention of
  `torch.nn.functional.cosine_similarity`, whose eps clamp gives 0 there) and
  still counts in the mean. Each row is first divided by its largest
  absolute entry, which leaves the cosine unchanged and keeps squared norms
  from under/overflowing float32 for very small or large features.

  Args:
    phi, phi_next: [N, D] features of matching states s, s'.

  Returns:
    float32 scalar in [-1, 1] (NaN if an input is not finite).
  """
  if phi.ndim != 2 or phi_next.shape != phi.shape:
    raise ValueError(
        f"phi and phi_next must both be [N, D] of one shape, got "
        f"{tuple(phi.shape)} and {tuple(phi_next.shape)}"
    )

  def unit_scale(x):
    x = x.astype(jnp.float32)
    m = jnp.max(jnp.abs(x), axis=1, keepdims=True)
    return x / jnp.where(m > 0, m, 1.0)

  a, b = unit_scale(phi), unit_scale(phi_next)
  denom = jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1)
  cos = jnp.sum(a * b, axis=1) / jnp.where(denom > 0, denom, 1.0)
  mean = jnp.mean(jnp.where(denom > 0, cos, 0.0))
  finite = jnp.all(jnp.isfinite(phi)) & jnp.all(jnp.isfinite(phi_next))
  return jnp.where(finite, mean, jnp.nan)


def _rank_to_float(k: jax.Array) -> jax.Array:
  return jnp.where(k >= 0, k.astype(jnp.float32), jnp.nan)


def extended_diagnostics(
    phi: jax.Array,
    phi_next: jax.Array | None = None,
    delta: float = 0.01,
    *,
    sv: jax.Array | None = None,
    rank_epsilon: float | None = None,
    relative_threshold: float = 0.01,
    lyle_epsilon: float = LYLE_EPSILON,
    dormant_tau: float = 0.1,
    quantiles=DEFAULT_QUANTILES,
    compute_srank_eig: bool = True,
) -> dict[str, jax.Array]:
  """Further rank definitions and feature statistics, keyed by TensorBoard tag.

  Complements `feature_diagnostics` (disjoint keys; `all_diagnostics` merges
  both with one SVD).

  Args:
    phi: [N, D] features Phi(s) of N states.
    phi_next: optional [N, D] features Phi(s') of the matching next states.
    delta: threshold of the eigenvalue srank (see `srank_eig`).
    sv: optional singular values of phi (from `singular_values(phi)`), to
      share one SVD with other diagnostics; computed here if None. Must come
      from this phi (not checked).
    rank_epsilon: absolute epsilon of "Rank/rank_eps"; None (default) uses
      the matrix-size-scaled `matrix_rank_tolerance(sv, phi.shape)` =
      sigma_max * max(N, D) * eps(float32).
    relative_threshold: threshold of "Rank/rank_rel".
    lyle_epsilon: epsilon of "Rank/feature_rank_lyle" (Lyle et al. use 0.01).
    dormant_tau: tau of "Features/dormant".
    quantiles: static, the q of the "Rank/sigma_qXX" entries; the tag is
      round(100 q) zero-padded to two digits.
    compute_srank_eig: set False on backends without non-symmetric eig (TPU);
      "Rank/srank_eig" is then omitted.

  Returns:
    dict of float32 scalars:
      "Rank/srank_eig": srank_eig(phi[:D], delta), the eigenvalue srank of the
        square batch formed by the first D rows (A.7 uses a batch of d = D
        state-action pairs; rows of a sampled batch are already in random
        order); NaN if N < D (no square batch) or phi is not finite;
      "Rank/rank_eps": rank_above_threshold(sv, epsilon);
      "Rank/rank_rel": rank_relative_to_max(sv, relative_threshold);
      "Rank/effective_rank_roy": effective_rank_roy(sv), Roy and Vetterli's
        exp-entropy effective rank (real-valued);
      "Rank/feature_rank_lyle": feature_rank_lyle(sv, N, lyle_epsilon), Lyle et
        al.'s count of sigma_i / sqrt(N) > 0.01;
      "Rank/sigma_q10", "Rank/sigma_q50", "Rank/sigma_q90": spectrum
        quantiles (with the default `quantiles`);
      "Features/dormant": dormant_fraction(phi, dormant_tau), phi's units only
        (the per-layer fractions are `layer_dormant_fractions`);
      "Features/cosine_next" (only if phi_next is given):
        mean_cosine_similarity(phi, phi_next).
    The counts are exact integers as float32; every entry is NaN for non-finite
    features.
  """
  if phi.ndim != 2:
    raise ValueError(f"phi must be [N, D], got shape {tuple(phi.shape)}")
  n, d = phi.shape
  phi = phi.astype(jnp.float32)
  if sv is None:
    sv = singular_values(phi)
  sv = jnp.asarray(sv, jnp.float32)
  eps = matrix_rank_tolerance(sv, phi.shape) if rank_epsilon is None \
      else rank_epsilon
  out = {}
  if compute_srank_eig:
    out["Rank/srank_eig"] = (
        _rank_to_float(srank_eig(phi[:d], delta)) if n >= d
        else jnp.array(jnp.nan, jnp.float32))
  out["Rank/rank_eps"] = _rank_to_float(rank_above_threshold(sv, eps))
  out["Rank/rank_rel"] = _rank_to_float(
      rank_relative_to_max(sv, relative_threshold))
  out["Rank/effective_rank_roy"] = effective_rank_roy(sv)
  out["Rank/feature_rank_lyle"] = _rank_to_float(feature_rank_lyle(sv, n, lyle_epsilon))
  qs = spectrum_quantiles(sv, quantiles)
  for i, q in enumerate(quantiles):
    out[f"Rank/sigma_q{round(100 * q):02d}"] = qs[i]
  out["Features/dormant"] = dormant_fraction(phi, dormant_tau)
  if phi_next is not None:
    if phi_next.shape != phi.shape:
      raise ValueError(
          f"phi_next shape {tuple(phi_next.shape)} must equal phi shape "
          f"{tuple(phi.shape)}"
      )
    out["Features/cosine_next"] = mean_cosine_similarity(phi, phi_next)
  return out


def all_diagnostics(
    phi: jax.Array,
    phi_next: jax.Array | None = None,
    delta: float = 0.01,
    **kwargs,
) -> dict[str, jax.Array]:
  """`feature_diagnostics` and `extended_diagnostics` merged, one SVD.

  `delta` is used for both "Rank/srank" and "Rank/srank_eig"; `kwargs` go to
  `extended_diagnostics` (not `sv`). Jittable with keyword arguments bound
  (e.g. via functools.partial).
  """
  if phi.ndim != 2:
    raise ValueError(f"phi must be [N, D], got shape {tuple(phi.shape)}")
  sv = singular_values(phi)
  out = _feature_diagnostics_from_sv(phi, sv, phi_next, delta)
  out.update(extended_diagnostics(phi, phi_next, delta, sv=sv, **kwargs))
  return out

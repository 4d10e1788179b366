"""Explicit regularisers on features and Q-values: pure, jittable functions of arrays.

Nothing here owns a network, an optimiser or a gin binding: agents compute the penultimate
features / Q-values, call these functions, and multiply by their own coefficient (checked
with `check_coefficient`).

* `lp_penalty`            IUP (Kumar et al., ICLR 2021), Section 5, Eq. (6).
* `dr3_penalty`           DR3 (Kumar et al., ICLR 2022), with `DR3Config` variants.
* `cql_penalty`,
  `cql_penalty_quantiles` CQL(H) for discrete actions (Kumar et al., NeurIPS 2020).
* `info_nce`              CURL's contrastive loss (Laskin et al., ICML 2020).
"""
import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

# ------------------------------------------------------------------------------ IUP: Lp


LP_METHODS = ("svd", "gram")


def lp_penalty(phi: jax.Array, method: str = "svd") -> jax.Array:
  """Lp(Phi) = sigma_max(Phi)^2 - sigma_min(Phi)^2 of a minibatch feature matrix.

  IUP paper (Kumar, Agarwal, Ghosh, Levine, ICLR 2021), Section 5, Eq. (6): the singular
  values are estimated on the feature matrix of a minibatch and the penalty is added to
  the TD objective with tradeoff alpha = 0.001 (the caller applies alpha). With the
  paper's Atari setting (minibatch 32, 512 penultimate units) Phi is [32, 512].

  Args:
    phi: [B, D] penultimate features of the minibatch (rows: samples).
    method: how the two singular values and the gradient are computed; both give the same
      value and, where sigma_max and sigma_min are simple, the same gradient (tested
      against numpy's SVD and finite differences in tests/test_regularizers.py).
      "svd" (default): differentiate through `jnp.linalg.svd(compute_uv=False)`.
      "gram": the extreme eigenpairs of the smaller Gram matrix G (Phi^T Phi [D, D] if
      B >= D, else Phi Phi^T [B, B]), whose eigenvalues are the squared singular values,
      from ONE `jnp.linalg.eigh` under stop_gradient; then Lp = |Phi v_1|^2 - |Phi v_k|^2
      (|Phi^T u|^2 for B < D) with the eigenvectors held fixed. Its gradient
      2 Phi v_1 v_1^T - 2 Phi v_k v_k^T = 2 s_1 u_1 v_1^T - 2 s_k u_k v_k^T is the SVD
      formula below (first-order perturbation of a simple eigenvalue, d lambda =
      v^T dG v), but no SVD and no eigh derivative is computed. Why it exists: XLA:CPU's
      SVD with singular vectors, which the "svd" gradient needs, is slow (docs/gridworld.md,
      "Lp cost", has the figures). Precision: the squared singular values come from G,
      so in float32 they carry an absolute error ~ eps sigma_max^2 (the value is
      evaluated as |Phi v|^2, but a sigma_min^2 below ~1e-7 sigma_max^2 is not resolved
      and its eigenvector, hence the small second gradient term, is arbitrary).

  Returns:
    Scalar, >= 0 (up to rounding for "gram"). sigma_min is the smallest of the min(B, D)
    singular values (for B < D the D - B structural zeros are not counted).

  Gradient ("svd"): differentiated through `jnp.linalg.svd(compute_uv=False)`, whose JVP is
  d sigma_i = u_i^T dPhi v_i, i.e. d Lp / d Phi = 2 sigma_max u_1 v_1^T
  - 2 sigma_min u_k v_k^T. This is the true gradient when sigma_max and sigma_min are
  each simple (distinct from the other singular values). It contains no
  1 / (sigma_i^2 - sigma_j^2) terms, so it stays finite even for repeated or zero
  singular values; but there Lp is not differentiable and the returned value is ONE
  element of the subdifferential, picked by whichever singular vectors LAPACK returns
  for the repeated value (arbitrary, basis-dependent). E.g. for Phi = I (all singular
  values equal, Lp = 0 = its minimum) the gradient returned is nonzero
  (2 e_1 e_1^T - 2 e_k e_k^T) although 0 is also a valid subgradient. The same holds for
  "gram" with the eigenvectors `eigh` returns.
  """
  if phi.ndim != 2:
    raise ValueError(f"lp_penalty expects [B, D] features, got shape {phi.shape}")
  if method == "svd":
    # Singular values come back sorted in descending order.
    s = jnp.linalg.svd(phi, compute_uv=False)
    return s[0] ** 2 - s[-1] ** 2
  if method == "gram":
    # Work on the smaller side: rows of `m` are the vectors whose Gram matrix is G.
    m = phi if phi.shape[0] >= phi.shape[1] else phi.T  # [n, k], n >= k
    const = jax.lax.stop_gradient(m)
    _, vecs = jnp.linalg.eigh(const.T @ const)  # ascending eigenvalues
    vecs = jax.lax.stop_gradient(vecs)
    top = m @ vecs[:, -1]
    bottom = m @ vecs[:, 0]
    return jnp.sum(top * top) - jnp.sum(bottom * bottom)
  raise ValueError(f"lp_penalty method must be one of {LP_METHODS}, got {method!r}")


# ------------------------------------------------------------------------------ DR3

_DR3_FEATURES = ("state", "action")
_DR3_REDUCTIONS = ("mean", "sum")


@dataclasses.dataclass(frozen=True)
class DR3Config:
  """Which DR3 variant `dr3_penalty` computes (see the presets below for provenance)."""

  features: str = "state"
  """Either "state": dot product phi(s)^T phi(s') of the state-only penultimate
  features that a DQN-style (multi-headed) network has. "action": action-aware features
  phi(s, a) = phi(s) (x) e_a, the feature for which Q(s, a) = <W, phi(s) e_a^T> exactly
  for the network's last layer W [D, A]; then
  phi(s, a)^T phi(s', a') = phi(s)^T phi(s') * [a == a'], which is the dot product of the
  DR3 paper's definition (phi(s, a)^T phi(s', a'), a' the action of the backup) for a
  multi-headed network. Needs `action` and `next_action`."""

  absolute: bool = False
  """True: |phi^T phi'| per transition (Dopamine lab); False: the raw dot product."""

  reduction: str = "mean"
  """Either "mean" or "sum" over the (unmasked) transitions of the minibatch."""

  stop_gradient_next: bool = False
  """True: stop_gradient on phi_next, so only phi(s) is pushed (a semi-gradient)."""

  mask_terminal: bool = False
  """True: drop transitions whose s' is terminal (there is no bootstrapped Q(s', a') in
  their target, hence no co-adaptation term to counteract); "mean" then averages over the
  non-terminal ones, and an all-terminal batch gives 0."""

  def __post_init__(self):
    if self.features not in _DR3_FEATURES:
      raise ValueError(f"DR3Config.features must be one of {_DR3_FEATURES}, "
                       f"got {self.features!r}")
    if self.reduction not in _DR3_REDUCTIONS:
      raise ValueError(f"DR3Config.reduction must be one of {_DR3_REDUCTIONS}, "
                       f"got {self.reduction!r}")


DR3_PAPER = DR3Config(features="state", absolute=False, reduction="mean",
                      stop_gradient_next=False, mask_terminal=False)
"""DR3 as described by the paper's authors (arXiv 2112.04716).

The thread (papers/002_*) and the slides (papers/004_*, "Our Method (DR3)") define the
explicit regulariser R_exp(phi) = sum_{(s,a,s',a')} phi(s,a)^T phi(s',a'): RAW dot
products (no absolute value), of the online network's features on both sides, with a'
the action used in the backup (the thread's SARSA-vs-TD experiment is exactly about which
a'); neither source mentions a stop-gradient or terminal masking. The Atari Q-networks are
multi-headed, so their penultimate features are state-only and the product is
phi(s)^T phi(s') (features="state"); the slides write a sum over transitions, which on a
minibatch is B times the mean used here (the factor goes into the coefficient; "mean"
matches the authors' Dopamine code). The coefficient c0 for Atari is not stated in the
thread or the slides.
"""

DR3_DOPAMINE_LAB = DR3Config(features="state", absolute=True, reduction="mean",
                             stop_gradient_next=False, mask_terminal=False)
"""Dopamine's labs/offline_rl/jax/offline_dr3_agent.py `compute_dr3_loss`.

That file is not in the dopamine-rl 4.1.2 wheel installed here; it was read in
google/dopamine, commit 81f695c, lines ~91-96, with configs/jax_dr3.gin. It computes
dot_products = einsum('ij,ij->i', phi(s), phi(s')) (sum over the feature axis, one dot
product per transition), then jnp.mean(jnp.abs(dot_products)) (abs per
transition, then mean over the batch). phi(s') comes from the same online parameters
without stop_gradient, terminals are not masked, and the features are the ReLU
penultimate layer (JAXDQNNetworkWithRepresentations, 512 units) - nonnegative, so there
|dot| = dot and this equals DR3_PAPER (gradients differ only where a dot product is
exactly 0, where d|x|/dx is taken as 0). Its jax_dr3.gin sets
OfflineJaxDR3Agent.dr3_coefficient = 0.1 (the class default is 0.0).
"""

DR3_VARIANTS: dict[str, DR3Config] = {
    "paper": DR3_PAPER,
    "dopamine_lab": DR3_DOPAMINE_LAB,
}


def dr3_config(name: str) -> DR3Config:
  """The preset `name` of DR3_VARIANTS; ValueError listing the valid names if unknown."""
  try:
    return DR3_VARIANTS[name]
  except KeyError:
    raise ValueError(f"Unknown DR3 variant {name!r}; valid names: "
                     f"{', '.join(sorted(DR3_VARIANTS))}") from None


def dr3_penalty(phi: jax.Array,
                phi_next: jax.Array,
                *,
                action: Optional[jax.Array] = None,
                next_action: Optional[jax.Array] = None,
                num_actions: Optional[int] = None,
                terminal: Optional[jax.Array] = None,
                config: DR3Config) -> jax.Array:
  """DR3 feature co-adaptation penalty (Kumar et al., ICLR 2022), a scalar.

  Args:
    phi: [B, D] online-network penultimate features at s.
    phi_next: [B, D] online-network penultimate features at s' (same parameters).
    action: int [B], a (features="action" only).
    next_action: int [B], a' of the backup (features="action" only): the dataset's next
      action for SARSA, the argmax action for Q-learning.
    num_actions: optional A (features="action"): makes the action-aware product the
      exact one-hot one, <e_a, e_a'> = [a == a'] * [0 <= a < A], so out-of-range actions
      (e.g. -1 padding) give a zero feature instead of matching each other.
    terminal: bool [B], True where s' is terminal (config.mask_terminal only).
    config: the variant (DR3_PAPER, DR3_DOPAMINE_LAB, dr3_config(name), ...).

  Returns:
    Scalar reduce_b w_b * f(phi_b^T phi'_b * m_b), f = abs or identity, m_b the action
    match (1 for state features), w_b the non-terminal mask (1 without masking).
  """
  if phi.ndim != 2 or phi.shape != phi_next.shape:
    raise ValueError(f"dr3_penalty expects phi and phi_next of the same [B, D] shape, "
                     f"got {phi.shape} and {phi_next.shape}")
  keep = None
  if config.mask_terminal:
    if terminal is None:
      raise ValueError("DR3Config(mask_terminal=True) needs terminal")
    keep = jnp.logical_not(terminal.astype(bool))
    # Zero the terminal rows' features with `where` before the product, so that nothing
    # from them (not even a non-finite phi(s') of a padded frame) reaches the value or
    # the gradients of either side.
    phi = jnp.where(keep[:, None], phi, 0.0)
    phi_next = jnp.where(keep[:, None], phi_next, 0.0)
  if config.stop_gradient_next:
    phi_next = jax.lax.stop_gradient(phi_next)
  dots = jnp.sum(phi * phi_next, axis=-1)  # [B]

  if config.features == "action":
    if action is None or next_action is None:
      raise ValueError('DR3Config(features="action") needs action and next_action')
    # phi(s) (x) e_a . phi(s') (x) e_a' = (phi(s) . phi(s')) * (e_a . e_a').
    match = action == next_action
    if num_actions is not None:
      match = match & (action >= 0) & (action < num_actions)
    dots = dots * match.astype(dots.dtype)

  if config.absolute:
    dots = jnp.abs(dots)

  if keep is not None and config.reduction == "mean":
    # Mean over the non-terminal transitions; an all-terminal batch gives 0 / 1 = 0.
    return jnp.sum(dots) / jnp.maximum(jnp.sum(keep).astype(dots.dtype), 1.0)
  return jnp.sum(dots) if config.reduction == "sum" else jnp.mean(dots)


# ------------------------------------------------------------------------------ CQL


def cql_penalty(q_values: jax.Array, action: jax.Array,
                temperature: float = 1.0) -> jax.Array:
  """CQL(H), discrete actions: mean_b [tau logsumexp_a(Q(s_b, a) / tau) - Q(s_b, a_b)].

  CQL paper (Kumar, Zhou, Tucker, Levine, NeurIPS 2020), Eq. (4) with the entropy
  regulariser: E_s[log sum_a exp Q(s, a)] - E_{(s,a)~D}[Q(s, a)], minimised with weight
  alpha (applied by the caller). temperature tau = 1 is that standard form; the soft-max
  (tau logsumexp(Q / tau)) tends to max_a Q as tau -> 0. Each row is >= 0 for any tau > 0
  (tau logsumexp(Q / tau) >= max_a Q >= Q(s, a_b)). With tau = 1 this is the `cql_loss`
  of Dopamine's offline_dr3_agent.py and the min_q_loss of the CQL Atari code. Stable:
  jax.nn.logsumexp shifts by the row max before exponentiating.

  Args:
    q_values: [B, A] online Q-values at s.
    action: int [B] dataset actions.
    temperature: tau > 0.

  Returns:
    Scalar.
  """
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"cql_penalty temperature must be > 0, got {temperature}")
  soft_max = temperature * jax.nn.logsumexp(q_values / temperature, axis=-1)
  data_q = jnp.take_along_axis(q_values, action[:, None].astype(jnp.int32), axis=1)[:, 0]
  return jnp.mean(soft_max - data_q)


def cql_penalty_quantiles(quantiles: jax.Array, action: jax.Array,
                          temperature: float = 1.0) -> jax.Array:
  """`cql_penalty` on Q(s, a) = mean over quantiles: the CQL Atari setting.

  CQL's Atari code is built on QR-DQN (aviralkumar2907/CQL,
  atari/batch_rl/multi_head/quantile_agent.py, "Add the CQL loss"): the logsumexp and the
  dataset term use the network's q_values, the mean of its quantiles, not the quantiles
  themselves.

  Args:
    quantiles: [B, A, N] quantile estimates.
    action: int [B] dataset actions.
    temperature: tau > 0.
  """
  return cql_penalty(jnp.mean(quantiles, axis=-1), action, temperature)


# ------------------------------------------------------------------------------ CURL


def info_nce(query: jax.Array, keys: jax.Array) -> jax.Array:
  """CURL's contrastive loss: mean_i -log softmax_j(query_i . keys_j)[i].

  Args:
    query: [B, D] queries (for CURL already multiplied by the bilinear W: W^T q).
    keys: [B, D] keys; keys[i] is query[i]'s positive, the other rows its negatives.

  Returns:
    Scalar cross-entropy of identifying each query's own key (log B for uninformative
    features). The row max is subtracted before the softmax, as CURL does.
  """
  if query.shape != keys.shape or query.ndim != 2:
    raise ValueError(f"info_nce expects two [B, D] arrays, got {query.shape} and "
                     f"{keys.shape}")
  logits = query @ keys.T
  logits = logits - jnp.max(logits, axis=1, keepdims=True)
  log_probs = jax.nn.log_softmax(logits, axis=1)
  return -jnp.mean(jnp.diagonal(log_probs))


# ------------------------------------------------------------------------ coefficient


def check_coefficient(name: str, value: float) -> None:
  """Raises ValueError unless `value` is a finite float >= 0.

  `name` is the gin binding it came from (e.g. "DQNAgent.dr3_coefficient"), so the message
  points at the line of the config to fix. 0 is allowed (regulariser off).
  """
  try:
    value_f = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a number, got {value!r}") from None
  if not math.isfinite(value_f):
    raise ValueError(
        f"{name} must be finite, got {value!r} (check the gin binding {name})")
  if value_f < 0:
    raise ValueError(
        f"{name} must be >= 0, got {value!r} (check the gin binding {name}); "
        "a negative coefficient would reward the quantity it should penalise")

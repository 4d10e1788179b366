"""Distributional RL targets and losses: C51 and QR-DQN, pure functions of arrays.

Like `losses.py`, nothing here holds a network; agents pick the taken action's
logits / quantiles and the next state's greedy distribution themselves and pass
arrays in. Every function is jittable (no Python loops over atoms at runtime).

Shape letters: B batch, A actions, N atoms / quantiles of the online prediction,
N' atoms / quantiles of the target.

C51 (Bellemare et al. 2017, "A Distributional Perspective on RL"): a categorical
distribution on a fixed, evenly spaced support; Dopamine and batch_rl use 51 atoms
on [-10, 10]. QR-DQN (Dabney et al. 2018, "Distributional RL with Quantile
Regression"): N quantile locations at midpoints tau_hat_i = (2i + 1) / (2N) trained
with the quantile Huber loss; batch_rl and the CQL Atari code use N = 200, kappa = 1.
"""
import jax
import jax.numpy as jnp

from batch_rl import losses

# ----------------------------------------------------------------------------- C51


def support(num_atoms: int = 51, vmin: float = -10.0, vmax: float = 10.0) -> jax.Array:
  """Evenly spaced atom locations z_0 = vmin < ... < z_{N-1} = vmax. [N] float32."""
  if num_atoms < 2:
    raise ValueError(f"num_atoms must be >= 2, got {num_atoms}")
  if not vmax > vmin:
    raise ValueError(f"need vmax > vmin, got vmin={vmin}, vmax={vmax}")
  return jnp.linspace(vmin, vmax, num_atoms, dtype=jnp.float32)


def project_distribution(target_support: jax.Array, target_probs: jax.Array,
                         support: jax.Array) -> jax.Array:
  """Categorical (Cramer) projection of distributions on arbitrary atoms onto `support`.

  Eq. 7 of Bellemare et al. (2017). Each source atom x (location
  `target_support[b, j]`, mass `target_probs[b, j]`) is first clipped to
  [vmin, vmax] = [support[0], support[-1]]; its mass then goes to the two support
  atoms z_k <= x <= z_{k+1} in proportion to closeness: z_k receives
  (z_{k+1} - x) / dz of it, z_{k+1} receives (x - z_k) / dz. An atom exactly on a
  support point keeps all its mass there. Written as one dense contraction,

    out[b, i] = sum_j clip(1 - |clip(x_bj, vmin, vmax) - z_i| / dz, 0, 1) * p_bj,

  which is O(B N N') work and memory (51 x 51 per row for C51: negligible).

  For source atoms inside [vmin, vmax] the projection conserves total mass and
  the mean; atoms outside contribute their mass at the nearest end.

  Args:
    target_support: [B, N'] source atom locations (e.g. r + gamma^n z); any N'.
    target_probs: [B, N'] source masses (need not be normalised; the projection is
      linear in them).
    support: [N] the fixed support; must be increasing and evenly spaced
      (not checked, so the function stays jittable), e.g. `support()`.

  Returns:
    [B, N] projected masses on `support`.
  """
  vmin, vmax = support[0], support[-1]
  delta_z = support[1] - support[0]
  clipped = jnp.clip(target_support, vmin, vmax)                       # [B, N']
  distance = jnp.abs(clipped[:, None, :] - support[None, :, None])     # [B, N, N']
  weight = jnp.clip(1.0 - distance / delta_z, 0.0, 1.0)                # [B, N, N']
  return jnp.einsum("bij,bj->bi", weight, target_probs)


def c51_target(reward: jax.Array, discount: jax.Array, next_probs: jax.Array,
               support: jax.Array) -> jax.Array:
  """C51 target distribution: projection of r + discount * z onto `support`.

  Args:
    reward: [B] (n-step) reward.
    discount: [B] gamma^n * (1 - terminal); 0 puts all mass at clip(r).
    next_probs: [B, N] probabilities of the next state's (greedy) action, on
      `support`.
    support: [N] fixed support.

  Returns:
    [B, N] target probabilities, wrapped in stop_gradient.
  """
  atoms = reward[:, None] + discount[:, None] * support[None, :]
  return jax.lax.stop_gradient(project_distribution(atoms, next_probs, support))


def c51_loss(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
  """Cross-entropy -sum_i target_i log softmax(logits)_i per example.

  The same quantity as Dopamine's `softmax_cross_entropy_with_logits` in its C51 /
  Rainbow agents. Gradient w.r.t. logits is softmax(logits) - target; none flows
  into the target (stop_gradient).

  Args:
    logits: [B, N] logits of the taken action.
    target_probs: [B, N] target distribution (e.g. `c51_target`).

  Returns:
    [B] loss per example.
  """
  target_probs = jax.lax.stop_gradient(target_probs)
  return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def expected_q(logits: jax.Array, support: jax.Array) -> jax.Array:
  """Q(s, a) = sum_i softmax(logits[..., a, :])_i z_i.

  Args:
    logits: [B, A, N] (any leading shape works; atoms on the last axis).
    support: [N].

  Returns:
    [B, A] expected values.
  """
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * support, axis=-1)


# -------------------------------------------------------------------------- QR-DQN


def quantile_midpoints(num_quantiles: int) -> jax.Array:
  """tau_hat_i = (2i + 1) / (2N), i = 0..N-1 (Lemma 2 of Dabney et al.). [N] float32."""
  return (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles


def quantile_huber_loss(quantiles: jax.Array, target_quantiles: jax.Array,
                        kappa: float = 1.0) -> jax.Array:
  """Quantile Huber loss of QR-DQN (Eq. 9-10 of Dabney et al. 2018).

  With tau_hat_i = `quantile_midpoints(N)` and, for every pair (i, j),
  u_ij = target_j - quantile_i:

    rho_ij = |tau_hat_i - 1{u_ij < 0}| * huber_kappa(u_ij) / kappa
    loss   = sum_i mean_j rho_ij

  (sum over the predicted quantiles, mean over the target samples: the paper's
  normalisation). Dopamine's JAX QR-DQN (jax/agents/quantile/quantile_agent.py,
  `train`) reduces the same way, `jnp.sum(jnp.mean(rho, 2), 1)` over
  [B, N(predicted), N'(target)], then means over the batch; it does NOT divide by
  kappa, so its loss equals this one times kappa (identical at the default
  kappa = 1 used by Dopamine, batch_rl and the CQL Atari code). Dividing by kappa
  makes the loss tend to the plain quantile (pinball) loss as kappa -> 0.

  Args:
    quantiles: [B, N] predicted quantile locations of the taken action.
    target_quantiles: [B, N'] target samples (e.g. `qr_target`); stop_gradient is
      applied here.
    kappa: Huber threshold (> 0).

  Returns:
    [B] loss per example.
  """
  target_quantiles = jax.lax.stop_gradient(target_quantiles)
  num_quantiles = quantiles.shape[-1]
  tau_hat = quantile_midpoints(num_quantiles).astype(quantiles.dtype)      # [N]
  u = target_quantiles[:, None, :] - quantiles[:, :, None]                 # [B, N, N']
  weight = jnp.abs(tau_hat[None, :, None] - (u < 0).astype(quantiles.dtype))
  rho = weight * losses.huber_loss(u, kappa) / kappa
  return jnp.sum(jnp.mean(rho, axis=2), axis=1)


def qr_target(reward: jax.Array, discount: jax.Array,
              next_quantiles: jax.Array) -> jax.Array:
  """QR-DQN target samples r + discount * theta_j(s', a*).

  Args:
    reward: [B] (n-step) reward.
    discount: [B] gamma^n * (1 - terminal).
    next_quantiles: [B, N] quantiles of the next state's (greedy) action.

  Returns:
    [B, N] target quantiles, wrapped in stop_gradient.
  """
  return jax.lax.stop_gradient(reward[:, None] + discount[:, None] * next_quantiles)

"""C51 and QR-DQN targets/losses (batch_rl/distributional.py).

References are written here independently: an explicit per-atom loop for the
categorical projection (Algorithm 1 of Bellemare et al. 2017), an explicit (i, j)
double loop for the quantile Huber loss (Eq. 9-10 of Dabney et al. 2018), and
hand-worked examples. Dopamine's TF `project_distribution` is used as a further
reference when it can be loaded.
"""
import ast
import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import distributional as dist

# ------------------------------------------------------------ numpy references


def np_project(atoms, probs, support):
  """Per-atom loop: clip each atom, split its mass between floor/ceil neighbours."""
  atoms = np.asarray(atoms, np.float64)
  probs = np.asarray(probs, np.float64)
  support = np.asarray(support, np.float64)
  vmin, vmax = support[0], support[-1]
  dz = (vmax - vmin) / (len(support) - 1)
  out = np.zeros((atoms.shape[0], len(support)))
  for b in range(atoms.shape[0]):
    for j in range(atoms.shape[1]):
      x = min(max(atoms[b, j], vmin), vmax)
      pos = (x - vmin) / dz
      lo, hi = int(math.floor(pos)), int(math.ceil(pos))
      hi = min(hi, len(support) - 1)
      lo = min(lo, hi)
      if lo == hi:
        out[b, lo] += probs[b, j]
      else:
        out[b, lo] += probs[b, j] * (hi - pos)
        out[b, hi] += probs[b, j] * (pos - lo)
  return out


def np_quantile_huber(quantiles, targets, kappa):
  """Explicit double loop over (i, j); returns (loss [B], d loss / d quantiles [B, N])."""
  quantiles = np.asarray(quantiles, np.float64)
  targets = np.asarray(targets, np.float64)
  batch, n = quantiles.shape
  n_target = targets.shape[1]
  loss = np.zeros(batch)
  grad = np.zeros((batch, n))
  for b in range(batch):
    for i in range(n):
      tau = (2 * i + 1) / (2 * n)
      for j in range(n_target):
        u = targets[b, j] - quantiles[b, i]
        weight = abs(tau - (1.0 if u < 0 else 0.0))
        if abs(u) <= kappa:
          huber, dhuber_du = 0.5 * u * u, u
        else:
          huber, dhuber_du = kappa * (abs(u) - 0.5 * kappa), kappa * np.sign(u)
        loss[b] += weight * huber / kappa / n_target
        # du / d quantile_i = -1.
        grad[b, i] -= weight * dhuber_du / kappa / n_target
  return loss, grad


def random_probs(rng, shape):
  x = rng.gamma(0.5, size=shape)
  return (x / x.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------- C51


def test_support_default_is_51_atoms_on_plus_minus_10():
  z = np.asarray(dist.support())
  assert z.shape == (51,) and z.dtype == np.float32
  np.testing.assert_allclose(z[[0, 25, 50]], [-10.0, 0.0, 10.0], atol=1e-6)
  np.testing.assert_allclose(np.diff(z), 0.4, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(dist.support(3, -1.0, 1.0)), [-1.0, 0.0, 1.0])
  with pytest.raises(ValueError):
    dist.support(1)
  with pytest.raises(ValueError):
    dist.support(5, 1.0, 1.0)


def test_projection_hand_worked_three_atoms_shift_half():
  # Support z = [-1, 0, 1] (dz = 1); p = [0.2, 0.5, 0.3] shifted by +0.5 lies on
  # [-0.5, 0.5, 1.5]:
  #   -0.5: halfway between -1 and 0      -> 0.1 to z=-1, 0.1 to z=0
  #    0.5: halfway between  0 and 1      -> 0.25 to z=0, 0.25 to z=1
  #    1.5: clipped to vmax = 1           -> 0.3 to z=1
  # Total [0.1, 0.35, 0.55].
  z = dist.support(3, -1.0, 1.0)
  probs = jnp.asarray([[0.2, 0.5, 0.3]])
  out = dist.project_distribution(z[None] + 0.5, probs, z)
  np.testing.assert_allclose(np.asarray(out), [[0.1, 0.35, 0.55]], atol=1e-6)
  # Same thing through c51_target: reward 0.5, discount 1.
  out = dist.c51_target(jnp.asarray([0.5]), jnp.asarray([1.0]), probs, z)
  np.testing.assert_allclose(np.asarray(out), [[0.1, 0.35, 0.55]], atol=1e-6)


def test_projection_hand_worked_uneven_source_atoms():
  # Support [0, 2, 4] (dz = 2); four source atoms (N' = 4 != N = 3):
  #   -3 (p 0.1): clipped to 0                    -> 0.1 to z=0
  #   0.5 (p 0.2): 1/4 of the way from 0 to 2     -> 0.15 to z=0, 0.05 to z=2
  #   3.5 (p 0.3): 3/4 of the way from 2 to 4     -> 0.075 to z=2, 0.225 to z=4
  #   9 (p 0.4): clipped to 4                     -> 0.4 to z=4
  # Total [0.25, 0.125, 0.625].
  z = dist.support(3, 0.0, 4.0)
  out = dist.project_distribution(jnp.asarray([[-3.0, 0.5, 3.5, 9.0]]),
                                  jnp.asarray([[0.1, 0.2, 0.3, 0.4]]), z)
  np.testing.assert_allclose(np.asarray(out), [[0.25, 0.125, 0.625]], atol=1e-6)


def test_projection_matches_per_atom_loop_random():
  rng = np.random.default_rng(0)
  z = dist.support()
  zn = np.asarray(z)
  batch = 16
  probs = random_probs(rng, (batch, 51))
  # Mix of in-range, out-of-range (both sides) and exactly-on-support atoms.
  atoms = rng.uniform(-18.0, 18.0, (batch, 51)).astype(np.float32)
  on_grid = rng.random((batch, 51)) < 0.3
  atoms[on_grid] = zn[rng.integers(0, 51, on_grid.sum())]
  atoms[0] = zn  # identity row: projection must return the input
  atoms[1] = 25.0  # all above vmax
  atoms[2] = -11.0  # all below vmin
  assert (atoms > 10).any() and (atoms < -10).any()
  out = np.asarray(dist.project_distribution(jnp.asarray(atoms), jnp.asarray(probs), z))
  np.testing.assert_allclose(out, np_project(atoms, probs, zn), atol=2e-6)
  np.testing.assert_allclose(out[0], probs[0], atol=2e-6)
  np.testing.assert_allclose(out[1], np.eye(51)[50], atol=1e-6)
  np.testing.assert_allclose(out[2], np.eye(51)[0], atol=1e-6)
  np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)

  # A different source size N' and support; jit gives the same numbers.
  z7 = dist.support(7, -3.0, 3.0)
  atoms = rng.normal(0.0, 3.0, (5, 11)).astype(np.float32)
  probs = random_probs(rng, (5, 11))
  out = np.asarray(jax.jit(dist.project_distribution)(jnp.asarray(atoms), jnp.asarray(probs), z7))
  np.testing.assert_allclose(out, np_project(atoms, probs, np.asarray(z7)), atol=2e-6)


def test_c51_target_matches_loop_and_conserves_mass():
  rng = np.random.default_rng(1)
  z = dist.support()
  batch = 32
  reward = rng.normal(0.0, 4.0, batch).astype(np.float32)
  reward[:3] = [15.0, -30.0, 0.0]
  discount = (0.99 ** rng.integers(1, 4, batch) * (rng.random(batch) > 0.2)).astype(np.float32)
  next_probs = random_probs(rng, (batch, 51))
  out = np.asarray(dist.c51_target(jnp.asarray(reward), jnp.asarray(discount),
                                   jnp.asarray(next_probs), z))
  atoms = reward[:, None].astype(np.float64) + discount[:, None] * np.asarray(z, np.float64)
  np.testing.assert_allclose(out, np_project(atoms, next_probs, np.asarray(z)), atol=2e-6)
  assert (out >= 0).all()
  np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_projection_preserves_mean_of_in_range_atoms():
  # The Cramer projection onto the two neighbours is mean-preserving.
  rng = np.random.default_rng(2)
  z = dist.support()
  atoms = rng.uniform(-10.0, 10.0, (8, 30)).astype(np.float32)
  probs = random_probs(rng, (8, 30))
  out = np.asarray(dist.project_distribution(jnp.asarray(atoms), jnp.asarray(probs), z))
  np.testing.assert_allclose(out @ np.asarray(z, np.float64), (atoms * probs).sum(-1),
                             atol=1e-4)


def test_c51_target_discount_zero_puts_all_mass_at_clipped_reward():
  # Support 51 atoms on [-10, 10], dz = 0.4; index k sits at -10 + 0.4 k.
  rng = np.random.default_rng(3)
  z = dist.support()
  reward = np.asarray([-25.0, -10.0, -3.7, 0.0, 0.4, 2.2, 10.0, 13.0], np.float32)
  expected = np.zeros((8, 51))
  expected[0, 0] = 1.0    # -25 clipped to -10
  expected[1, 0] = 1.0    # exactly vmin
  expected[2, 15] = 0.25  # -3.7: (6.3 / 0.4) = 15.75 -> 0.25 at k=15 (-4.0),
  expected[2, 16] = 0.75  #        0.75 at k=16 (-3.6)
  expected[3, 25] = 1.0   # 0 is atom 25
  expected[4, 26] = 1.0   # 0.4 is atom 26
  expected[5, 30] = 0.5   # 2.2 halfway between 2.0 (k=30) and 2.4 (k=31)
  expected[5, 31] = 0.5
  expected[6, 50] = 1.0   # exactly vmax
  expected[7, 50] = 1.0   # 13 clipped to 10
  out = dist.c51_target(jnp.asarray(reward), jnp.zeros(8), jnp.asarray(random_probs(rng, (8, 51))), z)
  np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)


def _load_tf_project_distribution():
  """Dopamine's TF project_distribution, or None.

  The plain import fails in this environment (dopamine.tf.agents.rainbow imports
  atari_lib, which needs OpenAI baselines), so fall back to taking just that
  function's source from the installed file; it only uses `tf`.
  """
  tf = pytest.importorskip("tensorflow")
  try:
    from dopamine.tf.agents.rainbow.rainbow_agent import project_distribution
    return tf, project_distribution
  except Exception:  # pylint: disable=broad-except
    pass
  spec = importlib.util.find_spec("dopamine")
  if spec is None or not spec.submodule_search_locations:
    return tf, None
  path = f"{list(spec.submodule_search_locations)[0]}/tf/agents/rainbow/rainbow_agent.py"
  try:
    with open(path) as f:
      tree = ast.parse(f.read())
    node = next(n for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.name == "project_distribution")
    namespace = {"tf": tf}
    exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), namespace)  # pylint: disable=exec-used
    return tf, namespace["project_distribution"]
  except (OSError, SyntaxError, StopIteration):
    return tf, None


def test_projection_matches_dopamine_tensorflow():
  tf, tf_project = _load_tf_project_distribution()
  if tf_project is None:
    pytest.skip("Dopamine's TF project_distribution not available")
  rng = np.random.default_rng(4)
  z = dist.support()
  batch = 16
  reward = rng.normal(0.0, 5.0, batch).astype(np.float32)
  discount = (0.99 * (rng.random(batch) > 0.25)).astype(np.float32)
  atoms = reward[:, None] + discount[:, None] * np.asarray(z)
  probs = random_probs(rng, (batch, 51))
  theirs = tf_project(tf.constant(atoms), tf.constant(probs), tf.constant(np.asarray(z))).numpy()
  ours = np.asarray(dist.project_distribution(jnp.asarray(atoms), jnp.asarray(probs), z))
  np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_c51_loss_cross_entropy_and_gradients():
  rng = np.random.default_rng(5)
  logits = rng.normal(0.0, 2.0, (6, 51)).astype(np.float32)
  target = random_probs(rng, (6, 51))
  ln = logits.astype(np.float64)
  log_softmax = ln - ln.max(-1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
  expected = -(target * log_softmax).sum(-1)
  loss = dist.c51_loss(jnp.asarray(logits), jnp.asarray(target))
  assert loss.shape == (6,)
  np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-5)
  # d/dlogits = softmax - target (targets sum to 1); nothing flows into the target.
  g_logits, g_target = jax.grad(lambda l, t: jnp.sum(dist.c51_loss(l, t)), argnums=(0, 1))(
      jnp.asarray(logits), jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(g_logits), np.exp(log_softmax) - target, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(g_target), 0.0)
  # Hand case: uniform logits over 4 atoms, one-hot target -> log 4.
  np.testing.assert_allclose(
      np.asarray(dist.c51_loss(jnp.zeros((1, 4)), jnp.asarray([[0.0, 1.0, 0.0, 0.0]]))),
      [np.log(4.0)], rtol=1e-6)


def test_c51_target_blocks_gradient():
  z = dist.support()
  probs = jnp.asarray(random_probs(np.random.default_rng(6), (3, 51)))
  grads = jax.grad(lambda r, d, p: jnp.sum(dist.c51_target(r, d, p, z) * jnp.arange(51.0)),
                   argnums=(0, 1, 2))(jnp.asarray([0.3, -1.0, 2.0]), jnp.full(3, 0.9), probs)
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_expected_q():
  rng = np.random.default_rng(7)
  z = dist.support()
  logits = rng.normal(0.0, 2.0, (4, 3, 51)).astype(np.float32)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = dist.expected_q(jnp.asarray(logits), z)
  assert q.shape == (4, 3)
  np.testing.assert_allclose(np.asarray(q), (p * np.asarray(z)).sum(-1), atol=1e-5)
  # Hand case: logits putting (almost) all mass on atom 40 -> Q = -10 + 0.4 * 40 = 6.
  peaked = jnp.full((1, 1, 51), -1e4).at[0, 0, 40].set(0.0)
  np.testing.assert_allclose(np.asarray(dist.expected_q(peaked, z)), [[6.0]], atol=1e-5)


# ----------------------------------------------------------------------- QR-DQN


def test_quantile_midpoints():
  np.testing.assert_allclose(np.asarray(dist.quantile_midpoints(4)),
                             [0.125, 0.375, 0.625, 0.875])
  tau = np.asarray(dist.quantile_midpoints(200))
  assert tau.shape == (200,) and tau.dtype == np.float32
  np.testing.assert_allclose(tau[[0, 199]], [1 / 400, 399 / 400], rtol=1e-6)


@pytest.mark.parametrize("kappa", [1.0, 2.0])
@pytest.mark.parametrize("n_target", [5, 7])
def test_quantile_huber_loss_matches_double_loop(kappa, n_target):
  rng = np.random.default_rng(int(10 * kappa) + n_target)
  quantiles = rng.normal(0.0, 2.0, (4, 5)).astype(np.float32)
  targets = rng.normal(0.5, 3.0, (4, n_target)).astype(np.float32)
  targets[0, 0] = quantiles[0, 1]  # u = 0 exactly
  want_loss, want_grad = np_quantile_huber(quantiles, targets, kappa)
  loss = dist.quantile_huber_loss(jnp.asarray(quantiles), jnp.asarray(targets), kappa)
  assert loss.shape == (4,)
  np.testing.assert_allclose(np.asarray(loss), want_loss, rtol=1e-5, atol=1e-6)
  g_q, g_t = jax.grad(lambda q, t: jnp.sum(dist.quantile_huber_loss(q, t, kappa)),
                      argnums=(0, 1))(jnp.asarray(quantiles), jnp.asarray(targets))
  np.testing.assert_allclose(np.asarray(g_q), want_grad, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(g_t), 0.0)


def test_quantile_huber_loss_hand_worked_two_quantiles():
  # N = 2: tau_hat = [0.25, 0.75]; quantiles [0, 1]; targets [0.5, 3].
  # kappa = 1 (huber(u) = u^2/2 if |u| <= 1 else |u| - 1/2):
  #   i=0 (tau .25, q=0): u=0.5 -> .25 * .125 = .03125;  u=3 -> .25 * 2.5 = .625
  #                        mean = .328125
  #   i=1 (tau .75, q=1): u=-.5 -> |.75 - 1| * .125 = .03125; u=2 -> .75 * 1.5 = 1.125
  #                        mean = .578125
  #   loss = .328125 + .578125 = .90625
  # kappa = 2 (huber(u) = u^2/2 if |u| <= 2 else 2 (|u| - 1)), then / 2:
  #   i=0: u=.5 -> .25 * .125 / 2 = .015625; u=3 -> .25 * 4 / 2 = .5;   mean .2578125
  #   i=1: u=-.5 -> .25 * .125 / 2 = .015625; u=2 -> .75 * 2 / 2 = .75; mean .3828125
  #   loss = .640625
  q = jnp.asarray([[0.0, 1.0]])
  t = jnp.asarray([[0.5, 3.0]])
  np.testing.assert_allclose(np.asarray(dist.quantile_huber_loss(q, t, 1.0)), [0.90625], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(dist.quantile_huber_loss(q, t, 2.0)), [0.640625], rtol=1e-6)
  # Gradients at kappa = 1: d/dq_i = -mean_j |tau_i - 1{u<0}| clip(u, -1, 1)
  #   q_0: -(.25 * .5 + .25 * 1) / 2 = -.1875
  #   q_1: -(.25 * -.5 + .75 * 1) / 2 = -.3125
  g = jax.grad(lambda q: jnp.sum(dist.quantile_huber_loss(q, t, 1.0)))(q)
  np.testing.assert_allclose(np.asarray(g), [[-0.1875, -0.3125]], rtol=1e-6)


@pytest.mark.parametrize("kappa, method, atol", [
    (1.0, "linear", 0.75),         # agents' setting: Huber smooths over +-1 (std 20)
    (0.01, "inverted_cdf", 0.05),  # ~pinball loss: converges to the order statistic
])
def test_quantile_regression_sgd_recovers_empirical_quantiles(kappa, method, atol):
  # 8 quantiles against 100 fixed target points: tau_hat * 100 = 6.25, 18.75, ...
  # is never an integer, so the pinball minimiser is a unique order statistic
  # (numpy's "inverted_cdf" quantile).
  rng = np.random.default_rng(8)
  target = jnp.asarray(rng.normal(0.0, 20.0, (1, 100)).astype(np.float32))
  tau = (np.arange(8) + 0.5) / 8
  want = np.quantile(np.asarray(target[0]), tau, method=method)

  grad_fn = jax.grad(lambda th: jnp.sum(dist.quantile_huber_loss(th[None], target, kappa)))

  @jax.jit
  def train(theta):
    return jax.lax.fori_loop(0, 500, lambda _, th: th - 4.0 * grad_fn(th), theta)

  learned = np.asarray(train(jnp.zeros(8)))
  np.testing.assert_allclose(learned, want, atol=atol)
  assert (np.diff(learned) > 0).all()


def test_qr_target_values_and_stop_gradient():
  reward = jnp.asarray([1.0, -0.5])
  discount = jnp.asarray([0.9, 0.0])
  nxt = jnp.asarray([[-1.0, 0.0, 2.0], [5.0, 6.0, 7.0]])
  np.testing.assert_allclose(np.asarray(dist.qr_target(reward, discount, nxt)),
                             [[0.1, 1.0, 2.8], [-0.5, -0.5, -0.5]], rtol=1e-6)
  grads = jax.grad(lambda r, d, q: jnp.sum(dist.qr_target(r, d, q)), argnums=(0, 1, 2))(
      reward, discount, nxt)
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)

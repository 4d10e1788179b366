"""SAC's and CQL-SAC's losses (batch_rl/agents/sac_losses.py) against a small numpy
implementation written here from the papers, on fixed inputs; the tanh-Gaussian
density against a finite difference of its distribution function."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from batch_rl.agents import sac_losses

B, N, A = 6, 4, 3
RNG = np.random.default_rng(0)


def arrays(*shapes):
  return [RNG.normal(size=s).astype(np.float32) for s in shapes]


def test_tanh_gaussian_density_is_the_derivative_of_its_distribution_function():
  """P(tanh(u) <= a) = Phi((atanh(a) - mean) / std) per dimension; its central
  difference in a is the density, and the dimensions are independent."""
  mean, log_std = np.array([0.3, -1.2, 2.0]), np.array([-0.5, 0.4, 0.1])
  actions = np.array([0.2, -0.95, 0.999])
  h = 1e-6
  cdf = lambda a: stats.norm.cdf((np.arctanh(a) - mean) / np.exp(log_std))
  numeric = np.sum(np.log((cdf(actions + h) - cdf(actions - h)) / (2 * h)))
  found = sac_losses.tanh_gaussian_log_prob(jnp.asarray(mean), jnp.asarray(log_std),
                                            jnp.asarray(np.arctanh(actions)))
  np.testing.assert_allclose(float(found), numeric, rtol=1e-4)


def test_log_density_stays_finite_where_tanh_saturates():
  value = sac_losses.tanh_gaussian_log_prob(jnp.zeros(2), jnp.zeros(2),
                                            jnp.array([30.0, -30.0]))
  expected = 2 * (-0.5 * 900 - 0.5 * math.log(2 * math.pi)) - 2 * (
      2 * (math.log(2) - 30 - math.log1p(math.exp(-60))))
  assert np.isfinite(float(value))
  np.testing.assert_allclose(float(value), expected, rtol=1e-5)


def test_samples_are_reparameterised_and_in_the_box():
  mean, log_std = jnp.asarray(arrays((B, A))[0]), jnp.full((B, A), -0.3)
  action, log_prob = sac_losses.sample_tanh_gaussian(jax.random.PRNGKey(1), mean, log_std)
  assert action.shape == (B, A) and log_prob.shape == (B,)
  assert float(jnp.max(jnp.abs(action))) < 1
  eps = jax.random.normal(jax.random.PRNGKey(1), (B, A))
  np.testing.assert_allclose(action, np.tanh(mean + np.exp(log_std) * eps), rtol=1e-6)
  low, high = jnp.array([-2.0, 0.0, -1.0]), jnp.array([2.0, 1.0, 3.0])
  boxed = sac_losses.to_box(action, low, high)
  assert bool(jnp.all((boxed >= low) & (boxed <= high)))
  np.testing.assert_allclose(sac_losses.from_box(boxed, low, high), action, atol=1e-6)


def numpy_sac(q1, q2, reward, discount, nq1, nq2, nlogp, alpha, logp, pq1, pq2,
              log_alpha, target_entropy):
  """SAC from Haarnoja et al. 2018b, eqs. 5, 7 and 18, as numpy."""
  target = reward + discount * (np.minimum(nq1, nq2) - alpha * nlogp)
  # Twice eq. 5's 1/2 E[(Q - y)^2] per critic: rlkit's MSELoss, which CQL's code uses.
  critic = np.mean((q1 - target) ** 2) + np.mean((q2 - target) ** 2)
  actor = np.mean(alpha * logp - np.minimum(pq1, pq2))
  temperature = np.mean(-np.exp(log_alpha) * (logp + target_entropy))
  return target, critic, actor, temperature


def test_sac_losses_match_numpy():
  q1, q2, reward, nq1, nq2, nlogp, logp, pq1, pq2 = arrays(*[(B,)] * 9)
  discount = 0.99 * (RNG.random(B) > 0.3).astype(np.float32)
  alpha, log_alpha = np.float32(0.2), np.float32(math.log(0.2))
  target_entropy = sac_losses.default_target_entropy((A,))
  assert target_entropy == -3.0
  target, critic, actor, temperature = numpy_sac(
      q1, q2, reward, discount, nq1, nq2, nlogp, alpha, logp, pq1, pq2, log_alpha,
      target_entropy)
  found = sac_losses.soft_td_target(reward, discount, nq1, nq2, nlogp, alpha)
  np.testing.assert_allclose(found, target, rtol=1e-6)
  np.testing.assert_allclose(sac_losses.critic_loss(q1, q2, found), critic, rtol=1e-6)
  np.testing.assert_allclose(sac_losses.actor_loss(alpha, logp, pq1, pq2), actor, rtol=1e-6)
  np.testing.assert_allclose(sac_losses.temperature_loss(log_alpha, logp, target_entropy),
                             temperature, rtol=1e-6)


def test_gradients_flow_only_where_sac_sends_them():
  logp, q = jnp.asarray(arrays((B,))[0]), jnp.asarray(arrays((B,))[0])
  # The temperature's loss moves log alpha only: up while the entropy is below target.
  d_logp = jax.grad(lambda lp: sac_losses.temperature_loss(0.0, lp, -3.0))(logp)
  assert float(jnp.max(jnp.abs(d_logp))) == 0.0
  d_alpha = jax.grad(lambda la: sac_losses.temperature_loss(la, jnp.full(B, 5.0), -3.0))(0.0)
  assert float(d_alpha) < 0  # log pi = 5 > 3 = -target: entropy too low, alpha rises
  d_target = jax.grad(lambda nq: jnp.sum(sac_losses.soft_td_target(q, q, nq, nq, q, 0.1)))(q)
  assert float(jnp.max(jnp.abs(d_target))) == 0.0  # the target carries no gradient


def numpy_cql(q_random, q_current, q_next, logp_current, logp_next, q_data, action_size,
              temperature):
  """Kumar et al. 2020's continuous CQL(H) penalty (their code's cat_q / logsumexp)."""
  values = np.concatenate([q_random - np.log(0.5 ** action_size),
                           q_current - logp_current, q_next - logp_next], axis=1)
  logsumexp = temperature * special.logsumexp(values / temperature, axis=1)
  return logsumexp, logsumexp.mean() - q_data.mean()


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_cql_logsumexp_and_penalty_match_numpy(temperature):
  q_random, q_current, q_next, logp_current, logp_next = arrays(*[(B, N)] * 5)
  q_data = arrays((B,))[0]
  logsumexp, penalty = numpy_cql(q_random, q_current, q_next, logp_current, logp_next,
                                 q_data, A, temperature)
  found = sac_losses.cql_logsumexp(q_random, q_current, q_next, logp_current, logp_next,
                                   A, temperature)
  np.testing.assert_allclose(found, logsumexp, rtol=1e-5)
  np.testing.assert_allclose(sac_losses.cql_penalty(found, q_data), penalty, rtol=1e-5)


def test_cql_weights_carry_no_policy_gradient():
  q, logp = jnp.asarray(arrays((B, N))[0]), jnp.asarray(arrays((B, N))[0])
  grad = jax.grad(lambda lp: jnp.sum(sac_losses.cql_logsumexp(q, q, q, lp, lp, A)))(logp)
  assert float(jnp.max(jnp.abs(grad))) == 0.0


def test_cql_lagrange_multiplier_follows_the_gap():
  """alpha' rises while the gap is above its target and falls below it; the critics see
  alpha' times the excess gap."""
  for gap, direction in ((12.0, -1), (2.0, 1)):
    critic, _ = sac_losses.cql_lagrange_losses(jnp.float32(gap), jnp.float32(0.0), 5.0)
    np.testing.assert_allclose(float(critic), gap - 5.0, rtol=1e-6)
    grad = jax.grad(lambda la, g=gap: sac_losses.cql_lagrange_losses(
        jnp.float32(g), la, 5.0)[1])(jnp.float32(0.0))
    assert np.sign(float(grad)) == direction  # gradient descent moves log alpha' opposite
    critic_grad = jax.grad(lambda la, g=gap: sac_losses.cql_lagrange_losses(
        jnp.float32(g), la, 5.0)[0])(jnp.float32(0.0))
    assert float(critic_grad) == 0.0

"""Regularisers added to the DQN loss: value = TD loss + coefficient * numpy penalty."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.agents import regularizer_terms as terms
from batch_rl.replay import sampler
from tests import helpers

STATE_SHAPE = (10, 10, 4, 1)
B, A = 6, 3


def make_agent(regs=(), double_dqn=False):
  return dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, regularizers=regs,
                      double_dqn=double_dqn)


@pytest.fixture(scope="module")
def setup():
  agent = make_agent()
  online = helpers.random_params(agent, 0, STATE_SHAPE)
  target = helpers.random_params(agent, 1, STATE_SHAPE)
  rng = np.random.default_rng(0)
  terminal = np.array([False, True, False, False, True, False])
  batch = sampler.Transition(
      state=jnp.asarray(rng.integers(0, 2, (B,) + STATE_SHAPE), jnp.uint8),
      action=jnp.asarray(rng.integers(0, A, B), jnp.int32),
      reward=jnp.asarray(rng.normal(size=B), jnp.float32),
      next_state=jnp.asarray(rng.integers(0, 2, (B,) + STATE_SHAPE), jnp.uint8),
      next_action=jnp.asarray(rng.integers(0, A, B), jnp.int32),
      terminal=jnp.asarray(terminal),
      discount=jnp.asarray(0.99 * (1 - terminal), jnp.float32),
      index=jnp.arange(B, dtype=jnp.int32))
  return agent, online, target, batch


def features(agent, params, states):
  out = agent.apply(params, states)
  return np.asarray(out.q_values, np.float64), np.asarray(out.representation, np.float64)


def loss_and_metrics(regs, setup, double_dqn=False):
  agent, online, target, batch = setup
  agent = make_agent(regs, double_dqn)
  return agent.loss(online, target, batch, jax.random.PRNGKey(0))


@pytest.mark.parametrize("method", ["svd", "gram"])
def test_lp_term(setup, method):
  agent, online, _, batch = setup
  base, _ = loss_and_metrics((), setup)
  loss, metrics = loss_and_metrics((terms.LpRegularizer(0.5, method),), setup)
  sv = np.linalg.svd(features(agent, online, batch.state)[1], compute_uv=False)
  expected = sv[0] ** 2 - sv[-1] ** 2
  np.testing.assert_allclose(metrics["Train/LpPenalty"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, base + 0.5 * expected, rtol=1e-4)
  np.testing.assert_allclose(metrics["Train/TDLoss"], base, rtol=1e-6)
  np.testing.assert_allclose(metrics["Train/Loss"], loss, rtol=1e-6)


@pytest.mark.parametrize("double_dqn", [False, True])
def test_dr3_term_uses_online_features_and_the_backup_action(setup, double_dqn):
  agent, online, target, batch = setup
  q_next_online, phi_next = features(agent, online, batch.next_state)
  q_next_target, _ = features(agent, target, batch.next_state)
  _, phi = features(agent, online, batch.state)
  backup = np.argmax(q_next_online if double_dqn else q_next_target, axis=1)
  base, _ = loss_and_metrics((), setup, double_dqn)
  dots = np.sum(phi * phi_next, axis=1)

  loss, metrics = loss_and_metrics((terms.DR3Regularizer(0.2, "paper"),), setup, double_dqn)
  np.testing.assert_allclose(metrics["Train/DR3"], dots.mean(), rtol=1e-4)
  np.testing.assert_allclose(loss, base + 0.2 * dots.mean(), rtol=1e-4)

  # Action-aware: phi(s,a).phi(s',a') = phi(s).phi(s') [a == a'], a' the backup's.
  from batch_rl import regularizers
  regularizers.DR3_VARIANTS["test_action"] = regularizers.DR3Config(features="action")
  try:
    _, metrics = loss_and_metrics((terms.DR3Regularizer(1.0, "test_action"),), setup,
                                  double_dqn)
  finally:
    del regularizers.DR3_VARIANTS["test_action"]
  match = np.asarray(batch.action) == backup
  np.testing.assert_allclose(metrics["Train/DR3"], (dots * match).mean(), rtol=1e-4,
                             atol=1e-6)


def test_cql_term(setup):
  agent, online, _, batch = setup
  q, _ = features(agent, online, batch.state)
  a = np.asarray(batch.action)
  expected = np.mean(logsumexp(q, axis=1) - q[np.arange(B), a])
  base, _ = loss_and_metrics((), setup)
  loss, metrics = loss_and_metrics((terms.CQLRegularizer(4.0),), setup)
  np.testing.assert_allclose(metrics["Train/CQLLoss"], expected, rtol=1e-5)
  np.testing.assert_allclose(loss, base + 4.0 * expected, rtol=1e-5)


def test_terms_compose(setup):
  base, _ = loss_and_metrics((), setup)
  _, lp = loss_and_metrics((terms.LpRegularizer(1.0),), setup)
  _, cql = loss_and_metrics((terms.CQLRegularizer(1.0),), setup)
  loss, metrics = loss_and_metrics((terms.LpRegularizer(1.0), terms.CQLRegularizer(1.0)),
                                   setup)
  np.testing.assert_allclose(
      loss, base + lp["Train/LpPenalty"] + cql["Train/CQLLoss"], rtol=1e-5)
  assert {"Train/LpPenalty", "Train/CQLLoss", "Train/TDLoss"} <= set(metrics)


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="LpRegularizer.coefficient"):
    terms.LpRegularizer(-0.1)
  with pytest.raises(ValueError, match="LpRegularizer.method"):
    terms.LpRegularizer(0.1, "eig")
  with pytest.raises(ValueError, match="DR3Regularizer.coefficient"):
    terms.DR3Regularizer(float("nan"))
  with pytest.raises(ValueError, match="Unknown DR3 variant 'papr'"):
    terms.DR3Regularizer(0.1, "papr")
  with pytest.raises(ValueError, match="CQLRegularizer.temperature"):
    terms.CQLRegularizer(1.0, temperature=0.0)


def test_sarsa_backup_uses_the_dataset_next_action_for_target_and_dr3(setup):
  agent, online, target, batch = setup
  q_next_target, phi_next = features(agent, target, batch.next_state)
  q, phi = features(agent, online, batch.state)
  a, a_next = np.asarray(batch.action), np.asarray(batch.next_action)
  target_value = (np.asarray(batch.reward) + np.asarray(batch.discount)
                  * q_next_target[np.arange(B), a_next])
  error = target_value - q[np.arange(B), a]
  huber = np.where(np.abs(error) <= 1, 0.5 * error**2, np.abs(error) - 0.5)
  agent_sarsa = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="sarsa")
  loss, metrics = agent_sarsa.loss(online, target, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, huber.mean(), rtol=1e-5)
  # Differs from Q-learning on this batch (some a' is not the argmax).
  assert not np.allclose(loss, loss_and_metrics((), setup)[0])
  with pytest.raises(ValueError, match="DQNAgent.backup"):
    dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="expected_sarsa")


def test_monte_carlo_backup_regresses_onto_the_return_to_go(setup):
  agent, online, target, batch = setup
  returns = np.array([3.0, -1.0, 0.5, 10.0, 0.0, 2.0], np.float32)
  batch = batch._replace(return_to_go=jnp.asarray(returns))
  q, _ = features(agent, online, batch.state)
  error = returns - q[np.arange(B), np.asarray(batch.action)]
  huber = np.where(np.abs(error) <= 1, 0.5 * error**2, np.abs(error) - 0.5)
  mc = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="monte_carlo")
  loss, _ = mc.loss(online, target, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, huber.mean(), rtol=1e-5)
  # No bootstrapping: the target network does not matter.
  loss_other_target, _ = mc.loss(online, online, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss_other_target, loss, rtol=1e-6)

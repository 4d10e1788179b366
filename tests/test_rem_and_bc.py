"""REM / ensemble DQN (batch_rl.agents.rem) and behaviour cloning (batch_rl.agents.bc).

MinAtar network (3 actions, states [10, 10, 4, 1]), 4 heads, a hand-made batch of 5
transitions (two terminal). References are numpy on the network's head outputs.
"""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from batch_rl import config
from batch_rl import networks
from batch_rl.agents import bc
from batch_rl.agents import common
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms as terms
from batch_rl.agents import rem
from batch_rl.replay import sampler
from tests import helpers

STATE_SHAPE = (10, 10, 4, 1)
A, K, B = 3, 4, 5
GAMMA = 0.99


def make_agent(kind, regs=(), **kwargs):
  if kind == "bc":
    return bc.BCAgent(A, network=networks.MinAtarDQNNetwork, regularizers=regs, **kwargs)
  return rem.MultiHeadDQNAgent(A, network=networks.MinAtarDQNNetwork, num_heads=K,
                               mixing=kind, regularizers=regs, **kwargs)


@pytest.fixture(scope="module")
def setup():
  agent = make_agent("rem")
  online = helpers.random_params(agent, 0, STATE_SHAPE)
  target = helpers.random_params(agent, 1, STATE_SHAPE)
  rng = np.random.default_rng(0)
  terminal = np.array([False, True, False, True, False])
  batch = sampler.Transition(
      state=jnp.asarray(rng.integers(0, 2, (B,) + STATE_SHAPE), jnp.uint8),
      action=jnp.asarray([0, 2, 1, 1, 2], jnp.int32),
      reward=jnp.asarray([0.5, -1.0, 2.0, 0.25, -0.3], jnp.float32),
      next_state=jnp.asarray(rng.integers(0, 2, (B,) + STATE_SHAPE), jnp.uint8),
      next_action=jnp.asarray(rng.integers(0, A, B), jnp.int32),
      terminal=jnp.asarray(terminal),
      discount=jnp.asarray(GAMMA * (1 - terminal), jnp.float32),
      index=jnp.arange(B, dtype=jnp.int32))
  bc_agent = make_agent("bc")
  bc_params = helpers.random_params(bc_agent, 2, STATE_SHAPE)
  return agent, online, target, batch, bc_params


def np_heads(agent, params, states):
  out = agent.apply(params, states)
  return (np.asarray(out.head_outputs, np.float64),
          np.asarray(out.representation, np.float64))


def np_huber(x):
  a = np.abs(x)
  return np.where(a <= 1.0, 0.5 * x**2, a - 0.5)


def np_batch(batch):
  return (np.asarray(batch.action), np.asarray(batch.reward, np.float64),
          np.asarray(batch.discount, np.float64))


def lp_penalty(phi):
  sv = np.linalg.svd(phi, compute_uv=False)
  return sv[0] ** 2 - sv[-1] ** 2


# --- pure functions --------------------------------------------------------------

def test_random_convex_combination_is_uniform_over_sum_on_the_simplex():
  alphas = []
  for seed in range(5):
    key = jax.random.PRNGKey(seed)
    alpha = np.asarray(rem.random_convex_combination(key, 7), np.float64)
    u = np.asarray(jax.random.uniform(key, (7,)), np.float64)
    np.testing.assert_allclose(alpha, u / u.sum(), rtol=1e-6)
    assert alpha.shape == (7,) and np.all(alpha > 0)
    np.testing.assert_allclose(alpha.sum(), 1.0, rtol=1e-6)
    alphas.append(alpha)
  assert not np.allclose(alphas[0], alphas[1])  # a fresh draw per key


def test_mix_heads_is_the_convex_combination_over_the_last_axis():
  rng = np.random.default_rng(3)
  head_q = rng.normal(size=(B, A, K))
  alpha = rng.uniform(size=K)
  alpha /= alpha.sum()
  got = rem.mix_heads(jnp.asarray(head_q, jnp.float32), jnp.asarray(alpha, jnp.float32))
  np.testing.assert_allclose(got, np.einsum("bak,k->ba", head_q, alpha), rtol=1e-5)


# --- losses against numpy ----------------------------------------------------------

def test_rem_loss_matches_numpy_with_the_alpha_of_the_loss_key(setup):
  agent, online, target, batch, _ = setup
  key = jax.random.PRNGKey(42)
  alpha = np.asarray(agent.alpha(key), np.float64)
  np.testing.assert_array_equal(
      agent.alpha(key), rem.random_convex_combination(common.split_loss_key(key)[2], K))
  heads, _ = np_heads(agent, online, batch.state)
  next_heads, _ = np_heads(agent, target, batch.next_state)
  action, reward, discount = np_batch(batch)
  q_mix = heads @ alpha                     # [B, A]
  next_mix = next_heads @ alpha             # same alpha for the target network
  y = reward + discount * next_mix.max(axis=1)
  error = y - q_mix[np.arange(B), action]
  loss, metrics = agent.loss(online, target, batch, key)
  np.testing.assert_allclose(loss, np_huber(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/TDError"], np.abs(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/Loss"], loss, rtol=1e-7)
  # Terminal transitions bootstrap nothing: the target there is the reward.
  assert discount[1] == 0 and discount[3] == 0
  # The mixture is not the head mean: another key gives another loss.
  other, _ = agent.loss(online, target, batch, jax.random.PRNGKey(7))
  assert abs(float(other) - float(loss)) > 1e-6


def test_ensemble_loss_regresses_each_head_on_its_own_target(setup):
  agent, online, target, batch, _ = setup
  ens = make_agent("ensemble")
  heads, _ = np_heads(ens, online, batch.state)
  next_heads, _ = np_heads(ens, target, batch.next_state)
  action, reward, discount = np_batch(batch)
  y = reward[:, None] + discount[:, None] * next_heads.max(axis=1)   # [B, K]
  error = y - heads[np.arange(B), action, :]
  loss, metrics = ens.loss(online, target, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, np_huber(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/QData"], heads[np.arange(B), action].mean(),
                             rtol=1e-5)
  # Deterministic: the key is not used.
  again, _ = ens.loss(online, target, batch, jax.random.PRNGKey(9))
  np.testing.assert_allclose(again, loss, rtol=1e-7)
  # Not the loss of the head mean with one max (what the per-head targets rule out).
  mean_err = (reward + discount * next_heads.mean(-1).max(1)
              - heads.mean(-1)[np.arange(B), action])
  assert abs(float(loss) - np_huber(mean_err).mean()) > 1e-6


def test_bc_cross_entropy_and_accuracy(setup):
  _, _, _, batch, params = setup
  agent = make_agent("bc")
  logits = np.asarray(agent.apply(params, batch.state).q_values, np.float64)
  action = np.asarray(batch.action)
  nll = logsumexp(logits, axis=1) - logits[np.arange(B), action]
  accuracy = np.mean(np.argmax(logits, axis=1) == action)
  loss, metrics = agent.loss(params, None, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(loss, nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/Loss"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/Accuracy"], accuracy, rtol=1e-7)
  # Accuracy 1 when the dataset actions are the argmax.
  greedy = batch._replace(action=jnp.asarray(np.argmax(logits, axis=1), jnp.int32))
  np.testing.assert_allclose(agent.loss(params, None, greedy, jax.random.PRNGKey(0))[1]["Train/Accuracy"], 1.0)


# --- acting ------------------------------------------------------------------------

def test_act_is_argmax_of_the_head_mean(setup):
  agent, online, _, batch, bc_params = setup
  states = jnp.concatenate([batch.state, batch.next_state])
  heads, _ = np_heads(agent, online, states)
  for mixing in ("rem", "ensemble"):
    got = make_agent(mixing).act(online, states, jax.random.PRNGKey(0), 0.0)
    np.testing.assert_array_equal(got, np.argmax(heads.mean(-1), axis=1))
  bc_agent = make_agent("bc")
  logits = np.asarray(bc_agent.apply(bc_params, states).q_values)
  np.testing.assert_array_equal(bc_agent.act(bc_params, states, jax.random.PRNGKey(0), 0.0),
                                np.argmax(logits, axis=1))


# --- composition with regularisers ---------------------------------------------------

@pytest.mark.parametrize("kind", ["rem", "ensemble", "bc"])
def test_lp_regularizer_adds_to_the_loss(setup, kind):
  _, online, target, batch, bc_params = setup
  params = bc_params if kind == "bc" else online
  key = jax.random.PRNGKey(5)
  base, _ = make_agent(kind).loss(params, target, batch, key)
  agent = make_agent(kind, (terms.LpRegularizer(0.5),))
  loss, metrics = agent.loss(params, target, batch, key)
  phi = np.asarray(agent.apply(params, batch.state).representation, np.float64)
  expected = lp_penalty(phi)
  np.testing.assert_allclose(metrics["Train/LpPenalty"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, float(base) + 0.5 * expected, rtol=1e-4)


def test_rem_dr3_uses_the_backup_action_of_the_mixture(setup):
  _, online, target, batch, _ = setup
  key = jax.random.PRNGKey(11)
  agent = make_agent("rem", (terms.DR3Regularizer(0.2, "paper"),))
  base, _ = make_agent("rem").loss(online, target, batch, key)
  loss, metrics = agent.loss(online, target, batch, key)
  _, phi = np_heads(agent, online, batch.state)
  _, phi_next = np_heads(agent, online, batch.next_state)
  dots = np.sum(phi * phi_next, axis=1).mean()   # 'paper' variant: phi(s) . phi(s')
  np.testing.assert_allclose(metrics["Train/DR3"], dots, rtol=1e-4)
  np.testing.assert_allclose(loss, float(base) + 0.2 * dots, rtol=1e-4)


# --- training ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rem", "bc"])
def test_one_learner_step_runs(kind):
  agent = make_agent(kind, batch_size=8)
  rng = np.random.default_rng(1)
  capacity = 12
  terminal = np.zeros((1, capacity), np.uint8)
  terminal[0, [3, 8]] = 1
  data = sampler.ReplayArrays(
      observation=jnp.asarray(rng.integers(0, 2, (1, capacity, 10, 10, 4)), jnp.uint8),
      action=jnp.asarray(rng.integers(0, A, (1, capacity)), jnp.int32),
      reward=jnp.asarray(rng.uniform(-1, 1, (1, capacity)), jnp.float32),
      terminal=jnp.asarray(terminal),
      valid=jnp.arange(capacity - 1, dtype=jnp.int32))

  def sample(key, d):
    return sampler.sample_transitions(key, d, agent.batch_size, stack_size=1,
                                      update_horizon=agent.update_horizon, gamma=agent.gamma)

  params = helpers.random_params(agent, 3, STATE_SHAPE)
  state = learner.init_train_state(params, agent.optimizer, jax.random.PRNGKey(0))
  step = jax.jit(learner.make_train_step(agent.loss, agent.optimizer, sample,
                                         agent.target_update_period))
  new_state, _, metrics = step(state, data)
  assert np.isfinite(float(metrics["Train/Loss"]))
  assert int(new_state.step) == 1
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new_state.params, params)
  assert max(jax.tree.leaves(moved)) > 0


# --- validation and gin ----------------------------------------------------------------

@pytest.mark.parametrize("num_heads", [0, -2])
def test_num_heads_below_one_raises(num_heads):
  with pytest.raises(ValueError, match=r"MultiHeadDQNAgent\.num_heads"):
    rem.MultiHeadDQNAgent(A, network=networks.MinAtarDQNNetwork, num_heads=num_heads)
  with pytest.raises(ValueError, match=r"MultiHeadDQNAgent\.mixing"):
    rem.MultiHeadDQNAgent(A, network=networks.MinAtarDQNNetwork, num_heads=2, mixing="max")


@pytest.mark.parametrize("path,agent_name,checks", [
    ("gin_configs/offline/rem.gin", "MultiHeadDQNAgent",
     {"MultiHeadDQNAgent.num_heads": 200, "MultiHeadDQNAgent.mixing": "rem",
      "MultiHeadDQNAgent.target_update_period": 2000,
      "create_optimizer.learning_rate": 5e-5, "create_optimizer.eps": 3.125e-4}),
    ("gin_configs/offline/multi_head_dqn.gin", "MultiHeadDQNAgent",
     {"MultiHeadDQNAgent.num_heads": 200, "MultiHeadDQNAgent.mixing": "ensemble"}),
    ("gin_configs/offline/bc.gin", "BCAgent", {"BCAgent.batch_size": 32}),
])
def test_gin_files_parse_and_name_the_agent(path, agent_name, checks):
  import os
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    config.parse_gin([os.path.join(repo, path)], ["load_fixed_replay.replay_dir='x'"])
    ref = gin.query_parameter("FixedReplayRunner.agent_fn")
    assert agent_name in str(ref)
    for name, value in checks.items():
      assert gin.query_parameter(name) == value
    with gin.unlock_config():
      agent = (rem.MultiHeadDQNAgent if agent_name == "MultiHeadDQNAgent" else bc.BCAgent)(
          num_actions=6)
    if agent_name == "MultiHeadDQNAgent":
      assert agent.num_heads == 200 and agent.network.outputs_per_action == 200
      assert agent.mixing == checks["MultiHeadDQNAgent.mixing"]
    assert agent.target_update_period == 2000 and agent.batch_size == 32
  finally:
    gin.clear_config()

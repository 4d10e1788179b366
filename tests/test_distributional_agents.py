"""C51Agent and QRDQNAgent (loss, act, regularisers, a train step, gin configs).

The MinAtar network only produces logits / quantiles / features (through the
network itself, not the agent code under test); softmax, expected values, greedy
actions, the categorical projection (an explicit per-atom loop), the cross-entropy
and the quantile Huber loss (a double loop) are redone in numpy (float64).
"""
import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import config
from batch_rl import networks
from batch_rl.agents import c51
from batch_rl.agents import learner
from batch_rl.agents import qr_dqn
from batch_rl.agents import regularizer_terms
from batch_rl.replay import sampler
from tests import helpers

NUM_ACTIONS = 3
STATE_SHAPE = (10, 10, 4, 1)  # MinAtar frame [10, 10, 4], stack size 1
GAMMA = 0.99
NUM_QUANTILES = 20  # small, so the numpy double loop stays fast


def make_c51(**kwargs):
  return c51.C51Agent(NUM_ACTIONS, network=networks.MinAtarDQNNetwork,
                      optimizer_fn=learner.create_optimizer, batch_size=5, **kwargs)


def make_qr(**kwargs):
  kwargs.setdefault("num_quantiles", NUM_QUANTILES)
  return qr_dqn.QRDQNAgent(NUM_ACTIONS, network=networks.MinAtarDQNNetwork,
                           optimizer_fn=learner.create_optimizer, batch_size=5, **kwargs)


def make_batch(seed=0):
  """5 hand-made transitions; #2 and #4 terminal, #2's reward beyond vmax = 10."""
  rng = np.random.default_rng(seed)
  terminal = np.array([False, False, True, False, True])
  return sampler.Transition(
      state=jnp.asarray(rng.integers(0, 2, (5,) + STATE_SHAPE), jnp.uint8),
      action=jnp.asarray([0, 2, 1, 1, 0], jnp.int32),
      reward=jnp.asarray([0.5, -1.0, 12.0, 0.0, -0.3], jnp.float32),
      next_state=jnp.asarray(rng.integers(0, 2, (5,) + STATE_SHAPE), jnp.uint8),
      next_action=jnp.asarray([1, 0, 2, 2, 1], jnp.int32),
      terminal=jnp.asarray(terminal),
      discount=jnp.asarray(GAMMA * (1.0 - terminal), jnp.float32),
      index=jnp.arange(5, dtype=jnp.int32))


def params_pair(agent):
  return (helpers.random_params(agent, 0, STATE_SHAPE),
          helpers.random_params(agent, 1, STATE_SHAPE))


def raw(agent, params, states):
  """The network's own outputs as float64 numpy (head [B, A, K], phi [B, D])."""
  out = agent.network.apply(params, states)
  return (np.asarray(out.head_outputs, np.float64),
          np.asarray(out.representation, np.float64))


# --------------------------------------------------------------------------- references


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def np_project(reward, discount, probs, z):
  """Bellemare et al. (2017) Algorithm 1, one source atom at a time."""
  vmin, vmax = z[0], z[-1]
  dz = z[1] - z[0]
  out = np.zeros(len(z))
  for j in range(len(z)):
    tz = min(max(reward + discount * z[j], vmin), vmax)
    pos = (tz - vmin) / dz
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    if lo == hi:
      out[lo] += probs[j]
    else:
      out[lo] += probs[j] * (hi - pos)
      out[hi] += probs[j] * (pos - lo)
  return out


def np_c51(agent, params, target_params, batch, double=False):
  """(loss, mean |E target - Q(s,a)|, mean Q(s,a), next actions) of C51 in numpy."""
  z = np.linspace(-10.0, 10.0, 51)
  logits, _ = raw(agent, params, batch.state)
  next_logits, _ = raw(agent, target_params, batch.next_state)
  online_next, _ = raw(agent, params, batch.next_state)
  q = (np_softmax(logits) * z).sum(-1)
  greedy_src = online_next if double else next_logits
  next_action = np.argmax((np_softmax(greedy_src) * z).sum(-1), axis=1)
  losses, errors, q_data = [], [], []
  for b in range(5):
    a = int(batch.action[b])
    p_next = np_softmax(next_logits[b, next_action[b]])
    target = np_project(float(batch.reward[b]), float(batch.discount[b]), p_next, z)
    log_p = logits[b, a] - np.log(np.exp(logits[b, a]).sum())
    losses.append(-(target * log_p).sum())
    errors.append(abs((target * z).sum() - q[b, a]))
    q_data.append(q[b, a])
  return np.mean(losses), np.mean(errors), np.mean(q_data), next_action


def np_quantile_huber(theta, target, kappa):
  n = len(theta)
  total = 0.0
  for i in range(n):
    tau = (2 * i + 1) / (2 * n)
    row = 0.0
    for j in range(len(target)):
      u = target[j] - theta[i]
      huber = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
      row += abs(tau - (1.0 if u < 0 else 0.0)) * huber / kappa
    total += row / len(target)
  return total


def np_qr(agent, params, target_params, batch, kappa):
  theta, _ = raw(agent, params, batch.state)
  next_theta, _ = raw(agent, target_params, batch.next_state)
  q = theta.mean(-1)
  next_action = np.argmax(next_theta.mean(-1), axis=1)
  losses, errors = [], []
  for b in range(5):
    a = int(batch.action[b])
    target = (float(batch.reward[b])
              + float(batch.discount[b]) * next_theta[b, next_action[b]])
    losses.append(np_quantile_huber(theta[b, a], target, kappa))
    errors.append(abs(target.mean() - q[b, a]))
  q_data = q[np.arange(5), np.asarray(batch.action)]
  return np.mean(losses), np.mean(errors), np.mean(q_data)


def np_lp(phi):
  s = np.linalg.svd(phi, compute_uv=False)
  return s.max() ** 2 - s.min() ** 2


# --------------------------------------------------------------------------- C51


@pytest.mark.parametrize("double", [False, True])
def test_c51_loss_matches_numpy(double):
  agent = make_c51(double_dqn=double)
  params, target_params = params_pair(agent)
  batch = make_batch()
  loss, metrics = agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  ref_loss, ref_err, ref_q, _ = np_c51(agent, params, target_params, batch, double)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["Train/Loss"]), ref_loss, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["Train/TDError"]), ref_err, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics["Train/QData"]), ref_q, rtol=1e-4, atol=1e-5)
  assert "Train/TDLoss" not in metrics  # only with regularisers, as DQNAgent


def test_c51_double_changes_next_action_on_this_batch():
  """Guards the double test: online and target greedy actions differ somewhere."""
  agent = make_c51()
  params, target_params = params_pair(agent)
  batch = make_batch()
  *_, single = np_c51(agent, params, target_params, batch, double=False)
  *_, double = np_c51(agent, params, target_params, batch, double=True)
  assert np.any(single != double)


def test_c51_terminal_target_is_projected_reward():
  """discount 0: the whole target mass sits at clip(r) (12 -> vmax), so the loss of
  that row is -log softmax(logits)[last atom]."""
  agent = make_c51()
  params, target_params = params_pair(agent)
  batch = make_batch()
  row = 2  # terminal, reward 12
  one = jax.tree.map(lambda x: x[row:row + 1], batch)
  loss, _ = agent.loss(params, target_params, one, jax.random.PRNGKey(0))
  logits, _ = raw(agent, params, batch.state)
  a = int(batch.action[row])
  ref = -(logits[row, a, -1] - np.log(np.exp(logits[row, a]).sum()))
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_c51_apply_and_act_use_expected_q():
  agent = make_c51()
  params, _ = params_pair(agent)
  batch = make_batch()
  states = jnp.concatenate([batch.state, batch.next_state])
  logits, _ = raw(agent, params, states)
  q_ref = (np_softmax(logits) * np.linspace(-10, 10, 51)).sum(-1)
  q = np.asarray(agent.apply(params, states).q_values)
  np.testing.assert_allclose(q, q_ref, rtol=1e-4, atol=1e-5)
  # The network's own q_values (mean logit) would be a different functional.
  assert not np.allclose(logits.mean(-1), q_ref, atol=1e-3)
  actions = np.asarray(agent.act(params, states, jax.random.PRNGKey(3), 0.0))
  np.testing.assert_array_equal(actions, np.argmax(q_ref, axis=1))
  assert actions.dtype == np.int32


# --------------------------------------------------------------------------- QR-DQN


@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_qr_loss_matches_numpy(kappa):
  agent = make_qr(kappa=kappa)
  params, target_params = params_pair(agent)
  batch = make_batch()
  loss, metrics = agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  ref_loss, ref_err, ref_q = np_qr(agent, params, target_params, batch, kappa)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-4)
  np.testing.assert_allclose(float(metrics["Train/TDError"]), ref_err, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(metrics["Train/QData"]), ref_q, rtol=1e-4, atol=1e-5)


def test_qr_act_is_argmax_of_mean_quantile():
  agent = make_qr()
  params, _ = params_pair(agent)
  batch = make_batch()
  states = jnp.concatenate([batch.state, batch.next_state])
  theta, _ = raw(agent, params, states)
  actions = np.asarray(agent.act(params, states, jax.random.PRNGKey(3), 0.0))
  np.testing.assert_array_equal(actions, np.argmax(theta.mean(-1), axis=1))


def test_qr_rejects_bad_kappa():
  with pytest.raises(ValueError, match="kappa"):
    make_qr(kappa=0.0)


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize("make", [make_c51, make_qr], ids=["c51", "qr"])
def test_lp_regularizer_composes(make):
  coef = 0.01
  base_agent = make()
  agent = make(regularizers=[regularizer_terms.LpRegularizer(coef)])
  params, target_params = params_pair(agent)
  batch = make_batch()
  base, _ = base_agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  loss, metrics = agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  _, phi = raw(agent, params, batch.state)
  lp = np_lp(phi)
  assert lp > 0
  np.testing.assert_allclose(float(metrics["Train/LpPenalty"]), lp, rtol=1e-3)
  np.testing.assert_allclose(float(metrics["Train/TDLoss"]), float(base), rtol=1e-6)
  np.testing.assert_allclose(float(loss), float(base) + coef * lp, rtol=1e-4)


def test_cql_regularizer_sees_expected_q():
  """CQL on C51 reads the expected Q-values: base + c * mean(logsumexp Q - Q[a])."""
  coef = 0.5
  agent = make_c51(regularizers=[regularizer_terms.CQLRegularizer(coef)])
  params, target_params = params_pair(agent)
  batch = make_batch()
  base, _ = make_c51().loss(params, target_params, batch, jax.random.PRNGKey(0))
  loss, _ = agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  logits, _ = raw(agent, params, batch.state)
  q = (np_softmax(logits) * np.linspace(-10, 10, 51)).sum(-1)
  gap = np.log(np.exp(q).sum(1)) - q[np.arange(5), np.asarray(batch.action)]
  np.testing.assert_allclose(float(loss), float(base) + coef * gap.mean(), rtol=1e-4)


@pytest.mark.parametrize("make", [make_c51, make_qr], ids=["c51", "qr"])
def test_dr3_regularizer_runs(make):
  agent = make(regularizers=[regularizer_terms.DR3Regularizer(0.1)])
  params, target_params = params_pair(agent)
  loss, metrics = agent.loss(params, target_params, make_batch(), jax.random.PRNGKey(0))
  assert np.isfinite(float(loss)) and np.isfinite(float(metrics["Train/DR3"]))
  np.testing.assert_allclose(float(loss), float(metrics["Train/TDLoss"])
                             + 0.1 * float(metrics["Train/DR3"]), rtol=1e-5)


def make_data(seed=0, capacity=16):
  rng = np.random.default_rng(seed)
  terminal = np.zeros(capacity, np.uint8)
  terminal[[4, 11]] = 1
  return sampler.ReplayArrays(
      observation=jnp.asarray(rng.integers(0, 2, (1, capacity, 10, 10, 4)), jnp.uint8),
      action=jnp.asarray(rng.integers(0, NUM_ACTIONS, (1, capacity)), jnp.int32),
      reward=jnp.asarray(rng.uniform(-1.0, 1.0, (1, capacity)), jnp.float32),
      terminal=jnp.asarray(terminal[None]),
      valid=jnp.arange(capacity - 1, dtype=jnp.int32))


@pytest.mark.parametrize("make", [make_c51, make_qr], ids=["c51", "qr"])
def test_one_train_step(make):
  agent = make()
  state = agent.init(jax.random.PRNGKey(0), STATE_SHAPE)
  sample_fn = functools.partial(sampler.sample_transitions, batch_size=agent.batch_size,
                                stack_size=1, update_horizon=agent.update_horizon,
                                gamma=agent.gamma)
  step = jax.jit(learner.make_train_step(agent.loss, agent.optimizer, sample_fn,
                                         agent.target_update_period))
  new_state, _, metrics = step(state, make_data())
  assert np.isfinite(float(metrics["Train/Loss"]))
  assert int(new_state.step) == 1
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), state.params,
      new_state.params))
  assert all(changed)
  # Target untouched before target_update_period steps.
  for a, b in zip(jax.tree.leaves(state.target_params),
                  jax.tree.leaves(new_state.target_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------- gin


@pytest.mark.parametrize("path,agent_cls,name,lr,heads", [
    ("gin_configs/offline/c51.gin", c51.C51Agent, "C51Agent", 2.5e-4, 51),
    ("gin_configs/offline/qr_dqn.gin", qr_dqn.QRDQNAgent, "QRDQNAgent", 5e-5, 200),
])
def test_gin_config(path, agent_cls, name, lr, heads):
  try:
    config.parse_gin([path], ["load_fixed_replay.replay_dir='x'"])
    ref = gin.query_parameter("FixedReplayRunner.agent_fn")
    assert name in str(ref)
    assert gin.query_parameter("create_optimizer.learning_rate") == pytest.approx(lr)
    assert gin.query_parameter("create_optimizer.eps") == pytest.approx(3.125e-4)
    agent = agent_cls(num_actions=NUM_ACTIONS)
    assert isinstance(agent.network, networks.NatureDQNNetwork)
    assert agent.network.outputs_per_action == heads
    assert (agent.gamma, agent.update_horizon, agent.batch_size,
            agent.target_update_period) == (0.99, 1, 32, 2000)
  finally:
    gin.clear_config()

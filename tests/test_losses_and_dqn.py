"""batch_rl.losses and DQNAgent (loss, act) against numpy references and hand arithmetic.

The networks are only used to produce Q-values (through `agent.apply`, the network, not
the code under test); TD targets, max / argmax, Huber and the means are redone in numpy.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import losses
from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.replay import sampler
from tests import helpers

NUM_ACTIONS = 3
STATE_SHAPE = (10, 10, 4, 1)  # MinAtar frame [10, 10, 4], stack size 1
GAMMA = 0.99


# --------------------------------------------------------------------------- references


def np_huber(error, delta=1.0):
  error = np.asarray(error, np.float64)
  a = np.abs(error)
  return np.where(a <= delta, 0.5 * error**2, delta * (a - 0.5 * delta))


def np_mse(error):
  return 0.5 * np.asarray(error, np.float64) ** 2


# --------------------------------------------------------------------------- losses.py


@pytest.mark.parametrize("error,delta,expected", [
    (0.0, 1.0, 0.0),
    (0.5, 1.0, 0.125),
    (-0.5, 1.0, 0.125),
    (1.0, 1.0, 0.5),  # the kink: both branches give 0.5
    (3.0, 1.0, 2.5),  # 1 * (3 - 0.5)
    (-3.0, 1.0, 2.5),
    (1.5, 2.0, 1.125),  # quadratic for |e| <= delta = 2
    (3.0, 2.0, 4.0),  # 2 * (3 - 1)
    (-10.0, 0.5, 4.875),  # 0.5 * (10 - 0.25)
])
def test_huber_loss_hand_values(error, delta, expected):
  got = losses.huber_loss(jnp.asarray([error], jnp.float32), delta)
  np.testing.assert_allclose(np.asarray(got), [expected], rtol=1e-6, atol=1e-7)


def test_huber_and_mse_match_numpy_reference():
  rng = np.random.default_rng(0)
  error = (rng.standard_normal((7, 11)) * 3.0).astype(np.float32)
  for delta in (0.3, 1.0, 2.5):
    got = np.asarray(losses.huber_loss(jnp.asarray(error), delta))
    assert got.shape == error.shape
    np.testing.assert_allclose(got, np_huber(error, delta), rtol=1e-5, atol=1e-6)
  got = np.asarray(losses.mse_loss(jnp.asarray(error)))
  assert got.shape == error.shape
  np.testing.assert_allclose(got, np_mse(error), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(losses.mse_loss(jnp.asarray([3.0, -2.0]))),
                             [4.5, 2.0])


def test_huber_gradient_is_clipped_error():
  """d/de huber(e) = clip(e, -delta, delta) (what makes Huber robust)."""
  error = jnp.asarray([-5.0, -1.2, -0.3, 0.0, 0.4, 0.9, 2.0, 7.0], jnp.float32)
  for delta in (0.5, 1.0, 3.0):
    grad = jax.grad(lambda e: jnp.sum(losses.huber_loss(e, delta)))(error)
    np.testing.assert_allclose(np.asarray(grad), np.clip(np.asarray(error), -delta, delta),
                               rtol=1e-6, atol=1e-7)


def test_huber_matches_tensorflow():
  """TF v1 huber_loss with reduction NONE is the loss Dopamine's TF DQN uses."""
  tf = pytest.importorskip("tensorflow")
  rng = np.random.default_rng(1)
  error = (rng.standard_normal(200) * 4.0).astype(np.float32)
  for delta in (1.0, 2.0):
    theirs = tf.compat.v1.losses.huber_loss(
        labels=np.zeros_like(error), predictions=error, delta=delta,
        reduction=tf.compat.v1.losses.Reduction.NONE).numpy()
    ours = np.asarray(losses.huber_loss(jnp.asarray(error), delta))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # Keras' Huber averages over the last axis, so give it one element per row.
    keras = tf.keras.losses.Huber(delta=delta, reduction="none")(
        np.zeros((200, 1), np.float32), error[:, None]).numpy()
    np.testing.assert_allclose(ours, keras, rtol=1e-5, atol=1e-6)


def test_td_target_values_and_stop_gradient():
  reward = jnp.asarray([1.0, -0.5, 2.0])
  discount = jnp.asarray([0.99, 0.0, 0.5])
  next_value = jnp.asarray([2.0, 100.0, -4.0])
  np.testing.assert_allclose(np.asarray(losses.td_target(reward, discount, next_value)),
                             [1.0 + 1.98, -0.5, 0.0], rtol=1e-6)
  grads = jax.grad(lambda r, d, v: jnp.sum(losses.td_target(r, d, v)), argnums=(0, 1, 2))(
      reward, discount, next_value)
  for g in grads:
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_select_picks_action_column():
  q = jnp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, -1.0, 0.0]])
  action = jnp.asarray([2, 0, 1, 1], jnp.int32)
  np.testing.assert_array_equal(np.asarray(losses.select(q, action)), [3.0, 4.0, 8.0, -1.0])
  # Any integer dtype of action works.
  np.testing.assert_array_equal(np.asarray(losses.select(q, action.astype(jnp.uint8))),
                                [3.0, 4.0, 8.0, -1.0])


# --------------------------------------------------------------------------- DQN loss, hand-worked


class TableQ(nn.Module):
  """Q(s, .) = one_hot(s) @ W: a tabular Q-function whose values the test sets by hand."""

  num_actions: int
  num_states: int = 2

  @nn.compact
  def __call__(self, x):
    w = self.param("w", nn.initializers.zeros, (self.num_states, self.num_actions))
    phi = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    return networks.QNetworkOutput(q_values=phi @ w, representation=phi)


def _table_setup():
  """Two states, two actions, two transitions; the expected values are worked by hand.

  online W = [[1, 2], [0, 3]], target W = [[0.5, 0], [4, -1]] (rows: states).
  t0: s=0, a=1, r=1,   s'=1, discount 0.9   Q(s,a) = 2
      Q-learning: 1 + 0.9 * max(4, -1) = 4.6, error  2.6, huber 2.1, mse 3.38
      double DQN: argmax online(s'=1) = 1, target Q(1, 1) = -1 -> 1 - 0.9 = 0.1,
                  error -1.9, huber 1.4
  t1: s=1, a=0, r=0.5, s'=0, discount 0 (terminal)  Q(s,a) = 0
      target 0.5, error 0.5, huber 0.125, mse 0.125
  """
  params = {"params": {"w": jnp.asarray([[1.0, 2.0], [0.0, 3.0]])}}
  target_params = {"params": {"w": jnp.asarray([[0.5, 0.0], [4.0, -1.0]])}}
  eye = np.eye(2, dtype=np.uint8)
  batch = sampler.Transition(
      state=jnp.asarray(eye[[0, 1]]), action=jnp.asarray([1, 0], jnp.int32),
      reward=jnp.asarray([1.0, 0.5], jnp.float32), next_state=jnp.asarray(eye[[1, 0]]),
      next_action=jnp.asarray([0, 0], jnp.int32), terminal=jnp.asarray([False, True]),
      discount=jnp.asarray([0.9, 0.0], jnp.float32), index=jnp.asarray([0, 1], jnp.int32))
  return params, target_params, batch


@pytest.mark.parametrize("double_dqn,loss_type,loss,td_error", [
    (False, "huber", (2.1 + 0.125) / 2, (2.6 + 0.5) / 2),
    (True, "huber", (1.4 + 0.125) / 2, (1.9 + 0.5) / 2),
    (False, "mse", (3.38 + 0.125) / 2, (2.6 + 0.5) / 2),
    (True, "mse", (0.5 * 1.9**2 + 0.125) / 2, (1.9 + 0.5) / 2),
])
def test_dqn_loss_hand_worked(double_dqn, loss_type, loss, td_error):
  agent = dqn.DQNAgent(2, network=TableQ, optimizer_fn=learner.create_optimizer,
                       double_dqn=double_dqn, loss_type=loss_type)
  params, target_params, batch = _table_setup()
  value, metrics = agent.loss(params, target_params, batch, jax.random.PRNGKey(0))
  np.testing.assert_allclose(float(value), loss, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["Train/Loss"]), loss, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["Train/TDError"]), td_error, rtol=1e-6)
  np.testing.assert_allclose(float(metrics["Train/QData"]), 1.0, rtol=1e-6)
  assert set(metrics) == {"Train/Loss", "Train/TDError", "Train/QData"}


@pytest.mark.parametrize("double_dqn", [False, True])
def test_dqn_loss_gradient_hand_worked(double_dqn):
  """Only Q(s, a_data) gets gradient, -huber'(error) / B; none flows to Q(s', .).

  t0 error is 2.6 (Q-learning) or -1.9 (double): huber' = +-1 -> dL/dW[0,1] = -+0.5.
  t1 error 0.5 -> dL/dW[1,0] = -0.25. W[1,1] (online Q at s' = 1, which picks the double
  DQN action) and W[0,0] get nothing; the target parameters get nothing.
  """
  agent = dqn.DQNAgent(2, network=TableQ, optimizer_fn=learner.create_optimizer,
                       double_dqn=double_dqn)
  params, target_params, batch = _table_setup()
  g_online, g_target = jax.jit(jax.grad(lambda p, t: agent.loss(p, t, batch, jax.random.PRNGKey(0))[0],
                                        argnums=(0, 1)))(params, target_params)
  sign = 1.0 if double_dqn else -1.0
  np.testing.assert_allclose(np.asarray(g_online["params"]["w"]),
                             [[0.0, sign * 0.5], [-0.25, 0.0]], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(g_target["params"]["w"]), 0.0)


def test_dqn_rejects_unknown_loss_type():
  with pytest.raises(ValueError, match="loss_type"):
    dqn.DQNAgent(2, network=TableQ, optimizer_fn=learner.create_optimizer, loss_type="l1")


# --------------------------------------------------------------------------- DQN loss, MinAtar net


def _minatar_agent(**kwargs):
  return dqn.DQNAgent(NUM_ACTIONS, network=networks.MinAtarDQNNetwork,
                      optimizer_fn=learner.create_optimizer, gamma=GAMMA, **kwargs)


def random_params(agent, seed):
  return helpers.random_params(agent, seed, STATE_SHAPE)


@functools.lru_cache(maxsize=None)
def _jitted_loss(double_dqn, loss_type, delta=1.0):
  agent = _minatar_agent(double_dqn=double_dqn, loss_type=loss_type, huber_delta=delta)
  return jax.jit(agent.loss)


@functools.lru_cache(maxsize=None)
def _minatar_fixture():
  """Online and target params from different keys, a hand-built B=5 Transition batch and
  the Q-values of both nets (from the network itself) at s and s'."""
  agent = _minatar_agent()
  online = random_params(agent, 0)
  target = random_params(agent, 1)
  rng = np.random.default_rng(2)
  state = rng.integers(0, 2, (5,) + STATE_SHAPE).astype(np.uint8)
  next_state = rng.integers(0, 2, (5,) + STATE_SHAPE).astype(np.uint8)
  terminal = np.array([False, True, False, False, True])
  batch = sampler.Transition(
      state=jnp.asarray(state), action=jnp.asarray([0, 2, 1, 2, 1], jnp.int32),
      # Rewards large enough that some |errors| exceed delta = 1 (huber != mse).
      reward=jnp.asarray([0.0, 1.0, -2.0, 3.0, 0.3], jnp.float32),
      next_state=jnp.asarray(next_state), next_action=jnp.asarray([1, 0, 2, 0, 1], jnp.int32),
      terminal=jnp.asarray(terminal),
      discount=jnp.asarray(GAMMA * (1.0 - terminal), jnp.float32),
      index=jnp.arange(5, dtype=jnp.int32))
  apply = jax.jit(agent.apply)
  q = {name: np.asarray(apply(p, s).q_values, np.float64)
       for name, p, s in (("online_s", online, state), ("online_next", online, next_state),
                          ("target_next", target, next_state))}
  return online, target, batch, q


def _np_dqn_loss(batch, q, double_dqn, loss_type, delta=1.0):
  action = np.asarray(batch.action)
  q_data = q["online_s"][np.arange(5), action]
  if double_dqn:
    next_value = q["target_next"][np.arange(5), np.argmax(q["online_next"], axis=1)]
  else:
    next_value = np.max(q["target_next"], axis=1)
  target = np.asarray(batch.reward, np.float64) + np.asarray(batch.discount,
                                                             np.float64) * next_value
  error = target - q_data
  per = np_huber(error, delta) if loss_type == "huber" else np_mse(error)
  return per.mean(), np.abs(error).mean(), q_data.mean(), error


@pytest.mark.parametrize("double_dqn", [False, True])
@pytest.mark.parametrize("loss_type,delta", [("huber", 1.0), ("huber", 0.5), ("mse", 1.0)])
def test_dqn_loss_matches_numpy(double_dqn, loss_type, delta):
  online, target, batch, q = _minatar_fixture()
  loss, metrics = _jitted_loss(double_dqn, loss_type, delta)(online, target, batch,
                                                              jax.random.PRNGKey(0))
  exp_loss, exp_td, exp_q, _ = _np_dqn_loss(batch, q, double_dqn, loss_type, delta)
  np.testing.assert_allclose(float(loss), exp_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["Train/Loss"]), exp_loss, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["Train/TDError"]), exp_td, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["Train/QData"]), exp_q, rtol=1e-5, atol=1e-6)


def test_fixture_discriminates_variants():
  """The batch is built so that each switch matters: otherwise the tests above prove little."""
  online, target, batch, q = _minatar_fixture()
  nonterminal = ~np.asarray(batch.terminal)
  # Online and target nets disagree on the best next action for some non-terminal sample,
  # so double DQN bootstraps from a different value than Q-learning there.
  assert np.any(np.argmax(q["online_next"], 1)[nonterminal]
                != np.argmax(q["target_next"], 1)[nonterminal])
  _, _, _, error = _np_dqn_loss(batch, q, False, "huber")
  assert np.any(np.abs(error) > 1.0) and np.any(np.abs(error) < 1.0)

  losses_by_variant = {}
  for double_dqn in (False, True):
    for loss_type in ("huber", "mse"):
      loss_fn = _jitted_loss(double_dqn, loss_type)
      losses_by_variant[double_dqn, loss_type] = float(loss_fn(online, target, batch, jax.random.PRNGKey(0))[0])
  assert losses_by_variant[False, "huber"] != pytest.approx(losses_by_variant[True, "huber"])
  assert losses_by_variant[False, "mse"] != pytest.approx(losses_by_variant[True, "mse"])
  assert losses_by_variant[False, "huber"] < losses_by_variant[False, "mse"]


def test_terminal_transitions_ignore_next_state():
  """discount 0: changing s' of the terminal samples leaves the loss unchanged; changing s'
  of the non-terminal ones changes it."""
  online, target, batch, _ = _minatar_fixture()
  agent = _minatar_agent()
  loss_fn = jax.jit(lambda b: agent.loss(online, target, b, jax.random.PRNGKey(0))[0])
  base = float(loss_fn(batch))
  flipped_terminal = np.asarray(batch.next_state).copy()
  flipped_terminal[[1, 4]] = 1 - flipped_terminal[[1, 4]]
  assert float(loss_fn(batch._replace(next_state=jnp.asarray(flipped_terminal)))) == base
  flipped_live = np.asarray(batch.next_state).copy()
  flipped_live[[0, 2, 3]] = 1 - flipped_live[[0, 2, 3]]
  assert float(loss_fn(batch._replace(next_state=jnp.asarray(flipped_live)))) != base


@pytest.mark.parametrize("double_dqn", [False, True])
def test_no_gradient_through_target(double_dqn):
  online, target, batch, q = _minatar_fixture()
  agent = _minatar_agent(double_dqn=double_dqn)
  # Reference: gradient of mean huber(target - Q(s, a)) with the target computed in numpy
  # (online params used for s' too) and fed in as a constant.
  next_q = q["online_next"]
  next_value = (next_q[np.arange(5), np.argmax(next_q, 1)] if double_dqn
                else next_q.max(1))
  fixed_target = jnp.asarray(np.asarray(batch.reward) + np.asarray(batch.discount) * next_value,
                             jnp.float32)

  def regression(p):
    q_data = jnp.take_along_axis(agent.apply(p, batch.state).q_values,
                                 batch.action[:, None], axis=1)[:, 0]
    e = fixed_target - q_data
    a = jnp.abs(e)
    return jnp.mean(jnp.where(a <= 1.0, 0.5 * e**2, a - 0.5))

  @jax.jit
  def grads(p, t):
    g_online, g_target = jax.grad(lambda p, t: agent.loss(p, t, batch, jax.random.PRNGKey(0))[0],
                                  argnums=(0, 1))(p, t)
    # Same params for online and target: the gradient still only goes through Q(s, a).
    g_shared = jax.grad(lambda p: agent.loss(p, p, batch, jax.random.PRNGKey(0))[0])(p)
    return g_online, g_target, g_shared, jax.grad(regression)(p)

  g_online, g_target, g_shared, g_ref = grads(online, target)
  for leaf in jax.tree.leaves(g_target):
    np.testing.assert_array_equal(np.asarray(leaf), 0.0)
  assert any(np.any(np.asarray(leaf) != 0.0) for leaf in jax.tree.leaves(g_online))
  for got, ref in zip(jax.tree.leaves(g_shared), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- DQN act

ACT_BATCH = 64  # every act call uses this batch size: one compile


@functools.lru_cache(maxsize=None)
def _act_setup():
  agent = _minatar_agent()
  params = random_params(agent, 3)
  states = np.random.default_rng(4).integers(0, 2, (ACT_BATCH,) + STATE_SHAPE)
  states = jnp.asarray(states, jnp.uint8)
  q = np.asarray(jax.jit(agent.apply)(params, states).q_values)
  return params, states, q, jax.jit(agent.act)


def _act_many(epsilon, keys):
  """Actions [len(keys), ACT_BATCH] for the fixed states, one act call per key."""
  params, states, _, act = _act_setup()
  return np.stack([np.asarray(act(params, states, jax.random.PRNGKey(k), epsilon))
                   for k in keys])


def test_act_greedy_is_argmax():
  params, states, q, act = _act_setup()
  greedy = np.argmax(q, 1)
  assert len(set(greedy)) > 1, "fixture: want states with different greedy actions"
  for seed in range(3):
    actions = act(params, states, jax.random.PRNGKey(seed), 0.0)
    assert actions.shape == (ACT_BATCH,)
    assert actions.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(actions), greedy)


def test_act_epsilon_one_is_uniform():
  actions = _act_many(1.0, range(100))  # 6400 draws
  assert actions.dtype == np.int32
  assert actions.min() >= 0 and actions.max() < NUM_ACTIONS
  freq = np.bincount(actions.ravel(), minlength=NUM_ACTIONS) / actions.size
  # std of each frequency is sqrt(2/9 / 6400) ~ 0.006; 0.03 is 5 sigma.
  np.testing.assert_allclose(freq, 1.0 / NUM_ACTIONS, atol=0.03)
  # Over the keys, every single state gets every action (P(miss) ~ 3 (2/3)^100 per state),
  # whatever its greedy action.
  for b in range(ACT_BATCH):
    assert set(actions[:, b]) == set(range(NUM_ACTIONS)), b
  # Independent of the greedy action: random actions agree with it a third of the time.
  np.testing.assert_allclose(np.mean(actions == np.argmax(_act_setup()[2], 1)), 1 / 3,
                             atol=0.03)


def test_act_partial_epsilon_and_determinism():
  _, _, q, _ = _act_setup()
  greedy = np.argmax(q, 1)
  actions = _act_many(0.5, range(100))
  # P(action != greedy) = eps * (A - 1) / A = 1/3.
  np.testing.assert_allclose(np.mean(actions != greedy), 0.5 * 2 / 3, atol=0.03)
  np.testing.assert_array_equal(actions[:3], _act_many(0.5, range(3)))  # same keys, same
  assert np.any(actions[0] != actions[1])  # different keys, different

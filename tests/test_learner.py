"""batch_rl.agents.learner: the fused K-step update, target syncs, optimizer factory, seeds.

Data are hand-built ReplayArrays (MinAtar frames [10, 10, 4], one shard, stack size 1);
the agent is DQNAgent with the MinAtar network. References are numpy (Adam's first step,
regression loss) or the step-by-step path the scan must reproduce.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.replay import sampler
from tests import helpers

NUM_ACTIONS = 3
STATE_SHAPE = (10, 10, 4, 1)
BATCH = 8
LR = 5e-5
ADAM_EPS = 3.125e-4


def sample_fn(key, data):
  return sampler.sample_transitions(key, data, BATCH, stack_size=1, update_horizon=1,
                                    gamma=0.99)


def make_data(seed, capacity=16, valid=None, all_terminal=False):
  rng = np.random.default_rng(seed)
  terminal = np.zeros(capacity, np.uint8)
  if all_terminal:
    terminal[:] = 1
  else:
    terminal[[4, 11]] = 1
  if valid is None:
    valid = np.arange(capacity - 1)
  return sampler.ReplayArrays(
      observation=jnp.asarray(rng.integers(0, 2, (1, capacity, 10, 10, 4)), jnp.uint8),
      action=jnp.asarray(rng.integers(0, NUM_ACTIONS, (1, capacity)), jnp.int32),
      reward=jnp.asarray(rng.uniform(-1.0, 1.0, (1, capacity)), jnp.float32),
      terminal=jnp.asarray(terminal[None]),
      valid=jnp.asarray(valid, jnp.int32))


def make_agent(**kwargs):
  return dqn.DQNAgent(NUM_ACTIONS, network=networks.MinAtarDQNNetwork,
                      optimizer_fn=learner.create_optimizer, batch_size=BATCH, **kwargs)


def random_params(agent, seed):
  return helpers.random_params(agent, seed, STATE_SHAPE)


def initial_state(agent, seed=0):
  return learner.init_train_state(random_params(agent, seed), agent.optimizer,
                                  jax.random.PRNGKey(seed))


@functools.lru_cache(maxsize=None)
def setup(target_update_period=3):
  """Agent, its raw train_step and the jitted one (compiled once per period)."""
  agent = make_agent(target_update_period=target_update_period)
  step = learner.make_train_step(agent.loss, agent.optimizer, sample_fn, target_update_period)
  return agent, step, jax.jit(step)


@functools.lru_cache(maxsize=None)
def scan_steps(num_steps, unroll=1, target_update_period=3):
  """Jitted make_train_steps of `setup(target_update_period)` (compiled once per config)."""
  return learner.make_train_steps(setup(target_update_period)[1], num_steps, unroll=unroll)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6, msg=""):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b), msg
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=msg)


def assert_trees_equal(a, b, msg=""):
  assert jax.tree.structure(a) == jax.tree.structure(b), msg
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=msg)


def run_single_steps(n, target_update_period=3, data_seed=0):
  agent, _, step = setup(target_update_period)
  data = make_data(data_seed)
  state = initial_state(agent)
  states, metrics = [state], []
  for _ in range(n):
    state, _, m = step(state, data)
    states.append(state)
    metrics.append(m)
  return states, metrics


# --------------------------------------------------------------------------- (a) scan == loop


@pytest.mark.parametrize("unroll", [1, 5])
def test_scan_equals_successive_steps(unroll):
  agent, raw_step, _ = setup(3)
  data = make_data(0)
  states, metrics = run_single_steps(5)
  state0 = initial_state(agent)

  train_steps = scan_steps(5, unroll)
  start = {k: jnp.float32(1.5) for k in metrics[0]}  # totals are added to, not replaced
  state5, totals = train_steps(state0, data, start)

  assert int(state5.step) == 5
  np.testing.assert_array_equal(np.asarray(state5.rng), np.asarray(states[5].rng))
  assert_trees_close(state5.params, states[5].params, msg="params after 5 steps")
  assert_trees_close(state5.target_params, states[5].target_params, msg="target params")
  assert_trees_close(state5.opt_state, states[5].opt_state, msg="optimizer state")
  assert set(totals) == {"Train/Loss", "Train/TDError", "Train/QData", "Train/NonFinite"}
  for k in totals:
    expected = 1.5 + sum(float(m[k]) for m in metrics)
    np.testing.assert_allclose(float(totals[k]), expected, rtol=1e-5, err_msg=k)
    assert totals[k].shape == () and totals[k].dtype == jnp.float32
  # Sanity: the 5 steps did not all see the same loss (different minibatches / params).
  assert len({float(m["Train/Loss"]) for m in metrics}) > 1


def test_zero_metrics():
  agent, raw_step, _ = setup(3)
  zeros = learner.zero_metrics(raw_step, initial_state(agent), make_data(0))
  assert set(zeros) == {"Train/Loss", "Train/TDError", "Train/QData", "Train/NonFinite"}
  for v in zeros.values():
    assert v.shape == () and v.dtype == jnp.float32 and float(v) == 0.0


# --------------------------------------------------------------------------- (b) target sync


def test_target_sync_period():
  states, _ = run_single_steps(7, target_update_period=3)
  initial = states[0].params
  assert_trees_equal(states[0].target_params, initial, "target starts as a copy")
  for t in range(1, 8):
    assert int(states[t].step) == t
  # Params move every step (else the checks below prove nothing).
  for t in range(1, 8):
    assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in
               zip(jax.tree.leaves(states[t].params), jax.tree.leaves(states[t - 1].params)))
  assert_trees_equal(states[1].target_params, initial, "step 1: target is still the init")
  assert_trees_equal(states[2].target_params, initial, "step 2: target is still the init")
  assert_trees_equal(states[3].target_params, states[3].params,
                     "step 3: target synced to the online params of step 3")
  assert_trees_equal(states[4].target_params, states[3].params, "step 4: target of step 3")
  assert_trees_equal(states[5].target_params, states[3].params, "step 5: target of step 3")
  assert_trees_equal(states[6].target_params, states[6].params, "step 6: synced again")
  assert_trees_equal(states[7].target_params, states[6].params, "step 7: target of step 6")


# --------------------------------------------------------------------------- (c) one Adam step


def test_one_update_changes_every_leaf_by_adams_first_step():
  """Every sample is transition 5 (valid = [5] * 15), so the minibatch is known whatever
  the key; Adam's first step is -lr * g / (|g| + eps) (bias-corrected m = g, v = g^2)."""
  agent, _, step = setup(3)
  data = make_data(0, valid=[5] * 15)
  state0 = initial_state(agent)
  state1, _, _ = step(state0, data)

  batch = sampler.gather_transitions(data, jnp.full((BATCH,), 5, jnp.int32), stack_size=1,
                                     gamma=0.99)
  grads = jax.jit(jax.grad(lambda p: agent.loss(p, state0.target_params, batch, jax.random.PRNGKey(0))[0]))(
      state0.params)
  for path_leaf, p0, p1, g in zip(jax.tree_util.tree_leaves_with_path(state0.params),
                                  jax.tree.leaves(state0.params), jax.tree.leaves(state1.params),
                                  jax.tree.leaves(grads)):
    name = jax.tree_util.keystr(path_leaf[0])
    p0, p1, g = (np.asarray(x, np.float64) for x in (p0, p1, g))
    assert np.any(p1 != p0), f"{name} did not change after one update"
    # p1 - p0 is a float32 difference of params ~0.1 apart by ~lr: atol covers its rounding.
    np.testing.assert_allclose(p1 - p0, -LR * g / (np.abs(g) + ADAM_EPS),
                               rtol=2e-3, atol=1e-8, err_msg=name)


# --------------------------------------------------------------------------- (d) it learns


@functools.lru_cache(maxsize=None)
def _jitted_apply(agent):
  return jax.jit(agent.apply)


def np_regression_loss(agent, params, data):
  """All transitions terminal: target = r, loss = mean huber(r - Q(s, a)) over the valid
  states (stack size 1: the state at i is frame i)."""
  valid = np.asarray(data.valid)
  obs = np.asarray(data.observation[0])[valid][..., None]  # [V, 10, 10, 4, 1]
  q = np.asarray(_jitted_apply(agent)(params, jnp.asarray(obs)).q_values, np.float64)
  error = (np.asarray(data.reward[0], np.float64)[valid]
           - q[np.arange(len(valid)), np.asarray(data.action[0])[valid]])
  a = np.abs(error)
  return np.mean(np.where(a <= 1.0, 0.5 * error**2, a - 0.5))


def test_loss_decreases_on_fixed_data():
  """Every transition terminal, so the targets are the fixed rewards: plain regression on 15
  samples, which 200 Adam steps (lr 5e-5, the default) must fit."""
  agent, raw_step, _ = setup(3)
  data = make_data(1, all_terminal=True)
  train_steps = scan_steps(5)
  state = initial_state(agent, seed=2)
  initial_loss = np_regression_loss(agent, state.params, data)
  assert initial_loss > 0.05, "fixture: the initial loss should be far from 0"
  zeros = learner.zero_metrics(raw_step, state, data)
  mean_loss_per_call = []
  for _ in range(40):  # 200 steps
    state, totals = train_steps(state, data, zeros)
    mean_loss_per_call.append(float(totals["Train/Loss"]) / 5)
  assert int(state.step) == 200
  final_loss = np_regression_loss(agent, state.params, data)
  assert final_loss < 0.1 * initial_loss, (initial_loss, final_loss)
  assert mean_loss_per_call[-1] < 0.1 * mean_loss_per_call[0], mean_loss_per_call


# --------------------------------------------------------------------------- (e) optimizers


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {"a": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
          "b": {"c": jnp.asarray(rng.standard_normal(5) * 1e-3, jnp.float32)}}


def test_create_optimizer_adam_defaults():
  params, g1, g2 = _tree(0), _tree(1), _tree(2)
  ours = learner.create_optimizer()
  ref = optax.adam(5e-5, eps=3.125e-4)
  s_ours, s_ref = ours.init(params), ref.init(params)
  for g in (g1, g2):
    u_ours, s_ours = ours.update(g, s_ours, params)
    u_ref, s_ref = ref.update(g, s_ref, params)
    assert_trees_close(u_ours, u_ref, rtol=1e-6, atol=0)
  # And the first step by hand: -lr * g / (|g| + eps).
  u1, _ = ours.update(g1, ours.init(params), params)
  for u, g in zip(jax.tree.leaves(u1), jax.tree.leaves(g1)):
    g = np.asarray(g, np.float64)
    np.testing.assert_allclose(np.asarray(u), -5e-5 * g / (np.abs(g) + 3.125e-4), rtol=1e-4)


def test_create_optimizer_sgd_rmsprop_and_clipping():
  params, g = _tree(0), _tree(1)
  sgd = learner.create_optimizer("sgd", learning_rate=0.1)
  u, _ = sgd.update(g, sgd.init(params), params)
  assert_trees_close(u, jax.tree.map(lambda x: -0.1 * x, g), rtol=1e-6, atol=0)

  # RMSProp's first step from nu = 0: nu = (1 - decay) g^2, u = -lr g / sqrt(nu + eps)
  # (eps inside the root, as optax and TF1's RMSPropOptimizer that Dopamine used).
  rms = learner.create_optimizer("rmsprop", learning_rate=0.01, decay=0.9, eps=1e-3)
  u, _ = rms.update(g, rms.init(params), params)
  for ul, gl in zip(jax.tree.leaves(u), jax.tree.leaves(g)):
    gl = np.asarray(gl, np.float64)
    np.testing.assert_allclose(np.asarray(ul), -0.01 * gl / np.sqrt(0.1 * gl**2 + 1e-3),
                               rtol=1e-4)
  centered = learner.create_optimizer("rmsprop", centered=True)
  centered.update(g, centered.init(params), params)

  norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64)**2) for x in jax.tree.leaves(g)))
  assert norm > 1.0
  clipped = learner.create_optimizer("sgd", learning_rate=1.0, max_grad_norm=1.0)
  u, _ = clipped.update(g, clipped.init(params), params)
  assert_trees_close(u, jax.tree.map(lambda x: -x / norm, g), rtol=1e-5, atol=1e-8)


def test_create_optimizer_unknown_name():
  with pytest.raises(ValueError, match=r"create_optimizer\.name"):
    learner.create_optimizer("adagrad")


# --------------------------------------------------------------------------- (f) seeds


@functools.lru_cache(maxsize=None)
def _seed_setup():
  agent = make_agent()
  jitted_init = jax.jit(agent.init, static_argnums=1)

  def init(key, state_shape):
    # Threefry's "partitionable" bit layout (the default) makes XLA's CPU compile of the
    # Xavier init ~4x slower; the other layout draws other bits, equally seeded. Only this
    # test runs the Flax init.
    with jax.threefry_partitionable(False):
      return jitted_init(key, state_shape)

  def index_loss(params, target_params, batch, key):
    """A zero loss that reports the minibatch it was given (so no network compile)."""
    zero = sum(jnp.sum(x) for x in jax.tree.leaves(params)) * 0.0
    return zero, {"index": batch.index}

  step = jax.jit(learner.make_train_step(index_loss, agent.optimizer, sample_fn, 3))
  return agent, init, step


def test_seeds_give_distinct_and_reproducible_params_and_batches():
  agent, init, step = _seed_setup()
  data = make_data(0)
  s0, s0_again, s1 = (init(jax.random.PRNGKey(seed), STATE_SHAPE) for seed in (0, 0, 1))

  assert_trees_equal(s0, s0_again, "same seed, same TrainState")
  assert_trees_equal(s0.target_params, s0.params, "target starts as a copy")
  for name, a, b in zip([jax.tree_util.keystr(p) for p, _ in
                         jax.tree_util.tree_leaves_with_path(s0.params)],
                        jax.tree.leaves(s0.params), jax.tree.leaves(s1.params)):
    if "kernel" in name:
      assert np.any(np.asarray(a) != np.asarray(b)), f"{name} identical for seeds 0 and 1"
  assert np.any(np.asarray(s0.rng) != np.asarray(s1.rng))
  # Init key and training rng are not the same key.
  assert np.any(np.asarray(s0.rng) != np.asarray(jax.random.PRNGKey(0)))

  (a1, _, ma1), (b1, _, mb1), (_, _, mc1) = (step(s, data) for s in (s0, s0_again, s1))
  idx0, idx0_again, idx1 = (np.asarray(m["index"]) for m in (ma1, mb1, mc1))
  np.testing.assert_array_equal(idx0, idx0_again)
  assert np.all(np.isin(idx0, np.arange(15)))
  assert np.any(idx0 != idx1), "seeds 0 and 1 drew the same first minibatch"
  # Successive steps draw new minibatches (the rng advances).
  _, _, ma2 = step(a1, data)
  assert np.any(np.asarray(ma2["index"]) != idx0)
  np.testing.assert_array_equal(np.asarray(a1.rng), np.asarray(b1.rng))

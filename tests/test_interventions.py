"""The empirical study's interventions against numpy: dropout, VIB, CURL, SAM.

Activation functions are covered in test_networks.py; here the network options that
change training (dropout, the variational bottleneck, CURL's bilinear projection), the
random-shift augmentation, the InfoNCE loss, and SAM around an optimizer.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

from batch_rl import augmentation
from batch_rl import networks
from batch_rl import regularizers
from batch_rl.agents import common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms as terms
from tests import helpers

STATE_SHAPE = (10, 10, 4, 1)
B, A, D_IN, D = 64, 3, 12, 16


class Penultimate(nn.Module):
  """Just the representation layer and head of the networks, on a feature input."""

  num_actions: int = A
  hidden_units: int = D
  activation: str = "relu"
  outputs_per_action: int = 1
  dropout_rate: float = 0.0
  bottleneck: str = "none"
  contrastive_projection: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    return networks._representation_and_head(  # pylint: disable=protected-access
        self, x, train, nn.initializers.lecun_normal())


def np_relu(x):
  return np.maximum(x, 0.0)


def np_softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0.0)


@pytest.fixture(scope="module")
def features_in():
  return np.random.default_rng(0).normal(size=(B, D_IN)).astype(np.float32)


def kernels(params, name):
  layer = params["params"][name]
  return (np.asarray(layer["kernel"], np.float64),
          np.asarray(layer["bias"], np.float64) if "bias" in layer else 0.0)


# --- network options ----------------------------------------------------------------

def test_parameter_names_are_dopamines_without_interventions():
  shapes = lambda net: jax.eval_shape(net.init, jax.random.PRNGKey(0),
                                      jnp.zeros((1, 84, 84, 4), jnp.uint8))["params"]
  plain = shapes(networks.NatureDQNNetwork(num_actions=A))
  assert sorted(plain) == ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "Dense_1"]
  full = shapes(networks.NatureDQNNetwork(num_actions=A, bottleneck="vib", dropout_rate=0.5,
                                          contrastive_projection=True))
  assert sorted(full) == sorted(plain) + ["curl_bilinear", "vib_scale"]
  assert full["Dense_1"]["kernel"].shape == plain["Dense_1"]["kernel"].shape == (512, A)


def test_dropout_is_off_in_evaluation_and_unbiased_in_training(features_in):
  net = Penultimate(dropout_rate=0.25)
  params = net.init(jax.random.PRNGKey(0), features_in)
  w0, b0 = kernels(params, "Dense_0")
  w1, b1 = kernels(params, "Dense_1")
  phi = np_relu(features_in @ w0 + b0)
  evaluation = net.apply(params, features_in)
  np.testing.assert_allclose(evaluation.representation, phi, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(evaluation.q_values, phi @ w1 + b1, rtol=1e-4, atol=1e-5)

  def train_q(key):
    return net.apply(params, features_in, train=True, rngs={"dropout": key}).q_values

  keys = jax.random.split(jax.random.PRNGKey(1), 2000)
  samples = np.asarray(jax.jit(jax.vmap(train_q))(keys), np.float64)
  assert not np.allclose(samples[0], samples[1])
  # Inverted dropout: E[q_train] = q_eval. Per-entry std of the mean over 2000 draws
  # is ~ std(q_train) / 45; allow 5 of those.
  tolerance = 5 * samples.std(axis=0) / np.sqrt(len(keys)) + 1e-6
  assert np.all(np.abs(samples.mean(axis=0) - evaluation.q_values) < tolerance)
  # The representation stays the pre-dropout activations.
  out = net.apply(params, features_in, train=True, rngs={"dropout": keys[0]})
  np.testing.assert_allclose(out.representation, phi, rtol=1e-5, atol=1e-5)


def test_vib_kl_sample_and_head_match_numpy(features_in):
  net = Penultimate(bottleneck="vib")
  params = net.init(jax.random.PRNGKey(0), features_in)
  w0, b0 = kernels(params, "Dense_0")
  ws, bs = kernels(params, "vib_scale")
  w1, b1 = kernels(params, "Dense_1")
  mu = np_relu(features_in @ w0 + b0)
  sigma = np_softplus(features_in @ ws + bs) + 1e-6
  # KL(N(mu, sigma^2) || N(0, 1)) summed over units, written out per unit.
  kl = np.sum(np.log(1.0 / sigma) + (sigma**2 + mu**2) / 2.0 - 0.5, axis=1)
  evaluation = net.apply(params, features_in)
  np.testing.assert_allclose(evaluation.kl, kl, rtol=1e-4)
  np.testing.assert_allclose(evaluation.representation, mu, rtol=1e-5, atol=1e-5)
  out = net.apply(params, features_in, train=True, rngs={"bottleneck": jax.random.PRNGKey(3)})
  z = np.asarray(out.representation, np.float64)
  np.testing.assert_allclose(out.q_values, z @ w1 + b1, rtol=1e-4, atol=1e-4)
  eps = (z - mu) / sigma  # the standard normal noise the sample used
  assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1.0) < 0.05  # B * D = 1024 draws


def test_vib_regularizer_is_beta_times_mean_kl():
  agent = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork,
                       regularizers=[terms.VIBRegularizer(beta=0.5)])
  assert agent.network.bottleneck == "vib"
  params = agent.init(jax.random.PRNGKey(0), STATE_SHAPE).params
  batch = helpers.random_transitions()
  loss, metrics = agent.loss(params, params, batch, jax.random.PRNGKey(1))
  kl = np.asarray(agent.apply(params, batch.state).kl, np.float64)  # KL needs no sample
  np.testing.assert_allclose(metrics["Train/VIBKL"], kl.mean(), rtol=1e-5)
  np.testing.assert_allclose(loss, metrics["Train/TDLoss"] + 0.5 * kl.mean(), rtol=1e-5)


# --- CURL ----------------------------------------------------------------------------

def np_info_nce(query, keys):
  logits = query @ keys.T
  logits = logits - logits.max(axis=1, keepdims=True)
  log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
  return -np.mean(np.diag(log_probs))


def test_info_nce_matches_numpy_and_its_bounds():
  rng = np.random.default_rng(0)
  query, keys = rng.normal(size=(2, 8, 5))
  np.testing.assert_allclose(regularizers.info_nce(jnp.asarray(query), jnp.asarray(keys)),
                             np_info_nce(query, keys), rtol=1e-5)
  # Uninformative keys: every key equally likely, loss = log B.
  np.testing.assert_allclose(regularizers.info_nce(jnp.asarray(query), jnp.zeros((8, 5))),
                             np.log(8), rtol=1e-6)
  # Orthogonal, large keys matched to their queries: loss -> 0.
  eye = 50.0 * np.eye(8)
  assert float(regularizers.info_nce(jnp.asarray(eye), jnp.asarray(eye))) < 1e-6
  with pytest.raises(ValueError, match="info_nce"):
    regularizers.info_nce(jnp.zeros((4, 3)), jnp.zeros((5, 3)))


def np_random_shift(states, offsets, pad):
  widths = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (states.ndim - 3)
  padded = np.pad(states, widths, mode="edge")
  h, w = states.shape[1:3]
  return np.stack([padded[b, dy:dy + h, dx:dx + w] for b, (dy, dx) in enumerate(offsets)])


@pytest.mark.parametrize("shape,pad", [((5, 84, 84, 4), 4), ((7, 10, 10, 4, 1), 1)])
def test_random_shift_matches_numpy_pad_and_crop(shape, pad):
  states = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  key = jax.random.PRNGKey(5)
  # The offsets are the function's random draw (not its logic); the crop is checked.
  offsets = np.asarray(jax.random.randint(key, (shape[0], 2), 0, 2 * pad + 1))
  got = augmentation.random_shift(jnp.asarray(states), key, pad)
  assert got.dtype == jnp.uint8 and got.shape == states.shape
  np.testing.assert_array_equal(got, np_random_shift(states, offsets, pad))
  assert len({tuple(o) for o in offsets}) > 1  # views differ between states
  np.testing.assert_array_equal(augmentation.random_shift(jnp.asarray(states), key, 0), states)


@pytest.mark.parametrize("key_encoder", ["online", "target"])
def test_curl_term_without_shift_matches_numpy(key_encoder):
  term = terms.CURLRegularizer(weight=0.3, pad=0, key_encoder=key_encoder)
  agent = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, regularizers=[term])
  assert agent.network.contrastive_projection
  online = helpers.random_params(agent, 0, STATE_SHAPE)
  target = helpers.random_params(agent, 1, STATE_SHAPE)
  batch = helpers.random_transitions()
  loss, metrics = agent.loss(online, target, batch, jax.random.PRNGKey(0))
  phi = np.asarray(agent.apply(online, batch.state).representation, np.float64)
  keys = phi if key_encoder == "online" else np.asarray(
      agent.apply(target, batch.state).representation, np.float64)
  w = np.asarray(online["params"]["curl_bilinear"]["kernel"], np.float64)
  # Bilinear similarity q^T W k with q = phi(view 1), k = phi(view 2) (same view here).
  expected = np_info_nce(phi @ w, keys)
  np.testing.assert_allclose(metrics["Train/CURLLoss"], expected, rtol=1e-4)
  np.testing.assert_allclose(loss, metrics["Train/TDLoss"] + 0.3 * expected, rtol=1e-4)


def test_curl_trains_the_bilinear_matrix_and_keys_carry_no_gradient():
  agent = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork,
                       regularizers=[terms.CURLRegularizer(weight=1.0, pad=1)])
  params = helpers.random_params(agent, 0, STATE_SHAPE)
  batch = helpers.random_transitions()
  key = jax.random.PRNGKey(0)
  grads = jax.grad(lambda p: agent.loss(p, p, batch, key)[0])(params)
  assert float(jnp.abs(grads["params"]["curl_bilinear"]["kernel"]).max()) > 0
  # The shifted views change the loss (the augmentation is in the term).
  unshifted = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork,
                           regularizers=[terms.CURLRegularizer(weight=1.0, pad=0)])
  assert not np.isclose(float(agent.loss(params, params, batch, key)[1]["Train/CURLLoss"]),
                        float(unshifted.loss(params, params, batch, key)[1]["Train/CURLLoss"]))

  # Keys under stop_gradient: the gradient equals that of a loss where the keys are
  # constants computed outside.
  forward_key, reg_key, _ = common.split_loss_key(key)
  del forward_key
  view_q_key, view_k_key, fwd_key = jax.random.split(jax.random.split(reg_key, 1)[0], 3)
  view_q = augmentation.random_shift(batch.state, view_q_key, 1)
  view_k = augmentation.random_shift(batch.state, view_k_key, 1)
  const_keys = agent.apply(params, view_k).representation

  def curl_only(p):
    return regularizers.info_nce(agent.apply(p, view_q, fwd_key).contrastive_query,
                                 const_keys)

  def curl_from_term(p):
    inputs = terms.LossInputs(q_values=None, phi=None, phi_next=None, action=None,
                              next_action=None, terminal=None, state=batch.state,
                              forward=lambda s, k: agent.apply(p, s, k))
    return terms.CURLRegularizer(weight=1.0, pad=1)(inputs, jax.random.split(reg_key, 1)[0])[0]

  np.testing.assert_allclose(curl_from_term(params), curl_only(params), rtol=1e-6)
  g_term = jax.grad(curl_from_term)(params)
  g_ref = jax.grad(curl_only)(params)
  for a, b in zip(jax.tree.leaves(g_term), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# --- SAM -----------------------------------------------------------------------------

def test_sam_step_matches_numpy_two_gradient_update():
  curvature = np.array([1.0, 4.0, 0.5])
  center = np.array([0.3, -1.0, 2.0])

  def loss_fn(params, target_params, batch, key):
    del target_params, batch, key
    value = 0.5 * jnp.sum(jnp.asarray(curvature, jnp.float32) *
                          (params["w"] - jnp.asarray(center, jnp.float32))**2)
    return value, {"Train/Loss": value}

  lr, rho = 0.1, 0.05
  w0 = np.array([1.0, 1.0, 1.0])
  grad = lambda w: curvature * (w - center)

  def run(optimizer, steps):
    state = learner.init_train_state({"w": jnp.asarray(w0, jnp.float32)}, optimizer,
                                     jax.random.PRNGKey(0))
    step = jax.jit(learner.make_train_step(loss_fn, optimizer, lambda k, d: None, 100))
    for _ in range(steps):
      state, _, _ = step(state, None)
    return np.asarray(state.params["w"], np.float64)

  w = w0.copy()
  for _ in range(3):
    g = grad(w)
    w_adv = w + rho * g / np.linalg.norm(g)   # ascent to the worst nearby point
    w = w - lr * grad(w_adv)                  # descend with its gradient, from w
  np.testing.assert_allclose(run(learner.create_optimizer("sgd", lr, sam_rho=rho), 3), w,
                             rtol=1e-5)
  plain = w0 - lr * grad(w0)
  np.testing.assert_allclose(run(learner.create_optimizer("sgd", lr), 1), plain, rtol=1e-6)
  assert not np.allclose(run(learner.create_optimizer("sgd", lr, sam_rho=rho), 1), plain)


def test_sam_wraps_adam_and_trains_a_dqn_step():
  optimizer = learner.create_optimizer("adam", 1e-3, sam_rho=0.05, max_grad_norm=10.0)
  assert isinstance(optimizer, optax.GradientTransformationExtraArgs)
  agent = dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, optimizer_fn=lambda: optimizer)
  state = agent.init(jax.random.PRNGKey(0), STATE_SHAPE)
  batch = helpers.random_transitions()
  step = jax.jit(learner.make_train_step(agent.loss, agent.optimizer, lambda k, d: batch, 10))
  new_state, _, metrics = step(state, None)
  assert np.isfinite(float(metrics["Train/Loss"]))
  moved = [float(jnp.abs(a - b).max()) for a, b in
           zip(jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))]
  assert max(moved) > 0


@pytest.mark.parametrize("rho", [0.0, -0.1])
def test_sam_rejects_a_nonpositive_rho(rho):
  with pytest.raises(ValueError, match="create_optimizer.sam_rho"):
    learner.create_optimizer(sam_rho=rho)


# --- bad input -----------------------------------------------------------------------

class QOnly(nn.Module):
  """A network without a representation (a user's own)."""

  num_actions: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_actions)(x.reshape((x.shape[0], -1)).astype(jnp.float32))


class QOnlyOutput(nn.Module):
  num_actions: int

  @nn.compact
  def __call__(self, x):
    q = nn.Dense(self.num_actions)(x.reshape((x.shape[0], -1)).astype(jnp.float32))
    return networks.QNetworkOutput(q_values=q, representation=None)


@pytest.mark.parametrize("network", [QOnly, QOnlyOutput])
def test_a_regularizer_on_a_network_without_features_is_refused(network):
  agent = dqn.DQNAgent(A, network=network, regularizers=[terms.LpRegularizer()])
  with pytest.raises(common.RepresentationError, match="LpRegularizer need the penultimate"):
    agent.init(jax.random.PRNGKey(0), STATE_SHAPE)


def test_curl_on_a_network_without_its_option_names_both():
  with pytest.raises(ValueError, match="CURLRegularizer need a network with"):
    dqn.DQNAgent(A, network=QOnly, regularizers=[terms.CURLRegularizer()])


@pytest.mark.parametrize("make,match", [
    (lambda: terms.CURLRegularizer(weight=-1.0), "CURLRegularizer.weight"),
    (lambda: terms.CURLRegularizer(pad=-1), "CURLRegularizer.pad"),
    (lambda: terms.CURLRegularizer(key_encoder="ema"), "CURLRegularizer.key_encoder"),
    (lambda: terms.VIBRegularizer(beta=-0.1), "VIBRegularizer.beta"),
    (lambda: networks.MinAtarDQNNetwork(num_actions=3, dropout_rate=1.0).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 4), jnp.uint8)), "dropout_rate"),
    (lambda: networks.MinAtarDQNNetwork(num_actions=3, bottleneck="beta").init(
        jax.random.PRNGKey(0), jnp.zeros((1, 10, 10, 4), jnp.uint8)), "bottleneck"),
])
def test_bad_intervention_settings_are_named(make, match):
  with pytest.raises(ValueError, match=match):
    make()

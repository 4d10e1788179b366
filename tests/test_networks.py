"""Tests for batch_rl.networks against hand arithmetic and a numpy forward pass."""

import functools

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import networks

NATURE_SHAPE = (84, 84, 4)


# Tests run on a 2-core CPU where XLA compilation dominates: eager Flax compiles
# every primitive separately, so apply/init are jitted once per network config
# (Flax modules are frozen dataclasses, hence hashable cache keys).


@functools.lru_cache(maxsize=None)
def _jitted(net, method, capture=False):
  fn = getattr(net, method)
  if capture:
    fn = functools.partial(fn, capture_intermediates=True)
  return jax.jit(fn)


def _apply(net, variables, x, capture=False):
  return _jitted(net, "apply", capture)(variables, x)


def _init(net, x, seed=0):
  """Real Flax init (Xavier-uniform), jitted.

  The "rbg" PRNG compiles ~3x faster on CPU than the default threefry (the
  initializer's distribution does not depend on the PRNG); still only the
  init test uses this, the others use `_random_params`.
  """
  return _jitted(net, "init")(jax.random.key(seed, impl="rbg"), x)


def _random_params(net, x, seed=0):
  """Variables with the network's tree structure filled by a seeded numpy RNG.

  He-scaled Gaussian kernels keep ReLU features alive through the torso, and
  non-zero biases make the forward-pass checks cover the bias terms too.
  Built from `jax.eval_shape`, so no XLA RNG compilation is needed.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(net.init, jax.random.key(0), x)

  def fill(leaf):
    if len(leaf.shape) == 1:  # bias
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in),
                       jnp.float32)

  return jax.tree_util.tree_map(fill, shapes)


def _uint8_frames(batch, seed=0, shape=NATURE_SHAPE):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(batch,) + shape, dtype=np.uint8)


# ---------------------------------------------------------------------------
# Independent numpy forward pass (float64).


def _np_conv(x, kernel, bias, stride, padding):
  """x [B, H, W, Cin], kernel [k, k, Cin, Cout] -> [B, H', W', Cout]."""
  k = kernel.shape[0]
  h = x.shape[1]
  if padding == "SAME":
    # XLA/TF convention: out = ceil(in / stride); of the total padding,
    # floor(total / 2) goes before and the rest after.
    out = -(-h // stride)
    total = max((out - 1) * stride + k - h, 0)
    lo, hi = total // 2, total - total // 2
    x = np.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  # windows: [B, H'', W'', Cin, k, k]
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
  win = win[:, ::stride, ::stride]
  return np.einsum("bhwcij,ijcd->bhwd", win, kernel) + bias


def _np_nature_forward(params, x_uint8, padding, act=lambda z: np.maximum(z, 0)):
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = x_uint8.astype(np.float64) / 255.0
  for name, stride in (("Conv_0", 4), ("Conv_1", 2), ("Conv_2", 1)):
    x = act(_np_conv(x, p[name]["kernel"], p[name]["bias"], stride, padding))
  x = x.reshape(x.shape[0], -1)
  phi = act(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  q = phi @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  return q, phi


# ---------------------------------------------------------------------------
# NatureDQNNetwork


def _nature_count(padding, num_actions, hidden=512):
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  torso = conv(8, 4, 32) + conv(4, 32, 64) + conv(3, 64, 64)  # 8224+32832+36928
  # SAME: 84 -> ceil(84/4)=21 -> ceil(21/2)=11 -> 11.
  # VALID: (84-8)/4+1=20 -> (20-4)//2+1=9 -> 9-3+1=7.
  side = 11 if padding == "SAME" else 7
  flat = side * side * 64  # 7744 or 3136
  return torso + (flat * hidden + hidden) + (hidden * num_actions + num_actions)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("num_actions", [6, 18])
def test_nature_parameter_count(padding, num_actions):
  net = networks.NatureDQNNetwork(num_actions=num_actions, padding=padding)
  shapes = jax.eval_shape(net.init, jax.random.key(0),
                          jnp.zeros((1,) + NATURE_SHAPE, jnp.uint8))
  expected = _nature_count(padding, num_actions)
  assert networks.num_parameters(shapes) == expected
  assert networks.num_parameters(shapes["params"]) == expected
  # Spelled-out totals for 6 actions, so a silent change of the formula shows.
  if num_actions == 6:
    assert expected == {"SAME": 4_046_502, "VALID": 1_687_206}[padding]
  flat = 7744 if padding == "SAME" else 3136
  assert shapes["params"]["Dense_0"]["kernel"].shape == (flat, 512)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_nature_matches_numpy_forward(padding):
  net = networks.NatureDQNNetwork(num_actions=6, padding=padding)
  x = _uint8_frames(2, seed=1)
  variables = _random_params(net, x)
  out = _apply(net, variables, x)
  assert isinstance(out, networks.QNetworkOutput)
  assert out.q_values.shape == (2, 6) and out.q_values.dtype == jnp.float32
  assert out.representation.shape == (2, 512)
  assert out.representation.dtype == jnp.float32
  q_ref, phi_ref = _np_nature_forward(variables["params"], x, padding)
  np.testing.assert_allclose(out.representation, phi_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out.q_values, q_ref, rtol=1e-4, atol=1e-5)
  # relu features are non-negative and not all dead for random pixels.
  assert np.all(np.asarray(out.representation) >= 0)
  assert np.any(np.asarray(out.representation) > 0)


def test_nature_q_is_linear_in_representation():
  net = networks.NatureDQNNetwork(num_actions=18)
  x = _uint8_frames(5, seed=2)
  variables = _random_params(net, x, seed=3)
  out = _apply(net, variables, x)
  last = variables["params"]["Dense_1"]
  q = np.asarray(out.representation, np.float64) @ np.asarray(last["kernel"]) \
      + np.asarray(last["bias"])
  np.testing.assert_allclose(out.q_values, q, rtol=1e-5, atol=1e-6)


def test_nature_scales_uint8_by_255():
  net = networks.NatureDQNNetwork(num_actions=6)
  x = np.full((1,) + NATURE_SHAPE, 255, np.uint8)
  variables = _random_params(net, x)
  _, state = _apply(net, variables, x, capture=True)
  pre = state["intermediates"]["Conv_0"]["__call__"][0]
  conv0 = jax.tree_util.tree_map(np.asarray, variables["params"]["Conv_0"])
  ones = np.ones((1,) + NATURE_SHAPE)
  expected = _np_conv(ones, conv0["kernel"], conv0["bias"], 4, "SAME")
  np.testing.assert_allclose(pre, expected, rtol=1e-5, atol=1e-5)
  # And not the unscaled input: 255 * ones gives a very different output.
  unscaled = _np_conv(255.0 * ones, conv0["kernel"], conv0["bias"], 4, "SAME")
  assert not np.allclose(pre, unscaled, rtol=1e-2)


def test_nature_accepts_any_batch_size():
  net = networks.NatureDQNNetwork(num_actions=4, padding="VALID")
  x = _uint8_frames(3, seed=4)
  variables = _random_params(net, x[:1], seed=7)
  out3 = _apply(net, variables, x)
  out1 = _apply(net, variables, x[1:2])
  assert out3.q_values.shape == (3, 4)
  np.testing.assert_allclose(out3.q_values[1:2], out1.q_values, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["NatureDQNNetwork", "MinAtarDQNNetwork"])
def test_init_is_seeded_xavier_uniform_with_zero_biases(name):
  # Real Flax init (the only test that pays for XLA RNG compilation).
  if name == "NatureDQNNetwork":
    net = networks.NatureDQNNetwork(num_actions=6, padding="VALID")
    x = _uint8_frames(2)
    fans = {"Conv_0": (8 * 8 * 4, 8 * 8 * 32), "Conv_1": (4 * 4 * 32, 4 * 4 * 64),
            "Conv_2": (3 * 3 * 64, 3 * 3 * 64), "Dense_0": (3136, 512),
            "Dense_1": (512, 6)}
  else:
    net = networks.MinAtarDQNNetwork(num_actions=6)
    x = np.zeros((2, 10, 10, 4), np.uint8)
    fans = {"Conv_0": (3 * 3 * 4, 3 * 3 * 16), "Dense_0": (1024, 128),
            "Dense_1": (128, 6)}
  params = _init(net, x, seed=7)["params"]
  assert set(params) == set(fans)
  for layer, (fan_in, fan_out) in fans.items():
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    k = np.asarray(params[layer]["kernel"])
    assert np.abs(k).max() <= limit
    assert np.abs(k).max() > 0.9 * limit  # uniform fills the range
    # Var of U(-l, l) is l^2 / 3.
    np.testing.assert_allclose(k.var(), limit**2 / 3, rtol=0.35)
    np.testing.assert_array_equal(params[layer]["bias"], 0.0)
  # Same seed, different observations (same shape, so no recompile): identical
  # parameters; another seed differs.
  same = _init(net, np.ones_like(x), seed=7)["params"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, same)
  other = _init(net, x, seed=8)["params"]
  assert not np.array_equal(params["Dense_0"]["kernel"], other["Dense_0"]["kernel"])


@pytest.mark.parametrize("bad_shape", [
    (2, 84, 84, 3), (84, 84, 4), (2, 84, 84), (2, 4, 84, 84), (2, 84, 84, 4, 1),
])
def test_nature_wrong_shape_raises(bad_shape):
  net = networks.NatureDQNNetwork(num_actions=6)
  with pytest.raises(ValueError) as err:
    _init(net, jnp.zeros(bad_shape, jnp.uint8))
  msg = str(err.value)
  assert "NatureDQNNetwork" in msg and "[B, 84, 84, 4]" in msg
  assert str(tuple(bad_shape)) in msg


def test_nature_bad_padding_raises():
  with pytest.raises(ValueError, match="padding"):
    _init(networks.NatureDQNNetwork(num_actions=6, padding="FULL"),
          _uint8_frames(1))


def test_activation_switch_changes_outputs_with_same_params():
  x = _uint8_frames(2, seed=5)
  relu_net = networks.NatureDQNNetwork(num_actions=6, padding="VALID")
  tanh_net = networks.NatureDQNNetwork(num_actions=6, padding="VALID",
                                       activation="tanh")
  variables = _random_params(relu_net, x)
  relu_out = _apply(relu_net, variables, x)
  tanh_out = _apply(tanh_net, variables, x)
  assert not np.allclose(relu_out.q_values, tanh_out.q_values, rtol=1e-3)
  q_ref, phi_ref = _np_nature_forward(variables["params"], x, "VALID", act=np.tanh)
  np.testing.assert_allclose(tanh_out.representation, phi_ref, rtol=1e-4, atol=1e-5)
  assert np.any(np.asarray(tanh_out.representation) < 0)


def test_activation_names_map_to_the_named_functions():
  z = np.array([-1.5, -0.25, 0.0, 0.5, 2.0])
  sig = 1.0 / (1.0 + np.exp(-z))
  expected = {
      "relu": np.maximum(z, 0),
      "tanh": np.tanh(z),
      "elu": np.where(z > 0, z, np.expm1(z)),
      "sigmoid": sig,
      "silu": z * sig,
      "swish": z * sig,
      "leaky_relu": np.where(z > 0, z, 0.01 * z),
      "softplus": np.log1p(np.exp(z)),
      "relu6": np.clip(z, 0, 6),
      "identity": z,
      # tanh approximation, flax.linen.gelu's default.
      "gelu": 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
  }
  assert set(expected) <= set(networks.ACTIVATIONS)
  zj = jnp.asarray(z, jnp.float32)
  for name, ref in expected.items():
    np.testing.assert_allclose(networks.ACTIVATIONS[name](zj), ref, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  for name in set(networks.ACTIVATIONS) - set(expected):  # selu, celu
    assert networks.ACTIVATIONS[name](zj).shape == z.shape


@pytest.mark.parametrize("name", ["relu", "tanh", "leaky_relu", "identity"])
def test_activation_is_applied_to_representation(name):
  net = networks.MinAtarDQNNetwork(num_actions=3, activation=name)
  x = np.random.default_rng(0).integers(0, 2, size=(4, 10, 10, 4)).astype(bool)
  variables = _random_params(net, x)
  # Eager apply: conv/dense kernels compiled once, only the activation is new.
  out, state = net.apply(variables, x, capture_intermediates=True)
  pre = state["intermediates"]["Dense_0"]["__call__"][0]
  np.testing.assert_allclose(out.representation,
                             networks.ACTIVATIONS[name](pre), rtol=1e-6, atol=1e-6)


def test_unknown_activation_lists_valid_names():
  net = networks.MinAtarDQNNetwork(num_actions=3, activation="mish_typo")
  with pytest.raises(ValueError) as err:
    _init(net, jnp.zeros((1, 10, 10, 4)))
  msg = str(err.value)
  assert "mish_typo" in msg
  for name in ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu", "sigmoid"):
    assert name in msg


def test_gin_binds_network_attributes():
  gin.clear_config()
  try:
    gin.parse_config("""
        NatureDQNNetwork.padding = 'VALID'
        NatureDQNNetwork.hidden_units = 64
    """)
    net = networks.NatureDQNNetwork(num_actions=6)
    shapes = jax.eval_shape(net.init, jax.random.key(0),
                            jnp.zeros((1,) + NATURE_SHAPE, jnp.uint8))
    assert networks.num_parameters(shapes) == _nature_count("VALID", 6, hidden=64)
  finally:
    gin.clear_config()


# ---------------------------------------------------------------------------
# MinAtarDQNNetwork


def _np_minatar_forward(params, x):
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = x.astype(np.float64)  # no /255
  h = np.maximum(_np_conv(x, p["Conv_0"]["kernel"], p["Conv_0"]["bias"], 1, "VALID"), 0)
  phi = np.maximum(h.reshape(h.shape[0], -1) @ p["Dense_0"]["kernel"]
                   + p["Dense_0"]["bias"], 0)
  return phi @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], phi


def test_minatar_parameter_count():
  net = networks.MinAtarDQNNetwork(num_actions=6)
  shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 10, 10, 4)))
  conv = 3 * 3 * 4 * 16 + 16           # 592
  dense = (8 * 8 * 16) * 128 + 128     # VALID 10 -> 8: 1024 * 128 + 128 = 131200
  head = 128 * 6 + 6                   # 774
  assert networks.num_parameters(shapes) == conv + dense + head == 132_566


def test_minatar_matches_numpy_forward_without_255_scaling():
  net = networks.MinAtarDQNNetwork(num_actions=6)
  x = np.random.default_rng(1).integers(0, 2, size=(3, 10, 10, 4)).astype(np.uint8)
  variables = _random_params(net, x)
  out = _apply(net, variables, x)
  assert out.q_values.shape == (3, 6) and out.q_values.dtype == jnp.float32
  assert out.representation.shape == (3, 128)
  assert out.representation.dtype == jnp.float32
  q_ref, phi_ref = _np_minatar_forward(variables["params"], x)
  np.testing.assert_allclose(out.representation, phi_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.q_values, q_ref, rtol=1e-5, atol=1e-6)
  last = variables["params"]["Dense_1"]
  np.testing.assert_allclose(
      out.q_values, out.representation @ last["kernel"] + last["bias"],
      rtol=1e-5, atol=1e-6)
  # bool input gives the same as uint8 0/1.
  np.testing.assert_allclose(_apply(net, variables, x.astype(bool)).q_values,
                             out.q_values, rtol=1e-6)


def test_minatar_stacked_frames_merge_into_channels():
  rng = np.random.default_rng(2)
  x4 = rng.integers(0, 2, size=(2, 10, 10, 4)).astype(bool)
  net = networks.MinAtarDQNNetwork(num_actions=5)
  variables = _random_params(net, x4)
  out4 = _apply(net, variables, x4)
  out41 = _apply(net, variables, x4[..., None])          # [B, 10, 10, 4, 1]
  np.testing.assert_array_equal(out4.q_values, out41.q_values)
  np.testing.assert_array_equal(out4.representation, out41.representation)
  # [B, 10, 10, C=2, S=2] is channel-major: channel c, frame s -> c * S + s.
  x22 = x4.reshape(2, 10, 10, 2, 2)
  np.testing.assert_array_equal(_apply(net, variables, x22).q_values, out4.q_values)
  # Input channel count fixes the conv kernel: 10 channels (Seaquest) works too.
  x10 = rng.integers(0, 2, size=(1, 10, 10, 10, 2)).astype(bool)
  v10 = jax.eval_shape(net.init, jax.random.key(0), x10)
  assert v10["params"]["Conv_0"]["kernel"].shape == (3, 3, 20, 16)


@pytest.mark.parametrize("bad_shape", [
    (2, 10, 10), (10, 10, 4), (2, 8, 8, 4), (2, 4, 10, 10), (2, 10, 10, 4, 1, 1),
])
def test_minatar_wrong_shape_raises(bad_shape):
  net = networks.MinAtarDQNNetwork(num_actions=6)
  with pytest.raises(ValueError) as err:
    _init(net, jnp.zeros(bad_shape, jnp.float32))
  msg = str(err.value)
  assert "MinAtarDQNNetwork" in msg and "[B, 10, 10, C]" in msg
  assert str(tuple(bad_shape)) in msg


@pytest.mark.parametrize("cls,shape", [(networks.NatureDQNNetwork, (2, 84, 84, 4)),
                                       (networks.MinAtarDQNNetwork, (2, 10, 10, 4))])
def test_outputs_per_action_heads_are_a_reshaped_last_layer(cls, shape):
  net = cls(num_actions=3, outputs_per_action=5)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, shape), jnp.uint8)
  params = net.init(jax.random.PRNGKey(0), x)
  out = net.apply(params, x)
  assert out.head_outputs.shape == (2, 3, 5)
  last = params["params"]["Dense_1"]
  manual = (np.asarray(out.representation) @ np.asarray(last["kernel"])
            + np.asarray(last["bias"])).reshape(2, 3, 5)
  np.testing.assert_allclose(out.head_outputs, manual, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.q_values, manual.mean(-1), rtol=1e-5, atol=1e-5)
  assert cls(num_actions=3).apply(
      cls(num_actions=3).init(jax.random.PRNGKey(0), x), x).head_outputs is None
  with pytest.raises(ValueError, match="outputs_per_action"):
    cls(num_actions=3, outputs_per_action=0).init(jax.random.PRNGKey(0), x)

"""Q-networks that also return their penultimate-layer features.

Every network returns a `QNetworkOutput` holding the Q-values and the
*representation* Phi(s): the post-activation output of the last hidden layer,
i.e. the feature matrix whose effective rank (srank) Kumar et al. (2021)
"Implicit under-parameterization" track, and whose dot products DR3 (Kumar et
al. 2022) regularizes. The Q-values are a linear function of it:
`q_values = representation @ W + b` with (W, b) the parameters of the last
Dense layer.

Parameter trees use Flax's automatic names (Conv_0, Conv_1, Conv_2, Dense_0,
Dense_1), the same names as Dopamine's JAX `NatureDQNNetwork`.

Every hidden layer's post-activation output is also recorded with Flax's `sow`
(collection "intermediates"), under the name of the layer's parameter subtree, for
the per-layer diagnostics (dormant units); `hidden_activations` runs a network and
returns them. Applied as usual (the collection not mutable) a network records
nothing and computes exactly what it computes without the records.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp


class QNetworkOutput(NamedTuple):
  """Output of the Q-networks in this module.

  Attributes:
    q_values: [B, num_actions] float32.
    representation: [B, D] float32, the penultimate layer after its
      activation (D = hidden_units); the Phi of the papers.
    head_outputs: [B, num_actions, K] float32 when the network has K outputs per
      action (`outputs_per_action` > 1: C51 logits, QR-DQN quantiles, REM/ensemble
      heads), else None. q_values is then their mean over K; agents whose Q-value is
      another functional of them (C51's expectation) compute it themselves.
    kl: [B] KL(q(z|s) || N(0, I)) of the variational information bottleneck, when
      the network has one (`bottleneck='vib'`), else None.
    contrastive_query: [B, D] W^T phi(s), CURL's bilinear projection of the
      representation (so that q^T W k = contrastive_query . k), when the network
      has one (`contrastive_projection=True`), else None.
  """

  q_values: jax.Array
  representation: jax.Array
  head_outputs: Optional[jax.Array] = None
  kl: Optional[jax.Array] = None
  contrastive_query: Optional[jax.Array] = None


# Activation applied after every hidden layer, selected by name so that gin
# configs stay plain strings.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": nn.tanh,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "swish": nn.swish,
    "leaky_relu": nn.leaky_relu,  # negative_slope 0.01
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "selu": nn.selu,
    "celu": nn.celu,
    "relu6": nn.relu6,
    "identity": lambda x: x,  # linear network, for ablations
}

_PADDINGS = ("SAME", "VALID")


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """Looks up an activation by name; ValueError listing valid names if unknown."""
  try:
    return ACTIVATIONS[name]
  except (KeyError, TypeError):
    raise ValueError(
        f"Unknown activation {name!r}; valid names are {sorted(ACTIVATIONS)}."
    ) from None


# Flax's collection for values recorded during `apply` (`Module.sow`); `Module.init`
# leaves it out of the variables it returns by default, so the parameter trees (and
# checkpoints) do not change.
INTERMEDIATES = "intermediates"
_HIDDEN = "hidden_activations"


def _merge(recorded: dict, new: dict) -> dict:
  return {**recorded, **new}


def _record_hidden(module: nn.Module, layer: nn.Module, x: jax.Array) -> jax.Array:
  """Records `x`, the post-activation output of `layer` (a submodule of `module`
  already called), for `hidden_activations`; returns `x`. A no-op unless the
  "intermediates" collection is mutable."""
  module.sow(INTERMEDIATES, _HIDDEN, {layer.name: x}, init_fn=dict, reduce_fn=_merge)
  return x


def hidden_activations(network: nn.Module, variables, x: jax.Array, **kwargs
                       ) -> tuple[QNetworkOutput, dict[str, jax.Array]]:
  """`network.apply(variables, x, **kwargs)` and its hidden layers' activations.

  Returns:
    (the network's output, {layer name: post-activation output}), the layers in
    network order and named after their parameter subtree: Nature DQN {Conv_0:
    [B, 21, 21, 32], Conv_1, Conv_2, Dense_0: [B, 512]} (SAME padding), MinAtar
    {Conv_0: [B, 8, 8, 16], Dense_0: [B, 128]}, MLP {Dense_0, ..., Dense_{L-1}} with
    Dense_{L-1} the representation. The last entry is the representation layer
    (before the VIB's noise and the dropout, when there are any). Flax's
    `capture_intermediates` would record each Conv/Dense module's output, i.e. the
    pre-activations (the activations are plain functions, not modules), hence the
    explicit records. A network that records nothing gives {}. Works under jit and
    vmap (e.g. over stacked parameters of several seeds).
  """
  out, state = network.apply(variables, x, mutable=[INTERMEDIATES], **kwargs)
  recorded = state.get(INTERMEDIATES, {}).get(_HIDDEN, {})
  return out, dict(recorded)


def num_parameters(params) -> int:
  """Total number of scalars in a pytree of arrays (params or a variables dict).

  Works on concrete arrays and on `jax.ShapeDtypeStruct`s (from
  `jax.eval_shape`), so it can count without allocating.
  """
  total = 0
  for leaf in jax.tree_util.tree_leaves(params):
    size = 1
    for dim in leaf.shape:
      size *= int(dim)
    total += size
  return total


def _shape_error(network: str, expected: str, shape) -> ValueError:
  return ValueError(
      f"observation shape {tuple(shape)} does not fit {network} which takes "
      f"{expected}"
  )


def _q_head(phi: jax.Array, num_actions: int, outputs_per_action: int,
            init) -> tuple[jax.Array, Optional[jax.Array]]:
  """The last Dense layer: (q_values, None), or (mean over K, [B, A, K] outputs)."""
  if outputs_per_action < 1:
    raise ValueError(f"outputs_per_action must be >= 1, got {outputs_per_action}")
  if outputs_per_action == 1:
    return nn.Dense(features=num_actions, kernel_init=init)(phi), None
  out = nn.Dense(features=num_actions * outputs_per_action, kernel_init=init)(phi)
  out = out.reshape(phi.shape[0], num_actions, outputs_per_action)  # [B, A, K]
  return jnp.mean(out, axis=-1), out


BOTTLENECKS = ("none", "vib")


def _representation_and_head(module: nn.Module, x: jax.Array, train: bool,
                             init) -> QNetworkOutput:
  """Penultimate layer, its optional interventions, and the Q head.

  Called inside a module's compact `__call__` (so the layers are the module's own),
  with `x` the flattened torso output. `module` carries the attributes num_actions,
  hidden_units, activation, outputs_per_action, dropout_rate, bottleneck and
  contrastive_projection. Without interventions the layers are exactly
  Dense_0 (representation) and Dense_1 (head), as Dopamine's networks; the extra
  layers have explicit names so they never renumber those.

  * dropout_rate > 0: dropout on the representation before the head (empirical
    study, Gulcehre et al. 2022), active only when `train` (rng stream 'dropout').
    `representation` stays the layer's activations before dropout.
  * bottleneck='vib': variational information bottleneck (Alemi et al. 2017; the
    talk's overfitting correction, papers/004): z = mu + sigma * eps with
    mu = the representation layer's activations and sigma = softplus(a separate
    Dense of the torso output); the head reads z when `train` (rng stream
    'bottleneck') and mu otherwise; `kl` = KL(N(mu, sigma^2) || N(0, I)) per sample.
    `representation` is what the head reads.
  * contrastive_projection: also returns W^T phi for CURL's bilinear similarity.
  """
  act = get_activation(module.activation)
  if not 0.0 <= module.dropout_rate < 1.0:
    raise ValueError(f"{type(module).__name__}.dropout_rate must be in [0, 1), got "
                     f"{module.dropout_rate}")
  if module.bottleneck not in BOTTLENECKS:
    raise ValueError(f"{type(module).__name__}.bottleneck must be one of {BOTTLENECKS}, "
                     f"got {module.bottleneck!r}")
  representation_layer = nn.Dense(features=module.hidden_units, kernel_init=init)
  phi = _record_hidden(module, representation_layer, act(representation_layer(x)))
  kl = None
  if module.bottleneck == "vib":
    sigma = nn.softplus(nn.Dense(features=module.hidden_units, kernel_init=init,
                                 name="vib_scale")(x)) + 1e-6
    kl = 0.5 * jnp.sum(phi**2 + sigma**2 - 1.0 - 2.0 * jnp.log(sigma), axis=-1)
    if train:
      phi = phi + sigma * jax.random.normal(module.make_rng("bottleneck"), phi.shape)
  query = None
  if module.contrastive_projection:
    query = nn.Dense(features=module.hidden_units, use_bias=False, kernel_init=init,
                     name="curl_bilinear")(phi)
  head_in = phi
  if module.dropout_rate > 0:
    head_in = nn.Dropout(rate=module.dropout_rate, deterministic=not train)(phi)
  q_values, head_outputs = _q_head(head_in, module.num_actions, module.outputs_per_action,
                                   init)
  return QNetworkOutput(q_values=q_values, representation=phi, head_outputs=head_outputs,
                        kl=kl, contrastive_query=query)


@gin.configurable
class NatureDQNNetwork(nn.Module):
  """The Nature DQN network (Mnih et al. 2015), Dopamine JAX flavour.

  conv 32 8x8/4 -> conv 64 4x4/2 -> conv 64 3x3/1 -> flatten
  -> Dense(hidden_units) [= representation] -> Dense(num_actions),
  with `activation` after every hidden layer and Xavier-uniform kernels, zero
  biases, as in `dopamine/jax/networks.py`.

  Attributes:
    num_actions: number of Q-value outputs.
    padding: "SAME" (Dopamine's JAX default: torso output 11x11x64 = 7744
      features, ~4.05M parameters with 6 actions) or "VALID" (Nature paper:
      7x7x64 = 3136, ~1.69M parameters).
    hidden_units: width D of the representation layer.
    outputs_per_action: K outputs per action (51 C51 atoms, 200 QR-DQN quantiles,
      REM heads); 1 for DQN.
    activation: key of `ACTIVATIONS`.
    dropout_rate: dropout on the representation before the head (train only).
    bottleneck: "none", or "vib" (variational information bottleneck).
    contrastive_projection: add CURL's bilinear matrix W (`contrastive_query`).
  """

  num_actions: int
  padding: str = "SAME"
  hidden_units: int = 512
  outputs_per_action: int = 1
  activation: str = "relu"
  dropout_rate: float = 0.0
  bottleneck: str = "none"
  contrastive_projection: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> QNetworkOutput:
    """Args: x: [B, 84, 84, 4] raw pixels (uint8, or any dtype holding 0..255).

    Returns: QNetworkOutput with q_values [B, num_actions] and representation
    [B, hidden_units], both float32.
    """
    if x.ndim != 4 or tuple(x.shape[1:]) != (84, 84, 4):
      raise _shape_error(type(self).__name__, "[B, 84, 84, 4]", x.shape)
    if self.padding not in _PADDINGS:
      raise ValueError(
          f"{type(self).__name__}: padding must be one of {_PADDINGS}, got "
          f"{self.padding!r}"
      )
    act = get_activation(self.activation)
    init = nn.initializers.xavier_uniform()
    # Always rescale (whatever the dtype), as Dopamine's preprocess_atari_inputs.
    x = x.astype(jnp.float32) / 255.0
    for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
      conv = nn.Conv(
          features=features,
          kernel_size=(kernel, kernel),
          strides=(stride, stride),
          padding=self.padding,
          kernel_init=init,
      )
      x = _record_hidden(self, conv, act(conv(x)))
    x = x.reshape((x.shape[0], -1))  # row-major (H, W, C) flatten per example
    return _representation_and_head(self, x, train, init)


@gin.configurable
class MinAtarDQNNetwork(nn.Module):
  """The MinAtar network (Young & Tian 2019).

  conv `conv_features` 3x3/1 VALID -> flatten -> Dense(hidden_units)
  [= representation] -> Dense(num_actions), `activation` after every hidden
  layer. Kernels are Xavier-uniform with zero biases (as the Atari network;
  the MinAtar paper used PyTorch's default init).

  Attributes:
    num_actions: number of Q-value outputs.
    conv_features: channels of the convolution.
    hidden_units: width D of the representation layer.
    outputs_per_action: K outputs per action (51 C51 atoms, 200 QR-DQN quantiles,
      REM heads); 1 for DQN.
    activation: key of `ACTIVATIONS`.
    dropout_rate: dropout on the representation before the head (train only).
    bottleneck: "none", or "vib" (variational information bottleneck).
    contrastive_projection: add CURL's bilinear matrix W (`contrastive_query`).
  """

  num_actions: int
  conv_features: int = 16
  hidden_units: int = 128
  outputs_per_action: int = 1
  activation: str = "relu"
  dropout_rate: float = 0.0
  bottleneck: str = "none"
  contrastive_projection: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> QNetworkOutput:
    """Args: x: [B, 10, 10, C] or [B, 10, 10, C, S] (S stacked frames), 0/1
    valued (bool, uint8 or float). A stacked input is merged to
    [B, 10, 10, C * S] (channel-major, frame-minor). No /255: the values are
    already 0/1.

    Returns: QNetworkOutput with q_values [B, num_actions] and representation
    [B, hidden_units], both float32.
    """
    if x.ndim not in (4, 5) or tuple(x.shape[1:3]) != (10, 10):
      raise _shape_error(
          type(self).__name__, "[B, 10, 10, C] or [B, 10, 10, C, S]", x.shape
      )
    act = get_activation(self.activation)
    init = nn.initializers.xavier_uniform()
    x = x.astype(jnp.float32)
    if x.ndim == 5:
      x = x.reshape(x.shape[:3] + (x.shape[3] * x.shape[4],))
    conv = nn.Conv(
        features=self.conv_features,
        kernel_size=(3, 3),
        strides=(1, 1),
        padding="VALID",
        kernel_init=init,
    )
    x = _record_hidden(self, conv, act(conv(x)))
    x = x.reshape((x.shape[0], -1))
    return _representation_and_head(self, x, train, init)


@gin.configurable
class MLPQNetwork(nn.Module):
  """A multilayer perceptron for vector observations (classic control, bsuite).

  flatten -> Dense(hidden_sizes[0]) -> ... -> Dense(hidden_sizes[-1])
  [= representation] -> Dense(num_actions), `activation` after every hidden layer,
  Xavier-uniform kernels and zero biases (as the other networks here). The input is
  used as it is (cast to float32, not rescaled).

  Attributes:
    num_actions: number of Q-value outputs.
    hidden_sizes: widths of the hidden layers; the last one is the representation
      layer, so D = hidden_sizes[-1].
    outputs_per_action: K outputs per action (51 C51 atoms, 200 QR-DQN quantiles,
      REM heads); 1 for DQN.
    activation: key of `ACTIVATIONS`.
    dropout_rate: dropout on the representation before the head (train only).
    bottleneck: "none", or "vib" (variational information bottleneck).
    contrastive_projection: add CURL's bilinear matrix W (`contrastive_query`).
    kernel_init: key of `KERNEL_INITS`: "xavier_uniform" (default), or "he_normal"
      / "he_uniform" (He et al. 2015, the empirical study's depth experiment).
  """

  num_actions: int
  hidden_sizes: tuple[int, ...] = (64, 64)
  outputs_per_action: int = 1
  activation: str = "relu"
  dropout_rate: float = 0.0
  bottleneck: str = "none"
  contrastive_projection: bool = False
  kernel_init: str = "xavier_uniform"

  @property
  def hidden_units(self) -> int:
    """Width of the representation layer (what `_representation_and_head` builds)."""
    return int(tuple(self.hidden_sizes)[-1])

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> QNetworkOutput:
    """Args: x: [B, *observation_shape, S], e.g. [B, 4, 1] for CartPole states (one
    float32 observation (4,) stacked on the trailing axis), of any numeric dtype. Each
    state is flattened (row-major: observation-major, frame-minor).

    Returns: QNetworkOutput with q_values [B, num_actions] and representation
    [B, hidden_sizes[-1]], both float32.
    """
    sizes = tuple(int(h) for h in self.hidden_sizes)
    if not sizes or min(sizes) < 1:
      raise ValueError(f"{type(self).__name__}.hidden_sizes must be a non-empty sequence "
                       f"of positive widths, got {self.hidden_sizes!r}")
    if x.ndim < 2:
      raise _shape_error(type(self).__name__, "[B, *observation_shape, S]", x.shape)
    act = get_activation(self.activation)
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f"{type(self).__name__}.kernel_init must be one of "
                       f"{sorted(KERNEL_INITS)}, got {self.kernel_init!r}")
    init = KERNEL_INITS[self.kernel_init]
    x = x.astype(jnp.float32).reshape((x.shape[0], -1))
    for features in sizes[:-1]:
      dense = nn.Dense(features=features, kernel_init=init)
      x = _record_hidden(self, dense, act(dense(x)))
    return _representation_and_head(self, x, train, init)


KERNEL_INITS = {"xavier_uniform": nn.initializers.xavier_uniform(),
                "he_normal": nn.initializers.he_normal(),
                "he_uniform": nn.initializers.he_uniform()}


@gin.configurable
def mlp_hidden_sizes(depth: int = 2, width: int = 64,
                     bottleneck: Optional[int] = None) -> tuple[int, ...]:
  """`MLPQNetwork.hidden_sizes` of `depth` hidden layers of `width` units, the last
  (the representation, the penultimate layer) `bottleneck` units wide if given: the
  empirical study's bsuite networks (depth 1, 2, 4, 8; its bottleneck experiments).

  Raises:
    ValueError naming the binding: depth below 1, a width below 1, a bottleneck below 1
    or wider than the layer below it.
  """
  if int(depth) < 1:
    raise ValueError(f"`mlp_hidden_sizes.depth` = {depth}: an MLP Q-network needs at "
                     "least one hidden layer (its representation).")
  if int(width) < 1:
    raise ValueError(f"`mlp_hidden_sizes.width` = {width}: widths are positive.")
  sizes = [int(width)] * int(depth)
  if bottleneck is not None:
    if int(bottleneck) < 1:
      raise ValueError(f"`mlp_hidden_sizes.bottleneck` = {bottleneck}: widths are positive.")
    if depth > 1 and int(bottleneck) > int(width):
      raise ValueError(
          f"`mlp_hidden_sizes.bottleneck` = {bottleneck} is wider than the layer below it "
          f"(`mlp_hidden_sizes.width` = {width}): a bottleneck is at most as wide as "
          "the layer it narrows.")
    sizes[-1] = int(bottleneck)
  return tuple(sizes)

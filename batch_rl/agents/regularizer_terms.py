"""Regularisers as gin-configurable loss terms that any agent adds to its loss.

Each term reads `LossInputs` (the online network's outputs that the agent's loss has
already computed) and returns (coefficient * penalty, {tag: penalty}). The penalties
themselves are the pure functions of batch_rl/regularizers.py. In gin, by name for
every agent (what the files in gin_configs/regularizers/ do, so they stack):

  regularization.lp = @LpRegularizer()
  LpRegularizer.coefficient = 0.001

or per agent: `DQNAgent.regularizers = [@LpRegularizer(), @DR3Regularizer()]`.

Terms: LpRegularizer (IUP), DR3Regularizer (DR3), CQLRegularizer (CQL(H)) and the
empirical study's auxiliary losses CURLRegularizer and VIBRegularizer. Dropout on the
penultimate layer is a network attribute (`NatureDQNNetwork.dropout_rate`), and SAM an
optimizer wrapper (`create_optimizer.sam_rho`).
"""
import dataclasses
from typing import Any, Callable, Optional, Protocol

import gin
import jax
import jax.numpy as jnp

from batch_rl import augmentation
from batch_rl import regularizers


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """Online-network quantities of one minibatch, shared by the loss and regularisers.

  Attributes:
    q_values: [B, A] Q-values at s (expected values for distributional agents).
    phi: [B, D] penultimate features at s.
    phi_next: [B, D] penultimate features at s' with the online parameters, or None
      when no term asked for them.
    action: int [B] dataset actions.
    next_action: int [B] the action the agent's backup uses at s' (argmax for
      Q-learning, the dataset's next action for SARSA, a policy's for FQE).
    terminal: bool [B] whether s' is terminal.
    state: [B, ...] the minibatch's states (uint8), for terms that augment them.
    kl: [B] the network's VIB KL term, or None without a bottleneck.
    forward: (states, key or None) -> QNetworkOutput of the online parameters
      (differentiable; a key turns on dropout/VIB sampling).
    target_forward: states -> QNetworkOutput of the target parameters.
  """

  q_values: jax.Array
  phi: jax.Array
  phi_next: Optional[jax.Array]
  action: jax.Array
  next_action: jax.Array
  terminal: jax.Array
  state: Optional[jax.Array] = None
  kl: Optional[jax.Array] = None
  forward: Optional[Callable[..., Any]] = None
  target_forward: Optional[Callable[..., Any]] = None


@gin.configurable
def regularization(**terms: "Regularizer") -> tuple["Regularizer", ...]:
  """Regularisers bound by name, added to every agent's (and the gridworld FQI's) own.

  One file per regulariser binds one name, so files stack on any domain and agent:

    regularization.lp = @LpRegularizer()      # gin_configs/regularizers/lp.gin
    regularization.dr3 = @DR3Regularizer()    # gin_configs/regularizers/dr3.gin

  Terms are applied in the order of their names (deterministic, whatever the order of
  the files).
  """
  return tuple(terms[name] for name in sorted(terms))


class Regularizer(Protocol):
  """A loss term: `term(inputs, key) -> (weighted value, {tag: unweighted value})`.

  `needs_next_representation` asks the agent for phi(s'); an optional
  `network_options` dict asks for network attributes (e.g. {'bottleneck': 'vib'});
  `supports_continuous_actions` (absent: False) says the term reads only phi, phi_next,
  the actions' match and the terminals, so an actor-critic agent can add it with
  phi = phi(s, a) (agents/sac.py).
  """

  needs_next_representation: bool

  def __call__(self, inputs: LossInputs,
               key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...


@gin.configurable
class LpRegularizer:
  """IUP Section 5: alpha * (sigma_max(Phi)^2 - sigma_min(Phi)^2), alpha = 0.001.

  Args:
    coefficient: alpha.
    method: 'svd' (differentiate through the SVD) or 'gram' (extreme eigenvectors of
      the Gram matrix; same value and gradient, cheaper on CPU): regularizers.lp_penalty.
  """

  needs_next_representation = False
  supports_continuous_actions = True

  def __init__(self, coefficient: float = 0.001, method: str = "svd"):
    regularizers.check_coefficient("LpRegularizer.coefficient", coefficient)
    if method not in regularizers.LP_METHODS:
      raise ValueError(f"`LpRegularizer.method` must be one of {regularizers.LP_METHODS}, "
                       f"got {method!r}.")
    self.coefficient = coefficient
    self.method = method

  def __call__(self, inputs, key=None):
    del key  # Deterministic.
    penalty = regularizers.lp_penalty(inputs.phi, method=self.method)
    return self.coefficient * penalty, {"Train/LpPenalty": penalty}


@gin.configurable
class DR3Regularizer:
  """DR3: c0 * phi(s,a)^T phi(s',a') with a' from the agent's backup.

  Args:
    coefficient: c0 (Dopamine's lab uses 0.1 with its variant).
    variant: a name in regularizers.DR3_VARIANTS ('paper', 'dopamine_lab', ...).
  """

  needs_next_representation = True
  supports_continuous_actions = True

  def __init__(self, coefficient: float = 0.1, variant: str = "paper"):
    regularizers.check_coefficient("DR3Regularizer.coefficient", coefficient)
    self.coefficient = coefficient
    self.config = regularizers.dr3_config(variant)

  def __call__(self, inputs, key=None):
    del key  # Deterministic.
    penalty = regularizers.dr3_penalty(
        inputs.phi, inputs.phi_next, action=inputs.action, next_action=inputs.next_action,
        num_actions=inputs.q_values.shape[-1], terminal=inputs.terminal, config=self.config)
    return self.coefficient * penalty, {"Train/DR3": penalty}


@gin.configurable
class CQLRegularizer:
  """CQL(H) for discrete actions: alpha * E[logsumexp_a Q(s,a) - Q(s, a_data)].

  The CQL Atari code used alpha = 4.0 with 1% of the data and 1.0 with 10%.
  """

  needs_next_representation = False

  def __init__(self, coefficient: float = 1.0, temperature: float = 1.0):
    regularizers.check_coefficient("CQLRegularizer.coefficient", coefficient)
    if not temperature > 0:
      raise ValueError(f"`CQLRegularizer.temperature` must be > 0, got {temperature}.")
    self.coefficient = coefficient
    self.temperature = temperature

  def __call__(self, inputs, key=None):
    del key  # Deterministic.
    penalty = regularizers.cql_penalty(inputs.q_values, inputs.action, self.temperature)
    return self.coefficient * penalty, {"Train/CQLLoss": penalty}


@gin.configurable
class CURLRegularizer:
  """CURL (Laskin et al. 2020) as an auxiliary loss, as in the empirical study (Sec. 8.2).

  weight * InfoNCE over the minibatch: two random-shift views of each state s_i
  (replicate-pad by `pad` pixels, random crop back; DrQ's augmentation), a query
  q_i = W^T phi(view1(s_i)) from the online network (W is the network's
  `curl_bilinear` layer, added when this term is on) and a key k_j = phi(view2(s_j))
  without gradient; logits_ij = q_i . k_j - max_j, loss = mean_i CE(logits_i, i): the
  other states of the minibatch are the negatives.

  CURL's key encoder is a momentum (EMA, tau = 0.05 per step, i.e. a ~20-step
  average) copy of the online encoder; this codebase's state holds no EMA, so the
  keys come from the online encoder under stop_gradient (`key_encoder='online'`, the
  tau -> 1 limit) or from the periodically copied target network
  (`key_encoder='target'`). The encoder is the network up to its representation
  (CURL's own Atari encoder ends in a linear layer to a small latent instead).

  Args:
    weight: loss weight (the empirical study swept it; its Table 3 compares 0 and
      0.001).
    pad: pixels of the random shift, or None (default) to derive it from the frame
      size: `default_pad(min(H, W))` of the minibatch's [B, H, W, ...] states, i.e.
      CURL's 4 pixels on 84x84 Atari frames scaled to the frame (at least 1; 1 on
      10x10 MinAtar). The frame size is known when the loss is traced, so one gin
      file serves every domain.
    key_encoder: 'online' (stop-gradient) or 'target'.
  """

  needs_next_representation = False
  network_options = {"contrastive_projection": True}
  KEY_ENCODERS = ("online", "target")

  @staticmethod
  def default_pad(frame_size: int) -> int:
    """CURL's 4-pixel shift on 84-pixel frames, scaled to `frame_size`, at least 1."""
    return max(1, round(frame_size * 4 / 84))

  def __init__(self, weight: float = 0.001, pad: Optional[int] = None,
               key_encoder: str = "online"):
    regularizers.check_coefficient("CURLRegularizer.weight", weight)
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
      raise ValueError(f"`CURLRegularizer.pad` must be None or an int >= 0, got {pad!r}.")
    if key_encoder not in self.KEY_ENCODERS:
      raise ValueError(f"`CURLRegularizer.key_encoder` must be one of {self.KEY_ENCODERS}, "
                       f"got {key_encoder!r}.")
    self.weight = weight
    self.pad = pad
    self.key_encoder = key_encoder

  def __call__(self, inputs, key):
    query_view_key, key_view_key, forward_key = jax.random.split(key, 3)
    pad = self.pad if self.pad is not None else self.default_pad(min(inputs.state.shape[1:3]))
    query_view = augmentation.random_shift(inputs.state, query_view_key, pad)
    key_view = augmentation.random_shift(inputs.state, key_view_key, pad)
    query = inputs.forward(query_view, forward_key).contrastive_query
    if self.key_encoder == "online":
      keys = inputs.forward(key_view, None).representation
    else:
      keys = inputs.target_forward(key_view).representation
    loss = regularizers.info_nce(query, jax.lax.stop_gradient(keys))
    return self.weight * loss, {"Train/CURLLoss": loss}


@gin.configurable
class VIBRegularizer:
  """Variational information bottleneck on the penultimate features (slides, papers/004).

  Turns the network's representation into a Gaussian sample z = mu + sigma * eps
  while training (`bottleneck='vib'`, see networks.py) and adds
  beta * E_s[KL(N(mu(s), sigma(s)^2) || N(0, I))].

  Args:
    beta: KL weight.
  """

  needs_next_representation = False
  network_options = {"bottleneck": "vib"}

  def __init__(self, beta: float = 1e-3):
    regularizers.check_coefficient("VIBRegularizer.beta", beta)
    self.beta = beta

  def __call__(self, inputs, key=None):
    del key  # The sample was drawn in the forward pass.
    kl = jnp.mean(inputs.kl)
    return self.beta * kl, {"Train/VIBKL": kl}


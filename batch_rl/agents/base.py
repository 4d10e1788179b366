"""The agent contracts: what a runner may use of an agent, written down.

Runners (batch_rl/runners/) and diagnostics read an agent only through these names.
Two kinds: `Agent`, over discrete actions (every value-based agent subclasses
`common.ValueAgent`, which provides `init`, `apply`, `act`, `evaluation_act` and
`backup_next_action` and the hyperparameter attributes; an agent adds its `loss`),
and `ContinuousAgent`, over a box of action vectors (actor-critic agents: sac.py).
A new agent joins by satisfying one of them (checked with `isinstance`, runtime-
checkable Protocols, when a runner builds it); its class attribute
`continuous_actions` says which, so that a runner refuses an agent of the wrong kind
for its environment before building it.
"""
from typing import Any, Optional, Protocol, runtime_checkable

import jax
import optax

from batch_rl.agents import learner


class _Hyperparameters(Protocol):
  """The attributes both kinds of agent have (documented on `Agent`)."""

  continuous_actions: bool
  gamma: float
  update_horizon: int
  batch_size: int
  target_update_period: int
  target_update_tau: Optional[float]
  optimizer: optax.GradientTransformation
  regularizers: tuple
  supports_prioritized_replay: bool


@runtime_checkable
class Agent(_Hyperparameters, Protocol):
  """A value-based agent: structure plus pure functions of (params, inputs).

  Attributes:
    num_actions: actions are the ints in [0, num_actions).
    gamma: discount of the backup (and of the data's returns-to-go).
    update_horizon: n of the n-step returns its batches carry.
    batch_size: transitions per gradient step.
    target_update_period: gradient steps between target-network copies.
    optimizer: the optax transformation `loss` is minimised with.
    regularizers: the loss terms it adds (regularizer_terms), for the record.
    continuous_actions: False.
    target_update_tau: None (the target is copied every target_update_period steps),
      or tau: target <- (1 - tau) target + tau online every target_update_period steps
      (Polyak averaging, as SAC).
    supports_prioritized_replay: its loss weights each sample's loss by the batch's
      `weight` (learner.weighted_mean), so prioritized replay can train it; the
      per-sample losses that become priorities are d loss / d weight (learner).
  """

  num_actions: int

  def init(self, key: jax.Array, state_shape: tuple[int, ...]) -> learner.TrainState:
    """A fresh TrainState for agent states of `state_shape` (one state, no batch)."""

  def loss(self, params: Any, target_params: Any, batch: Any,
           key: jax.Array) -> tuple[jax.Array, learner.Metrics]:
    """(scalar loss, {TensorBoard tag: scalar}) on a `sampler.Transition` batch."""

  def apply(self, params: Any, states: jax.Array, key: Optional[jax.Array] = None) -> Any:
    """networks.QNetworkOutput: q_values [B, A] and the penultimate `representation`
    [B, D] (the Phi of every diagnostic and regulariser)."""

  def act(self, params: Any, states: jax.Array, key: jax.Array,
          epsilon: float) -> jax.Array:
    """int32 [B] epsilon-greedy actions; `key` is one key or one per row."""

  def evaluation_act(self, params: Any, states: jax.Array, key: jax.Array,
                     epsilon: float) -> jax.Array:
    """The evaluation's policy (for these agents `act` itself)."""

  def backup_next_action(self, params: Any, target_params: Any, batch: Any,
                         key: jax.Array) -> jax.Array:
    """int32 [B]: the a' the backup uses at s' (diagnostics and DR3 read it)."""


@runtime_checkable
class ContinuousAgent(_Hyperparameters, Protocol):
  """An actor-critic agent over a box of action vectors.

  Attributes:
    action_spec: environments.specs.BoxActionSpec of the actions it takes and emits.
    continuous_actions: True.
    gamma, update_horizon, batch_size, target_update_period, target_update_tau,
      optimizer, regularizers, supports_prioritized_replay: as `Agent`.
  """

  action_spec: Any

  def init(self, key: jax.Array, state_shape: Any) -> learner.TrainState:
    """A fresh TrainState for agent states of `state_shape` (one state, no batch)."""

  def loss(self, params: Any, target_params: Any, batch: Any,
           key: jax.Array) -> tuple[jax.Array, learner.Metrics]:
    """(scalar loss, {TensorBoard tag: scalar}) on a `sampler.Transition` batch whose
    actions are float32 [B, *action_spec.shape] in the box."""

  def apply(self, params: Any, states: jax.Array, key: Optional[jax.Array] = None,
            actions: Optional[jax.Array] = None) -> Any:
    """networks.QNetworkOutput of the critic at (states, actions): q_values [B, 1] and
    the penultimate `representation` phi(s, a) [B, D] (the Phi of every diagnostic and
    regulariser); `actions` None: the policy's deterministic action."""

  def act(self, params: Any, states: jax.Array, key: jax.Array,
          epsilon: float) -> jax.Array:
    """float32 [B, *action_spec.shape] training actions: a sample of the policy, and
    with probability epsilon a uniform action in the box (the online runner's warm-up
    is epsilon 1); `key` is one key or one per row."""

  def evaluation_act(self, params: Any, states: jax.Array, key: jax.Array,
                     epsilon: float) -> jax.Array:
    """The evaluation's actions: the policy's deterministic (mean) action, uniform in
    the box with probability epsilon."""

  def backup_next_action(self, params: Any, target_params: Any, batch: Any,
                         key: jax.Array) -> jax.Array:
    """float32 [B, *action_spec.shape]: the a' ~ pi(.|s') the backup uses."""


_COMMON = ("continuous_actions", "gamma", "update_horizon", "batch_size",
           "target_update_period", "target_update_tau", "optimizer", "regularizers",
           "supports_prioritized_replay", "init", "loss", "apply", "act",
           "evaluation_act", "backup_next_action")


def check_agent(agent: Any, binding: str) -> None:
  """Raises TypeError naming `binding` when `agent` satisfies neither contract."""
  continuous = getattr(agent, "continuous_actions", False)
  if isinstance(agent, ContinuousAgent if continuous else Agent):
    return
  names = ("action_spec",) if continuous else ("num_actions",)
  missing = [name for name in names + _COMMON if not hasattr(agent, name)]
  contract = "ContinuousAgent" if continuous else "Agent"
  raise TypeError(f"`{binding}` built a {type(agent).__name__}, which lacks {missing} of "
                  f"the {contract} contract (batch_rl/agents/base.py).")

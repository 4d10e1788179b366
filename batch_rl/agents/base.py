"""The agent contract: what a runner may use of an agent, written down.

Runners (batch_rl/runners/) and diagnostics read an agent only through these names.
Every agent here subclasses `common.ValueAgent`, which provides `init`, `apply`, `act`
and `backup_next_action` and the hyperparameter attributes; an agent adds its `loss`.
A new agent joins by satisfying `Agent` (checked with `isinstance`, a
runtime-checkable Protocol, when a runner builds it).
"""
from typing import Any, Optional, Protocol, runtime_checkable

import jax
import optax

from batch_rl.agents import learner


@runtime_checkable
class Agent(Protocol):
  """A value-based agent: structure plus pure functions of (params, inputs).

  Attributes:
    num_actions: actions are the ints in [0, num_actions).
    gamma: discount of the backup (and of the data's returns-to-go).
    update_horizon: n of the n-step returns its batches carry.
    batch_size: transitions per gradient step.
    target_update_period: gradient steps between target-network copies.
    optimizer: the optax transformation `loss` is minimised with.
    regularizers: the loss terms it adds (regularizer_terms), for the record.
    supports_prioritized_replay: its loss weights each sample's loss by the batch's
      `weight` (learner.weighted_mean), so prioritized replay can train it; the
      per-sample losses that become priorities are d loss / d weight (learner).
  """

  num_actions: int
  gamma: float
  update_horizon: int
  batch_size: int
  target_update_period: int
  optimizer: optax.GradientTransformation
  regularizers: tuple
  supports_prioritized_replay: bool

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

  def backup_next_action(self, params: Any, target_params: Any, batch: Any,
                         key: jax.Array) -> jax.Array:
    """int32 [B]: the a' the backup uses at s' (diagnostics and DR3 read it)."""


def check_agent(agent: Any, binding: str) -> None:
  """Raises TypeError naming `binding` when `agent` does not satisfy `Agent`."""
  if isinstance(agent, Agent):
    return
  missing = [name for name in ("num_actions", "gamma", "update_horizon", "batch_size",
                               "target_update_period", "optimizer", "regularizers",
                               "supports_prioritized_replay",
                               "init", "loss", "apply", "act", "backup_next_action")
             if not hasattr(agent, name)]
  raise TypeError(f"`{binding}` built a {type(agent).__name__}, which lacks {missing} of "
                  "the agent contract (batch_rl/agents/base.py).")

"""Regularisers as gin-configurable loss terms that any agent adds to its loss.

Each term reads `LossInputs` (the online network's outputs that the agent's loss has
already computed) and returns (coefficient * penalty, {tag: penalty}). The penalties
themselves are the pure functions of batch_rl/regularizers.py. In gin:

  DQNAgent.regularizers = [@LpRegularizer(), @DR3Regularizer()]
  LpRegularizer.coefficient = 0.001
  DR3Regularizer.variant = 'paper'
"""
import dataclasses
from typing import Optional, Protocol

import gin
import jax

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
  """

  q_values: jax.Array
  phi: jax.Array
  phi_next: Optional[jax.Array]
  action: jax.Array
  next_action: jax.Array
  terminal: jax.Array


class Regularizer(Protocol):
  needs_next_representation: bool

  def __call__(self, inputs: LossInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...


@gin.configurable
class LpRegularizer:
  """IUP Section 5: alpha * (sigma_max(Phi)^2 - sigma_min(Phi)^2), alpha = 0.001."""

  needs_next_representation = False

  def __init__(self, coefficient: float = 0.001):
    regularizers.check_coefficient("LpRegularizer.coefficient", coefficient)
    self.coefficient = coefficient

  def __call__(self, inputs):
    penalty = regularizers.lp_penalty(inputs.phi)
    return self.coefficient * penalty, {"Train/LpPenalty": penalty}


@gin.configurable
class DR3Regularizer:
  """DR3: c0 * phi(s,a)^T phi(s',a') with a' from the agent's backup.

  Args:
    coefficient: c0 (Dopamine's lab uses 0.1 with its variant).
    variant: a name in regularizers.DR3_VARIANTS ('paper', 'dopamine_lab', ...).
  """

  needs_next_representation = True

  def __init__(self, coefficient: float = 0.1, variant: str = "paper"):
    regularizers.check_coefficient("DR3Regularizer.coefficient", coefficient)
    self.coefficient = coefficient
    self.config = regularizers.dr3_config(variant)

  def __call__(self, inputs):
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

  def __call__(self, inputs):
    penalty = regularizers.cql_penalty(inputs.q_values, inputs.action, self.temperature)
    return self.coefficient * penalty, {"Train/CQLLoss": penalty}

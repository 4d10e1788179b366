"""Pieces every agent's loss and policy share, written once.

Agents are not a subclass chain: DQNAgent, C51Agent, QRDQNAgent, MultiHeadDQNAgent
and BCAgent each compose these functions with their own target and loss.
"""
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from batch_rl import networks
from batch_rl import validation
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms


class RepresentationError(ValueError):
  """The agent's network does not return the penultimate features Phi."""


StateSpec = Union[Sequence[int], jax.ShapeDtypeStruct]


def state_spec(state_shape: tuple[int, ...], dtype=jnp.uint8) -> StateSpec:
  """What `init` takes for one agent state of `state_shape` and `dtype`.

  uint8 states (Atari, MinAtar) are given by their shape alone; other dtypes (float32
  vector observations) as a `jax.ShapeDtypeStruct`.
  """
  if jnp.dtype(dtype) == jnp.uint8:
    return tuple(state_shape)
  return jax.ShapeDtypeStruct(tuple(state_shape), jnp.dtype(dtype))


def shape_and_dtype(state: StateSpec) -> tuple[tuple[int, ...], jnp.dtype]:
  """(shape, dtype) of one agent state: a shape means uint8 states."""
  if isinstance(state, jax.ShapeDtypeStruct):
    return tuple(state.shape), jnp.dtype(state.dtype)
  return tuple(state), jnp.dtype(jnp.uint8)


def init_state(network, optimizer: optax.GradientTransformation, key: jax.Array,
               state_shape: StateSpec) -> learner.TrainState:
  """Fresh TrainState for a Flax `network` on states of `state_shape`: a shape (uint8
  states) or a `jax.ShapeDtypeStruct` of one state (see `state_spec`)."""
  init_key, rng = jax.random.split(key)
  shape, dtype = shape_and_dtype(state_shape)
  params = network.init(init_key, jnp.zeros((1,) + shape, dtype))
  return learner.init_train_state(params, optimizer, rng)


def is_key_batch(key: jax.Array) -> bool:
  """Whether `key` is a batch of PRNG keys ([B] typed keys or [B, 2] raw ones)."""
  typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
  return key.ndim == (1 if typed else 2)


def epsilon_greedy(q_values: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
  """int32 [B] actions: argmax of q_values [B, A], uniform with probability epsilon.

  Dopamine's rule: a random action when u <= epsilon. `key` is one key for the whole
  batch, or a batch of B keys, one per row: then row b's draws depend only on key b, so
  a row's action does not depend on the batch it is in (batched evaluation).
  """
  greedy = jnp.argmax(q_values, axis=1).astype(jnp.int32)
  num_actions = q_values.shape[-1]
  if is_key_batch(key):
    def draw(row_key):
      explore_key, action_key = jax.random.split(row_key)
      return (jax.random.uniform(explore_key) <= epsilon,
              jax.random.randint(action_key, (), 0, num_actions))
    explore, random_action = jax.vmap(draw)(key)
  else:
    explore_key, action_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key, greedy.shape) <= epsilon
    random_action = jax.random.randint(action_key, greedy.shape, 0, num_actions)
  return jnp.where(explore, random_action, greedy)


def needs_next_online(double_dqn: bool,
                      regularizers: Sequence[regularizer_terms.Regularizer]) -> bool:
  """Whether the loss needs the online network at s' (double DQN, or e.g. DR3)."""
  return double_dqn or any(r.needs_next_representation for r in regularizers)


def online_outputs(apply_fn, params: Any, batch, with_next: bool,
                   key: Optional[jax.Array] = None
                   ) -> tuple[networks.QNetworkOutput, Optional[networks.QNetworkOutput]]:
  """Online outputs at s and, if `with_next`, at s' (one forward pass over both).

  `key` turns on the network's stochastic interventions (dropout, VIB sampling).
  """
  if not with_next:
    return apply_fn(params, batch.state, key), None
  batch_size = batch.state.shape[0]
  both = apply_fn(params, jnp.concatenate([batch.state, batch.next_state]), key)
  return (jax.tree.map(lambda x: x[:batch_size], both),
          jax.tree.map(lambda x: x[batch_size:], both))


def greedy_next_action(double_dqn: bool, next_online, target_out) -> jax.Array:
  """int32 [B] a' = argmax_a Q(s', a) of the online network (double DQN) or the target."""
  source = next_online if double_dqn else target_out
  return jnp.argmax(source.q_values, axis=1).astype(jnp.int32)


def split_loss_key(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(forward, regularisers, agent) keys from a loss's key, the same way for all."""
  forward_key, regularizer_key, agent_key = jax.random.split(key, 3)
  return forward_key, regularizer_key, agent_key


def select_head(head_outputs: jax.Array, action: jax.Array) -> jax.Array:
  """head_outputs[b, action[b], :] for [B, A, K] and int [B] -> [B, K]."""
  index = action.astype(jnp.int32)[:, None, None]
  return jnp.take_along_axis(head_outputs, index, axis=1)[:, 0, :]


class ValueAgent:
  """Structure every agent here shares; each agent subclasses only this.

  An agent's constructor keeps its own gin-configurable signature and calls `_setup`
  with the common hyperparameters; `init`, `apply` and `act` then come from here
  (an agent whose Q-value is not the network's `q_values`, like C51, overrides
  `apply`).
  """

  # Whether the loss weights each sample by a prioritized batch's `weight`.
  supports_prioritized_replay = False
  # Discrete actions (runners pass `num_actions`); agents/base.py's ContinuousAgent
  # is the other kind.
  continuous_actions = False
  # The target network is copied every `target_update_period` steps, not averaged.
  target_update_tau = None

  def _setup(self, *, num_actions: int, network, optimizer_fn, gamma: float,
             update_horizon: int, batch_size: int, target_update_period: int,
             regularizers: Sequence[regularizer_terms.Regularizer],
             double_dqn: bool = False, outputs_per_action: int = 1) -> None:
    owner = type(self).__name__
    validation.check_int_at_least(f"{owner}.batch_size", batch_size, 1)
    validation.check_int_at_least(f"{owner}.update_horizon", update_horizon, 1)
    validation.check_int_at_least(f"{owner}.target_update_period", target_update_period, 1)
    validation.check_in_range(f"{owner}.gamma", gamma, 0.0, 1.0)
    self.num_actions = num_actions
    # The agent's own terms, then those bound by name (`regularization.<name>`).
    self.regularizers = tuple(regularizers) + regularizer_terms.regularization()
    self.network = _build_network(network, num_actions, outputs_per_action,
                                  self.regularizers)
    # Networks with dropout or a VIB are stochastic while training (key given).
    self._stochastic = (getattr(self.network, "dropout_rate", 0.0) > 0
                        or getattr(self.network, "bottleneck", "none") != "none")
    self.optimizer = optimizer_fn()
    self.gamma = gamma
    self.update_horizon = update_horizon
    self.batch_size = batch_size
    self.target_update_period = target_update_period
    self.double_dqn = double_dqn
    # The online network's outputs at s' are computed only when something uses them.
    self._needs_next_online = needs_next_online(double_dqn, self.regularizers)

  def init(self, key: jax.Array, state_shape: StateSpec) -> learner.TrainState:
    """Fresh TrainState; `state_shape` is one agent state, e.g. (84, 84, 4) (uint8), or
    a `jax.ShapeDtypeStruct` of one, e.g. float32 (4, 1) (see `state_spec`)."""
    state = init_state(self.network, self.optimizer, key, state_shape)
    shape, dtype = shape_and_dtype(state_shape)
    out = jax.eval_shape(self.apply, state.params,
                         jax.ShapeDtypeStruct((2,) + shape, dtype))
    representation = getattr(out, "representation", None)
    if representation is None or len(representation.shape) != 2:
      users = [type(r).__name__ for r in self.regularizers] or ["the Runner's diagnostics"]
      raise RepresentationError(
          f"{', '.join(users)} need the penultimate features, but "
          f"{type(self.network).__name__} returns no [B, D] `representation`: bind the "
          "agent's `network` to one returning networks.QNetworkOutput.")
    return state

  def apply(self, params: Any, states: jax.Array,
            key: Optional[jax.Array] = None) -> networks.QNetworkOutput:
    """Network outputs: q_values [B, A], representation [B, D] (and head outputs).

    With a `key` the network runs in training mode: its dropout and VIB sampling (if
    it has them) draw from it. Without one, it is deterministic (targets, acting,
    diagnostics).
    """
    if key is None or not self._stochastic:
      return self.network.apply(params, states)
    dropout_key, bottleneck_key = jax.random.split(key)
    return self.network.apply(params, states, train=True,
                              rngs={"dropout": dropout_key, "bottleneck": bottleneck_key})

  def act(self, params: Any, states: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
    """Epsilon-greedy int32 [B] actions on `apply(...).q_values` (see epsilon_greedy:
    `key` is one key, or B keys, one per row)."""
    return epsilon_greedy(self.apply(params, states).q_values, key, epsilon)

  def evaluation_act(self, params: Any, states: jax.Array, key: jax.Array,
                     epsilon: float) -> jax.Array:
    """The evaluation's policy: `act` (epsilon-greedy at the evaluation's epsilon)."""
    return self.act(params, states, key, epsilon)

  def backup_next_action(self, params: Any, target_params: Any, batch,
                         key: jax.Array) -> jax.Array:
    """int32 [B]: the a' this agent's backup uses at s' (diagnostics, DR3 with actions).

    Default: the greedy action at s' of the target network, or of the online network
    with double DQN. Agents whose backup differs override it.
    """
    del key
    source = params if self.double_dqn else target_params
    return jnp.argmax(self.apply(source, batch.next_state).q_values, axis=1).astype(jnp.int32)

  def add_regularizers(self, base_loss: jax.Array, metrics: dict[str, jax.Array], *,
                       params: Any, target_params: Any, key: jax.Array,
                       q_values: jax.Array, online: networks.QNetworkOutput,
                       next_online: Optional[networks.QNetworkOutput], batch,
                       next_action: jax.Array,
                       base_tag: Optional[str] = "Train/TDLoss") -> jax.Array:
    """base_loss + every regulariser term; fills `metrics` (and Train/Loss) in place.

    Args:
      params, target_params: the loss's parameters (terms such as CURL run the
        network on other inputs).
      key: the regularisers' PRNG key (`split_loss_key`).
      q_values: [B, A] the agent's Q-values at s (expected values for distributional
        agents, the mixture for REM), which CQL reads.
      next_action: int [B] the action the agent's backup uses at s'.
      base_tag: tag under which base_loss is logged when regularisers are on (None:
        the agent logs it itself).
    """
    inputs = None
    if self.regularizers:
      inputs = regularizer_terms.LossInputs(
          q_values=q_values, phi=online.representation,
          phi_next=None if next_online is None else next_online.representation,
          action=batch.action, next_action=next_action, terminal=batch.terminal,
          state=batch.state, kl=online.kl,
          forward=lambda states, k: self.apply(params, states, k),
          target_forward=lambda states: self.apply(target_params, states))
    return add_terms(base_loss, metrics, self.regularizers, inputs, key, base_tag)


def add_terms(base_loss: jax.Array, metrics: dict[str, jax.Array],
              terms: Sequence[regularizer_terms.Regularizer],
              inputs: Optional[regularizer_terms.LossInputs], key: jax.Array,
              base_tag: Optional[str]) -> jax.Array:
  """base_loss + each term's value on `inputs` (one key each, split from `key`);
  fills `metrics` in place with the terms' tags, base_loss under `base_tag` when there
  are terms (None: the caller logs it), and the sum under Train/Loss."""
  loss = base_loss
  if terms:
    for term, term_key in zip(terms, jax.random.split(key, len(terms))):
      value, term_metrics = term(inputs, term_key)
      loss = loss + value
      metrics.update(term_metrics)
    if base_tag is not None:
      metrics[base_tag] = base_loss
  metrics["Train/Loss"] = loss
  return loss


def _build_network(network, num_actions: int, outputs_per_action: int,
                   regularizers: Sequence[regularizer_terms.Regularizer]):
  """network(num_actions, ...) with the options the regularisers need (VIB, CURL)."""
  kwargs = {"num_actions": num_actions}
  if outputs_per_action != 1:
    kwargs["outputs_per_action"] = outputs_per_action
  needed = {}
  for term in regularizers:
    for option, value in getattr(term, "network_options", {}).items():
      if option in needed and needed[option] != value:
        raise ValueError(f"Regularisers ask for conflicting network options {option}="
                         f"{needed[option]!r} and {value!r}.")
      needed[option] = value
  if not needed:
    return network(**kwargs)
  try:
    return network(**kwargs, **needed)
  except TypeError as e:
    users = [type(r).__name__ for r in regularizers if getattr(r, "network_options", None)]
    name = getattr(network, "__name__", repr(network))
    raise ValueError(f"{', '.join(users)} need a network with {needed}, which {name} "
                     f"does not take ({e}).") from e


def host_random_params(agent, seed: int, state_shape: Sequence[int]) -> Any:
  """Random parameters of `agent.network` for uint8 states of `state_shape`, drawn in
  numpy on the network's parameter shapes (kernels ~ U(+-sqrt(3 / fan_in)), biases ~
  0.1 N(0, 1)): compiling Flax's init with the threefry PRNG takes seconds on CPU, which
  tests and benchmarks that only need some network need not pay."""
  shapes = jax.eval_shape(agent.network.init, jax.random.PRNGKey(0),
                          jnp.zeros((1,) + tuple(state_shape), jnp.uint8))
  rng = np.random.default_rng(seed)

  def fill(leaf):
    if len(leaf.shape) == 1:
      return jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32)
    bound = np.sqrt(3.0 / np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), jnp.float32)

  return jax.tree.map(fill, shapes)

"""A fixed policy loaded from another run's checkpoint: the policy FQE evaluates.

Fitted Q evaluation (IUP Figure 4d / Appendix A.9) bootstraps with the action a fixed
policy takes at s': r + gamma * Q_target(s', pi(s')). `CheckpointPolicy` is that pi,
read from any run of this codebase whose network outputs `q_values` per action:

* greedy w.r.t. a trained DQN (mode 'greedy' on a DQNAgent run),
* a behaviour-cloning policy (a BCAgent run: its q_values are logits), either its
  most likely action ('greedy') or a sample of it ('sample', softmax at `temperature`).

A QR-DQN or REM run works too with `outputs_per_action` set (their q_values are the
mean over the K outputs); a C51 run does not (the mean of its logits is not its Q).
"""
import os
from typing import Any, Callable, Optional

import gin
import jax
import jax.numpy as jnp

from batch_rl import checkpointing
from batch_rl.agents import common as agent_common

MODES = ("greedy", "sample")


@gin.configurable(denylist=["num_actions", "default_network"])
class CheckpointPolicy:
  """pi(s') from the online parameters of a run's checkpoint.

  Args:
    num_actions: action count (from the environment, passed by the agent).
    default_network: the evaluating agent's network class, used when `network` is None.
    checkpoint_dir: the policy run's base_dir (its checkpoints/ is read) or a
      checkpoints directory itself. Required.
    iteration: which checkpoint; None = the newest.
    network: Flax module class of the policy run, if it differs from the agent's.
    outputs_per_action: that network's outputs per action (1 for DQN and BC).
    mode: 'greedy' (argmax of q_values) or 'sample' (softmax(q_values / temperature)).
    temperature: of 'sample'.
  """

  def __init__(self, num_actions: int, default_network: Callable[..., Any],
               checkpoint_dir: Optional[str] = None, iteration: Optional[int] = None,
               network: Optional[Callable[..., Any]] = None, outputs_per_action: int = 1,
               mode: str = "greedy", temperature: float = 1.0):
    if not checkpoint_dir:
      raise ValueError("`CheckpointPolicy.checkpoint_dir` is required: the run (its "
                       "base_dir) whose policy FQE evaluates.")
    if mode not in MODES:
      raise ValueError(f"`CheckpointPolicy.mode` must be one of {MODES}, got {mode!r}.")
    if not temperature > 0:
      raise ValueError(f"`CheckpointPolicy.temperature` must be > 0, got {temperature}.")
    nested = os.path.join(checkpoint_dir, "checkpoints")
    self.checkpoint_dir = nested if os.path.isdir(nested) else checkpoint_dir
    self.iteration, state = checkpointing.read_state_dict(self.checkpoint_dir, iteration)
    self.network_fn = network or default_network
    kwargs = {"num_actions": num_actions}
    if outputs_per_action != 1:
      kwargs["outputs_per_action"] = outputs_per_action
    self.network = self.network_fn(**kwargs)
    self.params = jax.tree.map(jnp.asarray, checkpointing.agent_state_dict(state)["params"])
    self.mode = mode
    self.temperature = temperature

  def check(self, state_shape: agent_common.StateSpec) -> None:
    """ValueError naming the checkpoint unless its parameters fit the network.

    `state_shape`: one agent state, as `ValueAgent.init` takes it (a shape of uint8
    states, or a `jax.ShapeDtypeStruct`).
    """
    state_shape, dtype = agent_common.shape_and_dtype(state_shape)
    expected = jax.eval_shape(self.network.init, jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1,) + state_shape, dtype))
    shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
    try:
      same = shapes(expected) == shapes(self.params)
    except (TypeError, ValueError):
      same = False
    if not same:
      raise ValueError(
          f"The checkpoint {self.checkpoint_dir} (iteration {self.iteration}) does not hold "
          f"parameters of {type(self.network).__name__} on states of shape {state_shape}: "
          "bind `CheckpointPolicy.network` (and `outputs_per_action`) to the policy "
          "run's network.")

  def __call__(self, states: jax.Array, key: jax.Array) -> jax.Array:
    """int32 [B] actions at `states`."""
    q_values = self.network.apply(self.params, states).q_values
    if self.mode == "greedy":
      return jnp.argmax(q_values, axis=1).astype(jnp.int32)
    return jax.random.categorical(key, q_values / self.temperature, axis=1).astype(jnp.int32)

"""The members of a run on one leading axis: independent agents in one jitted program.

A run with `num_seeds = S` trains seeds seed, seed + 1, ..., seed + S - 1 together: their
states are stacked on a leading axis and every jitted function is vmapped over it, the
data (not stacked) shared. Each seed keeps the layout of a solo run in its own directory,
<base_dir>/seed_<k>/ (events, config.gin naming its own seed, checkpoints/), so every
tool that reads runs reads them as solo runs; seed k's logs are what a solo run with
`seed = k` (and the vmapped run's data seed) logs. With S = 1 nothing is stacked or
vmapped and base_dir is the run's directory, as always.

A run may also give learning rates (`learning_rates`): its members are then every
learning rate with every seed, each in <base_dir>/lr_<rate>/seed_<k>/ with a config.gin
naming its own learning rate. Members differ in the step size of the optimizer only: the
optimizer the agent builds (at `create_optimizer.learning_rate`, the base rate) is
followed by an optax.scale whose factor, rate / base, is a hyperparameter in each
member's optimizer state (optax.inject_hyperparams), so one program serves them all.
That equals training at the member's rate for optimizers whose update is linear in
the learning rate (create_optimizer's Adam, RMSProp and SGD, with or without clipping
and SAM). The factor's state exists only in the program: a member's checkpoints hold
the state a solo run at its rate holds, so every tool that reads a run reads them.
"""
import inspect
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from batch_rl import gin_bindings

SEED_DIR = "seed_{}"
LEARNING_RATE_DIR = "lr_{}"
LEARNING_RATE_BINDING = "create_optimizer.learning_rate"


class SeedAxis:
  """The members of one program (seeds, or learning rates x seeds) and how their
  pytrees are stacked and split. `seeds` and `learning_rates` are per member."""

  def __init__(self, seeds: Sequence[int], learning_rates: Optional[Sequence[float]] = None,
               base_learning_rate: Optional[float] = None):
    seeds = [int(s) for s in seeds]
    if learning_rates is None:
      self.seeds, self.learning_rates = seeds, None
    else:
      self.seeds = [s for _ in learning_rates for s in seeds]
      self.learning_rates = [float(r) for r in learning_rates for _ in seeds]
    self.base_learning_rate = base_learning_rate
    self.vmapped = len(self.seeds) > 1

  def __len__(self) -> int:
    return len(self.seeds)

  def run_dirs(self, base_dir: str) -> list[str]:
    """The run directory of each member: base_dir itself for a solo run."""
    if self.learning_rates is not None:
      return [os.path.join(base_dir, LEARNING_RATE_DIR.format(rate), SEED_DIR.format(seed))
              for rate, seed in zip(self.learning_rates, self.seeds)]
    if not self.vmapped:
      return [base_dir]
    return [os.path.join(base_dir, SEED_DIR.format(seed)) for seed in self.seeds]

  def describe(self) -> str:
    """'seeds [0, 1]' or 'learning rates [0.001, 0.01] x seeds [0, 1]'."""
    if self.learning_rates is None:
      return f"seeds {self.seeds}"
    return (f"learning rates {sorted(set(self.learning_rates))} x seeds "
            f"{sorted(set(self.seeds))}")

  # The learning-rate factor in the program's optimizer state (see the module docstring).
  def optimizer(self, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """The program's optimizer: the agent's, followed by the members' factor."""
    if self.learning_rates is None:
      return optimizer
    return optax.chain(optimizer, optax.inject_hyperparams(optax.scale)(step_size=1.0))

  def member_state(self, state: Any, k: int) -> Any:
    """Member k's program state from the state of a solo run at its learning rate."""
    if self.learning_rates is None:
      return state
    factor = optax.inject_hyperparams(optax.scale)(step_size=1.0).init(state.params)
    factor.hyperparams["step_size"] = jnp.asarray(
        self.learning_rates[k] / self.base_learning_rate, jnp.float32)
    return state.replace(opt_state=(state.opt_state, factor))

  def solo_state(self, state: Any) -> Any:
    """A member's state as a solo run at its learning rate holds it (its checkpoints)."""
    if self.learning_rates is None:
      return state
    return state.replace(opt_state=state.opt_state[0])

  def stack(self, trees: Sequence[Any]) -> Any:
    """One tree from one per seed (the tree itself for a solo run)."""
    if not self.vmapped:
      return trees[0]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)

  def split(self, tree: Any) -> list[Any]:
    """One tree per seed from a stacked one."""
    if not self.vmapped:
      return [tree]
    return [jax.tree.map(lambda leaf, k=k: leaf[k], tree) for k in range(len(self))]

  def vmap(self, fn: Callable, in_axes) -> Callable:
    """fn vmapped over the seed axis (`in_axes` as jax.vmap's); fn for a solo run."""
    return jax.vmap(fn, in_axes=in_axes) if self.vmapped else fn


def configured_learning_rate() -> float:
  """create_optimizer's learning rate as gin binds it (its default where unbound)."""
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl.agents import learner  # pylint: disable=g-import-not-at-top
  try:
    return float(gin.query_parameter(LEARNING_RATE_BINDING))
  except ValueError:
    return float(inspect.signature(learner.create_optimizer).parameters[
        "learning_rate"].default)


def seed_config(text: str, owner: str, seed: int, data_seed: Optional[int] = None,
                learning_rate: Optional[float] = None) -> str:
  """A vmapped run's gin text rewritten as one member's solo run: `owner.seed` (and,
  when given, `owner.data_seed` and the learning rate) bound to its values,
  `owner.num_seeds` and `owner.learning_rates` removed."""
  values = {f"{owner}.seed": repr(seed)}
  if data_seed is not None:
    values[f"{owner}.data_seed"] = repr(data_seed)
  if learning_rate is not None:
    values[LEARNING_RATE_BINDING] = repr(learning_rate)
  return gin_bindings.rebind(text, values,
                             drop=[f"{owner}.num_seeds", f"{owner}.learning_rates"])

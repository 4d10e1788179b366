"""The seeds of a run on one leading axis: S independent agents in one jitted program.

A run with `num_seeds = S` trains seeds seed, seed + 1, ..., seed + S - 1 together: their
states are stacked on a leading axis and every jitted function is vmapped over it, the
data (not stacked) shared. Each seed keeps the layout of a solo run in its own directory,
<base_dir>/seed_<k>/ (events, config.gin naming its own seed, checkpoints/), so every
tool that reads runs reads them as solo runs; seed k's logs are what a solo run with
`seed = k` (and the vmapped run's data seed) logs. With S = 1 nothing is stacked or
vmapped and base_dir is the run's directory, as always.
"""
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from batch_rl import gin_bindings

SEED_DIR = "seed_{}"


class SeedAxis:
  """The seeds of one program and how their pytrees are stacked and split."""

  def __init__(self, seeds: Sequence[int]):
    self.seeds = [int(s) for s in seeds]
    self.vmapped = len(self.seeds) > 1

  def __len__(self) -> int:
    return len(self.seeds)

  def run_dirs(self, base_dir: str) -> list[str]:
    """The run directory of each seed: base_dir itself for a solo run."""
    if not self.vmapped:
      return [base_dir]
    return [os.path.join(base_dir, SEED_DIR.format(seed)) for seed in self.seeds]

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


def seed_config(text: str, owner: str, seed: int, data_seed: Optional[int] = None) -> str:
  """A vmapped run's gin text rewritten as seed `seed`'s solo run: `owner.seed` (and,
  when given, `owner.data_seed`) bound to its values, `owner.num_seeds` removed."""
  values = {f"{owner}.seed": repr(seed)}
  if data_seed is not None:
    values[f"{owner}.data_seed"] = repr(data_seed)
  return gin_bindings.rebind(text, values, drop=[f"{owner}.num_seeds"])

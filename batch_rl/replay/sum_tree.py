"""A sum tree over replay priorities as one flat array (pure, jittable).

Layout: node 1 is the root, node k has children 2k and 2k+1, and the P leaves (P the
smallest power of two >= capacity) are nodes P..2P-1, leaf i holding the priority of
replay index i. Sampling descends from the root exactly as Dopamine's `SumTree.sample`
(go left when the query is below the left child's sum, else subtract it and go
right); `stratified_queries` draws one query per equal slice of the total, as
`SumTree.stratified_sample`.
"""
import jax
import jax.numpy as jnp


def _num_leaves(capacity: int) -> int:
  return 1 << max(0, (capacity - 1).bit_length())


def create(capacity: int) -> jax.Array:
  """float32 [2P] of zeros."""
  return jnp.zeros((2 * _num_leaves(capacity),), jnp.float32)


def depth(tree: jax.Array) -> int:
  return (tree.shape[0] // 2).bit_length() - 1


def total(tree: jax.Array) -> jax.Array:
  return tree[1]


def leaves(tree: jax.Array, index: jax.Array) -> jax.Array:
  """Priorities of replay indices `index`."""
  return tree[tree.shape[0] // 2 + index]


def set_priorities(tree: jax.Array, index: jax.Array, priority: jax.Array) -> jax.Array:
  """Sets leaves `index` (int [B]) to `priority` ([B], >= 0) and refreshes their ancestors.

  With repeated indices one of the given values wins; ancestors are recomputed from
  their children, so the tree stays a sum tree either way.
  """
  num_leaves = tree.shape[0] // 2
  node = num_leaves + index.astype(jnp.int32)
  tree = tree.at[node].set(priority.astype(jnp.float32))
  for _ in range(depth(tree)):
    node = node // 2
    tree = tree.at[node].set(tree[2 * node] + tree[2 * node + 1])
  return tree


def find(tree: jax.Array, query: jax.Array) -> jax.Array:
  """int32 [B] replay indices whose cumulative-priority interval holds `query` [B]."""
  node = jnp.ones(query.shape, jnp.int32)
  for _ in range(depth(tree)):
    left = 2 * node
    left_sum = tree[left]
    go_left = query < left_sum
    query = jnp.where(go_left, query, query - left_sum)
    node = jnp.where(go_left, left, left + 1)
  return node - tree.shape[0] // 2


def stratified_queries(key: jax.Array, tree: jax.Array, batch_size: int,
                       candidates: int = 1) -> jax.Array:
  """[B, candidates] queries: column 0 uniform in row b's slice [b, b+1) * total / B
  (Dopamine's stratified_sample), the other columns uniform in [0, total) (the
  re-draws Dopamine's prioritized buffer makes when a stratified draw is invalid)."""
  stratum_key, redraw_key = jax.random.split(key)
  u = jax.random.uniform(stratum_key, (batch_size, 1))
  first = (jnp.arange(batch_size)[:, None] + u) * (total(tree) / batch_size)
  redraws = jax.random.uniform(redraw_key, (batch_size, candidates - 1)) * total(tree)
  return jnp.concatenate([first, redraws], axis=1)

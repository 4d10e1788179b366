"""Prioritized replay (Schaul et al. 2016) on the circular buffer, as Dopamine's Rainbow.

New entries get the largest priority recorded so far (Dopamine's
`max_recorded_priority`, starting at 1); the zero entries padding episode starts get
priority 0 and are never drawn. Sampling is stratified over the total priority (one
slice per batch element); a draw that is not a valid transition is replaced by the
first valid one of `candidates - 1` draws over the whole tree, as Dopamine re-draws
invalid ones. After an update the
agent's per-sample losses become the sampled entries' new priorities; Dopamine's
Rainbow uses sqrt(loss + 1e-10) (alpha = 0.5 on the loss) and weights the loss by
1 / sqrt(priority), normalised by the batch's largest weight (beta = 0.5).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from batch_rl.replay import circular_buffer
from batch_rl.replay import sampler
from batch_rl.replay import sum_tree


class PrioritizedBuffer(NamedTuple):
  """A CircularBuffer with a sum tree of priorities (pytree)."""

  buffer: circular_buffer.CircularBuffer
  tree: jax.Array
  max_priority: jax.Array

  @property
  def add_count(self) -> jax.Array:
    return self.buffer.add_count

  @property
  def capacity(self) -> int:
    return self.buffer.capacity


def create(capacity: int, frame_shape: tuple[int, ...], observation_dtype=jnp.uint8,
           action_shape: tuple[int, ...] = (), action_dtype=jnp.int32) -> PrioritizedBuffer:
  """An empty buffer; the arguments are circular_buffer.create's."""
  return PrioritizedBuffer(circular_buffer.create(capacity, frame_shape, observation_dtype,
                                                  action_shape, action_dtype),
                           sum_tree.create(capacity), jnp.ones((), jnp.float32))


def add(pbuffer: PrioritizedBuffer, frame, action, reward, terminal, *, stack_size: int,
        clip_rewards: bool = True) -> PrioritizedBuffer:
  """circular_buffer.add, then priority max_priority for the entry, 0 for its padding."""
  before = pbuffer.buffer.add_count
  buffer = circular_buffer.add(pbuffer.buffer, frame, action, reward, terminal,
                               stack_size=stack_size, clip_rewards=clip_rewards)
  written = buffer.add_count - before  # 1, or stack_size with episode-start padding
  slots = jnp.arange(stack_size)
  index = (buffer.add_count - stack_size + slots) % buffer.capacity
  new = jnp.where(slots == stack_size - 1, pbuffer.max_priority, 0.0)
  keep = slots < stack_size - written  # slots not written by this add keep their value
  priority = jnp.where(keep, sum_tree.leaves(pbuffer.tree, index), new)
  return PrioritizedBuffer(buffer, sum_tree.set_priorities(pbuffer.tree, index, priority),
                           pbuffer.max_priority)


def sample_transitions(key: jax.Array, pbuffer: PrioritizedBuffer, batch_size: int, *,
                       stack_size: int, update_horizon: int = 1, gamma: float = 0.99,
                       candidates: int = 8) -> sampler.Transition:
  """A prioritized minibatch; `weight` holds Dopamine's Rainbow loss weights."""
  queries = sum_tree.stratified_queries(key, pbuffer.tree, batch_size, candidates)
  draws = sum_tree.find(pbuffer.tree, queries.reshape(-1))
  draws = jnp.clip(draws, 0, pbuffer.capacity - 1)
  ok = circular_buffer.is_valid(pbuffer.buffer, draws, stack_size=stack_size,
                                update_horizon=update_horizon)
  ok &= sum_tree.leaves(pbuffer.tree, draws) > 0
  draws, ok = draws.reshape(batch_size, candidates), ok.reshape(batch_size, candidates)
  first = jnp.where(ok.any(axis=1), jnp.argmax(ok, axis=1), candidates - 1)
  index = jnp.take_along_axis(draws, first[:, None], axis=1)[:, 0]
  batch = sampler.gather_transitions(pbuffer.buffer.as_replay_arrays(), index,
                                     stack_size=stack_size, update_horizon=update_horizon,
                                     gamma=gamma)
  weight = 1.0 / jnp.sqrt(sum_tree.leaves(pbuffer.tree, index) + 1e-10)
  return batch._replace(weight=weight / jnp.max(weight))


def update_priorities(pbuffer: PrioritizedBuffer, index: jax.Array,
                      per_sample_loss: jax.Array) -> PrioritizedBuffer:
  """Priorities sqrt(loss + 1e-10) for the sampled entries (Dopamine's Rainbow)."""
  priority = jnp.sqrt(jax.lax.stop_gradient(per_sample_loss) + 1e-10)
  return PrioritizedBuffer(pbuffer.buffer,
                           sum_tree.set_priorities(pbuffer.tree, index, priority),
                           jnp.maximum(pbuffer.max_priority, jnp.max(priority)))

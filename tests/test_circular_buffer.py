"""The online circular buffer against Dopamine's OutOfGraphReplayBuffer (the reference).

Same adds -> same stored arrays and add count, the same valid indices at every fill
level (filling, full, wrapped), and the same transitions for given indices; sampling
returns only valid indices and covers them uniformly.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dopamine.tf.replay_memory import circular_replay_buffer

from batch_rl.replay import circular_buffer as cb
from tests.test_sampler import assert_same_transitions


def episodes(lengths):
  t = 0
  for length in lengths:
    for k in range(length):
      t += 1
      yield t, k == length - 1


@pytest.mark.parametrize("stack_size,frame_shape,update_horizon",
                         [(4, (6, 5), 1), (4, (6, 5), 3), (1, (10, 10, 3), 2)])
def test_adds_validity_and_transitions_match_dopamine(stack_size, frame_shape, update_horizon):
  capacity = 61
  ref = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=frame_shape, stack_size=stack_size, replay_capacity=capacity,
      batch_size=8, update_horizon=update_horizon, gamma=0.9)
  buffer = cb.create(capacity, frame_shape)
  add = jax.jit(functools.partial(cb.add, stack_size=stack_size, clip_rewards=False))
  valid_fn = jax.jit(functools.partial(cb.is_valid, stack_size=stack_size,
                                       update_horizon=update_horizon))
  checked = 0
  for t, terminal in episodes([5, 1, 14, 2, 20, 3, 9, 7, 11, 4]):
    frame = np.full(frame_shape, t % 251, np.uint8)
    buffer = add(buffer, frame, t % 5, float(t), terminal)
    ref.add(frame, t % 5, float(t), terminal)
    if t % 6 == 0:  # compare while filling, at full, and wrapped
      assert int(buffer.add_count) == int(ref.add_count)
      host = cb.to_numpy(buffer)
      written = min(int(ref.add_count), capacity)  # Dopamine's store starts np.empty
      for key in ("observation", "action", "reward", "terminal"):
        np.testing.assert_array_equal(host[key][:written], ref._store[key][:written],
                                      err_msg=key)
      ours = np.flatnonzero(np.asarray(valid_fn(buffer, jnp.arange(capacity))))
      theirs = [i for i in range(capacity) if ref.is_valid_transition(i)]
      np.testing.assert_array_equal(ours, theirs)
      if len(theirs):
        got = cb.sampler.gather_transitions(buffer.as_replay_arrays(), jnp.asarray(ours),
                                            stack_size=stack_size,
                                            update_horizon=update_horizon, gamma=0.9)
        expected = ref.sample_transition_batch(batch_size=len(theirs),
                                               indices=np.asarray(theirs))
        assert_same_transitions(got, expected, 0.9, update_horizon)
      checked += 1
  assert int(buffer.add_count) > capacity and checked >= 10


def test_rewards_are_clipped_and_out_of_range_indices_invalid():
  buffer = cb.create(10, (2, 2))
  buffer = cb.add(buffer, np.ones((2, 2), np.uint8), 1, 7.5, False, stack_size=1)
  buffer = cb.add(buffer, np.ones((2, 2), np.uint8), 1, -3.0, False, stack_size=1)
  np.testing.assert_array_equal(np.asarray(buffer.reward[0, :2]), [1.0, -1.0])
  valid = cb.is_valid(buffer, jnp.array([-1, 0, 10]), stack_size=1, update_horizon=1)
  np.testing.assert_array_equal(np.asarray(valid), [False, True, False])


def test_sampling_is_uniform_over_valid_indices():
  capacity, stack_size = 50, 4
  buffer = cb.create(capacity, (3, 3))
  add = jax.jit(functools.partial(cb.add, stack_size=stack_size))
  for t, terminal in episodes([6, 9, 4, 12, 8, 30]):  # wraps; many invalid entries
    buffer = add(buffer, np.full((3, 3), t, np.uint8), 0, 0.0, terminal)
  valid = np.flatnonzero(np.asarray(cb.is_valid(buffer, jnp.arange(capacity),
                                                stack_size=stack_size, update_horizon=1)))
  assert 0.3 * capacity < len(valid) < capacity  # a real mix of valid and invalid
  draws = np.asarray(jax.jit(functools.partial(
      cb.sample_indices, batch_size=40_000, stack_size=stack_size, update_horizon=1))(
          jax.random.PRNGKey(0), buffer))
  assert set(np.unique(draws)) == set(valid)
  counts = np.bincount(draws, minlength=capacity)[valid]
  expected = len(draws) / len(valid)
  # Binomial counts: std ~ sqrt(expected) ~ 30; allow 5 of those per index.
  assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_capacity_must_be_positive():
  with pytest.raises(ValueError, match="capacity"):
    cb.create(0, (2, 2))

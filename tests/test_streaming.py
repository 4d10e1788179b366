"""Streaming replay: exact transitions, epoch coverage, uniform marginals, Runner, errors.

The reference for every streamed transition is the whole dataset loaded in memory
(load_fixed_replay without streaming) and gathered by the same sampler at the
transition's dataset index; the data is tagged (frame t % 251, reward t), written by
the project's logger and converted by the real `store.convert` path.
"""
import functools

import gin
import jax
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl.datasets import quickstart
from batch_rl import summary_writer
from batch_rl.datasets import fixed_replay
from batch_rl.replay import sampler
from batch_rl.datasets import store
from batch_rl.datasets import streaming
from tests.test_data_subsampling import CAPACITY, EPISODES, write_tagged
from tests.test_runner import REQUIRED_TAGS, small_bindings


@pytest.fixture(scope="module")
def tagged_store(tmp_path_factory):
  source = tmp_path_factory.mktemp("source")
  write_tagged(source, EPISODES, CAPACITY, final_suffix=2)
  return store.convert(str(source), str(tmp_path_factory.mktemp("s") / "store")).path


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def load(path, **kw):
  return fixed_replay.load_fixed_replay(store_dir=path, stack_size=4, **kw)


@functools.partial(jax.jit, static_argnames=("update_horizon", "gamma"))
def _reference_gather(data, index, update_horizon, gamma):
  return sampler.gather_transitions(data, index, stack_size=4, update_horizon=update_horizon,
                                    gamma=gamma)


def assert_same_transitions(streamed, reference, window, stream, **kw):
  """Window transitions at `streamed.index` == reference transitions at their dataset index."""
  source = stream.dataset_index(np.asarray(streamed.index))
  assert (source >= 0).all()  # every sampled index is a state of the window's chunks
  expected = _reference_gather(reference, jax.numpy.asarray(source, jax.numpy.int32), **kw)
  for field in ("state", "action", "reward", "next_state", "next_action", "terminal",
                "discount", "return_to_go"):
    np.testing.assert_array_equal(np.asarray(getattr(streamed, field)),
                                  np.asarray(getattr(expected, field)), err_msg=field)


# Dense data with 3-step returns (chunks cross checkpoints and full buffers' wrap), and a
# sparse subsample of non-adjacent checkpoints (many short runs per chunk).
@pytest.mark.parametrize("n, window, load_kw", [
    (3, 90, {}), (1, 45, {"data_fraction": 0.3, "seed": 2, "suffixes": [0, 2]})])
def test_every_streamed_transition_equals_the_loaded_one(tagged_store, n, window, load_kw):
  reference = load(tagged_store, update_horizon=n, **load_kw)
  streamed_replay = load(tagged_store, update_horizon=n, stream=True, **load_kw)
  assert streamed_replay.arrays.observation is None  # frames stay in the store
  stream = streaming.StreamingReplay(streamed_replay, window, seed=3, num_slots=3)
  kw = dict(stack_size=4, update_horizon=n, gamma=0.9)
  gather = jax.jit(lambda data, index: sampler.gather_transitions(data, index, **kw))
  sample = jax.jit(lambda key, data: sampler.sample_transitions(key, data, 64, **kw))
  window = stream.start(0)
  for step in range(stream.num_chunks + 2):  # a full epoch of refreshes, into the next
    window = stream.advance(1)
    # Every state of the window (all slots), then a sampled minibatch.
    assert_same_transitions(gather(window, window.valid), reference.arrays, window, stream,
                            update_horizon=n, gamma=0.9)
    assert_same_transitions(sample(jax.random.PRNGKey(step), window), reference.arrays,
                            window, stream, update_horizon=n, gamma=0.9)
  stream.close()


def window_history(entered, num_slots, num_steps):
  """Chunk in each slot at each step, from the log of (step, slot, chunk) entries."""
  held = np.full((num_steps, num_slots), -1)
  for step, slot, chunk in entered:
    held[step:, slot] = chunk
  return held


def test_each_epoch_visits_every_chunk_once_and_marginals_are_uniform(tagged_store):
  replay = load(tagged_store, stream=True)
  num_slots, refresh, batch, epochs = 4, 2, 128, 6
  stream = streaming.StreamingReplay(replay, 4 * 25, seed=11, num_slots=num_slots,
                                     refresh_every=refresh)
  num_chunks, per_chunk = stream.num_chunks, stream.chunk_transitions
  steps = epochs * num_chunks * refresh
  sample = jax.jit(lambda key, data: sampler.sample_indices(key, data, batch))
  counts = np.zeros(replay.arrays.valid.size, np.int64)
  position_of = {int(v): k for k, v in enumerate(np.asarray(replay.arrays.valid))}
  stream.start(0)
  for step in range(steps):
    window = stream.advance(1)
    source = stream.dataset_index(np.asarray(sample(jax.random.PRNGKey(step), window)))
    np.add.at(counts, [position_of[int(s)] for s in source], 1)
  stream.close()

  # (1) Every epoch's entries are a permutation of all chunks, and the order is the seed's.
  chunks = [c for _, _, c in stream.entered]
  assert len(chunks) == num_slots + steps // refresh - 1
  for e in range(epochs):
    assert sorted(chunks[e * num_chunks:(e + 1) * num_chunks]) == list(range(num_chunks))
  again = streaming.StreamingReplay(replay, 4 * 25, seed=11, num_slots=num_slots)
  other = streaming.StreamingReplay(replay, 4 * 25, seed=12, num_slots=num_slots)
  assert [again.chunk_id(p) for p in range(len(chunks))] == chunks
  assert [other.chunk_id(p) for p in range(len(chunks))] != chunks
  # Chunks partition the dataset (the last one is completed by wrapping around).
  members = np.concatenate([stream.chunk_elements(c) for c in range(num_chunks)])
  assert set(members.tolist()) == set(np.asarray(replay.arrays.valid).tolist())
  assert members.size - replay.num_transitions == num_chunks * per_chunk - replay.num_transitions

  # (2) Every entry past the first window that leaves before the end stays S * R steps.
  held = window_history(stream.entered, num_slots, steps)
  entries = stream.entered
  for k in range(num_slots, len(entries) - num_slots):
    step, slot, chunk = entries[k]
    leave = next(s for s, sl, _ in entries[k + 1:] if sl == slot)
    assert leave - step == num_slots * refresh

  # (3) Sampling is uniform within the window: observed counts against the expectation
  # from the window history (chi-square, 6 standard deviations above its mean).
  expected = np.zeros(counts.size)
  for t in range(steps):
    for c in held[t]:
      for s in stream.chunk_elements(c):
        expected[position_of[int(s)]] += batch / stream.window_transitions
  assert counts.sum() == steps * batch
  assert (counts[expected == 0] == 0).all()
  def chi2_ok(obs, exp):
    dof = obs.size - 1
    return np.sum((obs - exp) ** 2 / exp) < dof + 6 * np.sqrt(2 * dof)
  assert chi2_ok(counts[expected > 0], expected[expected > 0])

  # (4) The marginal is uniform except for the stated edge effects: transitions of chunks
  # in the first or last window of the run, and the wrapped-around ones.
  edge_chunks = set(chunks[:num_slots]) | set(chunks[-num_slots:]) | {num_chunks - 1}
  interior = np.ones(counts.size, bool)
  for c in edge_chunks:
    interior[[position_of[int(s)] for s in stream.chunk_elements(c)]] = False
  assert interior.sum() > counts.size // 3
  uniform = batch * epochs * refresh / per_chunk  # E entries x S*R steps x B/(S*L)
  np.testing.assert_allclose(expected[interior], uniform)
  assert chi2_ok(counts[interior], np.full(interior.sum(), uniform))
  # ... and no edge transition is drawn more than twice as often (wrapped ones are in two
  # chunks; a chunk of the last window has one more, cut, residence).
  assert expected[~interior].max() <= 2 * (1 + 1 / epochs) * uniform + 1e-9


def test_a_restarted_stream_holds_the_same_windows(tagged_store):
  # What a resumed run does (Runner.run -> start(step)): the same chunks in the same
  # slots, and the same arrays, as the stream that ran from step 0.
  replay = load(tagged_store, stream=True)
  make = lambda: streaming.StreamingReplay(replay, 60, seed=5, num_slots=3, refresh_every=2)
  whole, resumed = make(), make()
  whole.start(0)
  for _ in range(30):
    whole.advance(1)
  resumed.start(17)
  for _ in range(13):
    resumed.advance(1)
  assert resumed.entered[3:] == [e for e in whole.entered if e[0] > 17]
  held = window_history(whole.entered, 3, 30)
  assert sorted(resumed.entered[:3]) == sorted((17, s, c) for s, c in enumerate(held[17]))
  np.testing.assert_array_equal(resumed.slot_chunk, whole.slot_chunk)
  for a, b in zip(resumed.window, whole.window):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  whole.close()
  resumed.close()


@pytest.fixture(scope="module")
def minatar_store(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "replay_logs")
  quickstart.log_behaviour_policy(path, num_checkpoints=2, capacity=1500, seed=0)
  return store.convert(path, str(tmp_path_factory.mktemp("store") / "breakout")).path


def streaming_bindings(store_path, window=600, **kw):
  bindings = [b for b in small_bindings("x", **kw) if "replay_dir" not in b]
  return bindings + [f"load_fixed_replay.store_dir = '{store_path}'",
                     f"FixedReplayRunner.stream_window_transitions = {window}",
                     "StreamingReplay.num_slots = 4", "StreamingReplay.refresh_every = 5"]


def test_runner_trains_from_a_stream_and_logs_its_tags(tmp_path, minatar_store):
  from batch_rl.runners import common, offline, registry
  config_lib.parse_gin([], streaming_bindings(minatar_store, num_iterations=2))
  runner = offline.FixedReplayRunner(base_dir=str(tmp_path / "run"))
  assert runner._data.observation.shape[:2] == (4, runner._stream.slot_capacity)
  metrics = runner.run()
  scalars = summary_writer.read_scalars(str(tmp_path / "run"))
  for tag in REQUIRED_TAGS | {"Data/StreamStalls"}:
    assert {s: len(v) for s, v in scalars[tag].items()} == {0: 1, 1: 1}, tag
  assert np.isfinite(metrics["Train/Loss"])
  # 60 steps, a refresh every 5: 11 refreshes after the 4 chunks of the first window.
  assert runner._stream.refreshes == 11 and len(runner._stream.entered) == 15



def test_bad_streaming_inputs_fail_with_clear_messages(tagged_store, tmp_path, minatar_store):
  from batch_rl.runners import common, offline, registry
  with pytest.raises(ValueError, match=r"store_dir.*python -m batch_rl.data convert"):
    fixed_replay.load_fixed_replay(str(tmp_path), stream=True)
  bindings = small_bindings("/nonexistent") + ["FixedReplayRunner.stream_window_transitions = 100"]
  config_lib.parse_gin([], bindings)
  with pytest.raises(ValueError, match=r"python -m batch_rl.data convert"):
    offline.FixedReplayRunner(base_dir=str(tmp_path / "a"))
  gin.clear_config()
  config_lib.parse_gin([], streaming_bindings(minatar_store, window=10**7))
  with pytest.raises(common.ConfigError, match=r"larger than the dataset"):
    offline.FixedReplayRunner(base_dir=str(tmp_path / "b"))
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

  replay = load(tagged_store, stream=True)
  with pytest.raises(ValueError, match=r"at least one transition per slot"):
    streaming.StreamingReplay(replay, 3, num_slots=4)
  with pytest.raises(ValueError, match=r"StreamingReplay.refresh_every. must be >= 1"):
    streaming.StreamingReplay(replay, 40, refresh_every=0)
  not_a_store = fixed_replay.FixedReplay(
      arrays=replay.arrays, replay_dir=str(tmp_path), suffixes=replay.suffixes,
      frame_shape=replay.frame_shape, stack_size=4, update_horizon=1, data_fraction=1.0)
  with pytest.raises(ValueError, match=r"not a converted store.*convert"):
    streaming.StreamingReplay(not_a_store, 40)

"""RL Unplugged Atari through TFDS: a tiny dataset built by TFDS's own builder and writer.

Raw episodes are written in RL Unplugged's input format (GZIP TFRecords of tf.Examples,
PNG frames) and `rlu_atari_checkpoints_ordered`'s real builder prepares them into a TFDS
data_dir, as for the published dataset; load_fixed_replay then reads that data_dir.
The reference is Dopamine's OutOfGraphReplayBuffer fed the same episodes with add().
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
from dopamine.tf.replay_memory import circular_replay_buffer  # noqa: E402
from tensorflow_datasets.rl_unplugged.rlu_atari_checkpoints_ordered import \
    rlu_atari_checkpoints_ordered as rlu_ordered  # noqa: E402

from batch_rl.datasets import fixed_replay  # noqa: E402
from batch_rl.datasets import rlu_tfds  # noqa: E402
from batch_rl.replay import sampler  # noqa: E402
from batch_rl.tf_utils import tensorflow  # noqa: E402

NAME = "rlu_atari_checkpoints_ordered/Pong_run_1"
# Per checkpoint: (episode length in agent steps, ends in a terminal state?).
GAP = 40  # episode e starts at step tag e * GAP: all tags distinct and < 251
CHECKPOINTS = [[(9, True), (5, True), (12, True)], [(7, True), (6, False), (8, True)]]


def raw_episode(tf, checkpoint, episode, length, terminated, t0):
  """One RL Unplugged tf.Example: frame/reward/action of step t tagged by t."""
  steps = length + 1 if terminated else length  # + the terminal observation
  t = np.arange(t0, t0 + steps)
  frames = [tf.io.encode_png(np.full((84, 84, 1), v % 251, np.uint8)).numpy() for v in t]
  rewards = (t % 5 - 2).astype(np.float32)  # -2..2: clipping matters
  discounts = np.ones(steps, np.float32)
  if terminated:
    discounts[-1] = 0.0
  f = tf.train.Feature
  feature = {
      "checkpoint_idx": f(int64_list=tf.train.Int64List(value=[checkpoint])),
      "episode_idx": f(int64_list=tf.train.Int64List(value=[episode])),
      "episode_return": f(float_list=tf.train.FloatList(value=[float(rewards.sum())])),
      "clipped_episode_return": f(float_list=tf.train.FloatList(value=[0.0])),
      "observations": f(bytes_list=tf.train.BytesList(value=frames)),
      "actions": f(int64_list=tf.train.Int64List(value=(t % 6).tolist())),
      "unclipped_rewards": f(float_list=tf.train.FloatList(value=rewards.tolist())),
      "clipped_rewards": f(float_list=tf.train.FloatList(value=np.clip(rewards, -1, 1).tolist())),
      "discounts": f(float_list=tf.train.FloatList(value=discounts.tolist())),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  tf = tensorflow()
  root = tmp_path_factory.mktemp("rlu")
  raw = root / "raw"
  os.makedirs(raw / "Pong")
  t0 = 0
  for c, episodes in enumerate(CHECKPOINTS):
    path = str(raw / "Pong" / f"run_1-{c:05d}-of-{len(CHECKPOINTS):05d}")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
      for e, (length, terminated) in enumerate(episodes):
        writer.write(raw_episode(tf, c, e, length, terminated, t0))
        t0 += GAP
  saved = rlu_ordered.RluAtariCheckpointsOrdered._INPUT_FILE_PREFIX, \
      rlu_ordered.RluAtariCheckpointsOrdered._SHARDS
  # As TFDS's own test of this builder: point it at local raw files, fewer shards.
  rlu_ordered.RluAtariCheckpointsOrdered._INPUT_FILE_PREFIX = str(raw)
  rlu_ordered.RluAtariCheckpointsOrdered._SHARDS = len(CHECKPOINTS)
  try:
    tfds.builder(NAME, data_dir=str(root / "tfds")).download_and_prepare()
  finally:
    (rlu_ordered.RluAtariCheckpointsOrdered._INPUT_FILE_PREFIX,
     rlu_ordered.RluAtariCheckpointsOrdered._SHARDS) = saved
  return str(root / "tfds")


def dopamine_reference(tf, checkpoint, capacity):
  """Dopamine's buffer fed the checkpoint's terminated episodes step by step."""
  buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=(84, 84), stack_size=4, replay_capacity=capacity, batch_size=8)
  t0 = GAP * sum(len(e) for e in CHECKPOINTS[:checkpoint])
  for length, terminated in CHECKPOINTS[checkpoint]:
    assert terminated
    for k in range(length):
      t = t0 + k
      buffer.add(np.full((84, 84), t % 251, np.uint8), t % 6, float(np.clip(t % 5 - 2, -1, 1)),
                 k == length - 1)
    t0 += GAP
  return buffer


def test_rlu_checkpoint_equals_dopamines_buffer(data_dir):
  data = fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, suffixes=[0],
                                        stack_size=4)
  capacity = data.arrays.action.shape[1]
  assert capacity == sum(n for n, _ in CHECKPOINTS[0]) + 3 * len(CHECKPOINTS[0]) + 1
  ref = dopamine_reference(tensorflow(), 0, capacity)
  n = ref.cursor()  # entries added (Dopamine's store is np.empty beyond them)
  assert n == capacity - 1
  for key in ("observation", "action", "reward", "terminal"):
    np.testing.assert_array_equal(np.asarray(getattr(data.arrays, key))[0, :n],
                                  ref._store[key][:n])
  valid = np.asarray(data.arrays.valid)
  np.testing.assert_array_equal(valid, [i for i in range(capacity) if ref.is_valid_transition(i)])
  ours = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(valid),
                                    stack_size=4, gamma=0.99)
  state, action, reward, next_state, next_action, _, terminal, _ = \
      ref.sample_transition_batch(batch_size=len(valid), indices=valid)
  np.testing.assert_array_equal(np.asarray(ours.state), state)
  np.testing.assert_array_equal(np.asarray(ours.next_state), next_state)
  np.testing.assert_array_equal(np.asarray(ours.action), action)
  np.testing.assert_array_equal(np.asarray(ours.next_action), next_action)
  np.testing.assert_allclose(np.asarray(ours.reward), reward)
  np.testing.assert_array_equal(np.asarray(ours.terminal), terminal.astype(bool))


def test_truncated_episode_end_is_never_sampled(data_dir):
  data = fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, stack_size=4,
                                        subsample="first_fraction", data_fraction=1.0)
  assert data.suffixes == (0, 1)
  a = data.arrays
  capacity = a.action.shape[1]
  valid = np.asarray(a.valid)
  shard1 = valid[valid >= capacity] - capacity
  tags = np.asarray(a.observation)[1, shard1, 0, 0]
  t_ep1 = 3 * GAP + GAP  # second episode (truncated, 6 steps) of checkpoint 1
  truncated = np.arange(t_ep1, t_ep1 + 6)
  assert truncated[-1] not in tags and set(truncated[:-1]) <= set(tags)
  # The next episode's first state is zero-padded, not stacked on the truncated one.
  first = shard1[tags == t_ep1 + GAP][0]
  stack = np.asarray(sampler.gather_transitions(jax.device_put(a), jnp.asarray([first + capacity]),
                                                stack_size=4).state)[0, 0, 0]
  np.testing.assert_array_equal(stack, [0, 0, 0, t_ep1 + GAP])
  # Subsampling and the store interface work the same on this backend.
  some = fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, stack_size=4,
                                        num_transitions=10, subsample="uniform_trajectories")
  assert some.num_transitions >= 10


def test_bad_names_and_data_dirs(data_dir, tmp_path):
  def load(name, directory=data_dir):
    return fixed_replay.load_fixed_replay(tfds_name=name, tfds_data_dir=directory)
  with pytest.raises(ValueError, match="TFDS has no dataset 'rlu_atari_nope'"):
    load("rlu_atari_nope/Pong_run_1")
  with pytest.raises(ValueError, match=r"no config 'Pong_run_9'.*Pong_run_"):
    load("rlu_atari_checkpoints_ordered/Pong_run_9")
  with pytest.raises(ValueError, match=r"does not hold .*Breakout_run_1.*gsutil"):
    load("rlu_atari_checkpoints_ordered/Breakout_run_1")
  with pytest.raises(ValueError, match=r"tfds_data_dir.*does not hold"):
    load(NAME, str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="needs `load_fixed_replay.tfds_data_dir`"):
    fixed_replay.load_fixed_replay(tfds_name=NAME)
  with pytest.raises(ValueError, match=r"suffix\(es\) \[7\]"):
    fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, suffixes=[7])


def test_episodes_to_replay_layout():
  eps = [{"observation": np.full((3, 2, 2), 5, np.uint8), "action": np.array([1, 2, 0]),
          "reward": np.array([3.0, -0.5, 0.0]), "is_terminal": np.array([0, 0, 1], bool)},
         {"observation": np.full((2, 2, 2), 7, np.uint8), "action": np.array([4, 4]),
          "reward": np.array([0.0, 1.0]), "is_terminal": np.array([0, 0], bool)}]
  piece = rlu_tfds.episodes_to_replay(eps, stack_size=2)
  np.testing.assert_array_equal(piece.action, [0, 1, 2, 0, 4, 4])
  np.testing.assert_array_equal(piece.reward, [0, 1, -0.5, 0, 0, 1])
  np.testing.assert_array_equal(piece.terminal, [0, 0, 1, 0, 0, 0])
  np.testing.assert_array_equal(piece.observation[:, 0, 0], [0, 5, 5, 0, 7, 7])
  np.testing.assert_array_equal(piece.never_valid, [0, 3, 5])


def assert_same_transitions(a, b, stack_size=4):
  """Same transitions at the same valid states, whatever each side's capacity."""
  def gathered(data):
    capacity = data.arrays.action.shape[1]
    valid = np.asarray(data.arrays.valid)
    out = sampler.gather_transitions(jax.device_put(data.arrays), jnp.asarray(valid),
                                     stack_size=stack_size, gamma=0.99)
    return (valid // capacity, valid % capacity), out
  (slot_a, index_a), ta = gathered(a)
  (slot_b, index_b), tb = gathered(b)
  np.testing.assert_array_equal(slot_a, slot_b)
  np.testing.assert_array_equal(index_a, index_b)
  for x, y in zip(ta, tb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_converted_store_loads_as_the_tfds_backend(data_dir, tmp_path):
  from batch_rl.datasets import store
  out = store.convert_tfds(NAME, data_dir, str(tmp_path / "store"))
  assert out.suffixes == (0, 1) and out.stack_size == 4
  assert out.source == f"tfds:{data_dir}/{NAME}"
  assert not os.path.exists(str(tmp_path / "store.partial"))
  direct = fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir)
  stored = fixed_replay.load_fixed_replay(store_dir=out.path)
  assert stored.suffixes == direct.suffixes and stored.frame_shape == direct.frame_shape
  for key in ("observation", "action", "reward", "terminal", "valid", "return_to_go"):
    x, y = np.asarray(getattr(direct.arrays, key)), np.asarray(getattr(stored.arrays, key))
    assert x.dtype == y.dtype, key
    np.testing.assert_array_equal(x, y, err_msg=key)
  assert isinstance(stored.arrays.observation, np.memmap)
  for kwargs in ({"update_horizon": 3}, {"subsample": "uniform_trajectories",
                                         "data_fraction": 0.5, "seed": 3}):
    a = fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, **kwargs)
    b = fixed_replay.load_fixed_replay(store_dir=out.path, **kwargs)
    for x, y in zip(a.arrays, b.arrays):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # One checkpoint: the TFDS load pads to its own length, the store to the longest one;
  # the transitions are the same.
  assert_same_transitions(
      fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, suffixes=[1]),
      fixed_replay.load_fixed_replay(store_dir=out.path, suffixes=[1]))
  # The manifest's layout equals the frames' (counted without decoding a frame).
  piece = rlu_tfds.read_checkpoint(rlu_tfds.open_builder(NAME, data_dir), 1)
  assert out.add_counts[1] == piece.action.size
  np.testing.assert_array_equal(out.invalid_ranges[1], piece.never_valid)
  # Converting again is a no-op; another stack size is refused at load.
  assert store.convert_tfds(NAME, data_dir, out.path).suffixes == (0, 1)
  with pytest.raises(ValueError, match=r"stack_size 4.*--stack_size 2"):
    fixed_replay.load_fixed_replay(store_dir=out.path, stack_size=2)


def test_convert_cli_tfds_form(data_dir, tmp_path, capsys):
  from batch_rl.datasets import cli
  target = str(tmp_path / "s")
  assert cli.main(["convert", "--tfds_name", NAME, "--tfds_data_dir", data_dir,
                   "--suffixes", "1", target]) == 0
  assert f"load_fixed_replay.store_dir='{target}'" in capsys.readouterr().out
  assert_same_transitions(
      fixed_replay.load_fixed_replay(tfds_name=NAME, tfds_data_dir=data_dir, suffixes=[1]),
      fixed_replay.load_fixed_replay(store_dir=target))
  # The two source forms exclude each other, with a message and exit status 2.
  assert cli.main(["convert", str(tmp_path / "replay"), "--tfds_name", NAME,
                   "--tfds_data_dir", data_dir, str(tmp_path / "t")]) == 2
  assert "either REPLAY_DIR" in capsys.readouterr().err
  assert cli.main(["convert", str(tmp_path / "t")]) == 2
  assert "got neither" in capsys.readouterr().err
  assert cli.main(["convert", "--tfds_name", NAME, str(tmp_path / "t")]) == 2
  assert "needs --tfds_data_dir" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "t")


def test_convert_bad_tfds_name_says_what_the_loader_says(data_dir, tmp_path, capsys):
  from batch_rl.datasets import cli
  from batch_rl.datasets import store
  for name, directory in (("rlu_atari_nope/Pong_run_1", data_dir),
                          ("rlu_atari_checkpoints_ordered/Pong_run_9", data_dir),
                          (NAME, str(tmp_path / "empty"))):
    with pytest.raises(ValueError) as loader:
      fixed_replay.load_fixed_replay(tfds_name=name, tfds_data_dir=directory)
    with pytest.raises(ValueError) as converter:
      store.convert_tfds(name, directory, str(tmp_path / "s"))
    message = str(converter.value)
    assert message.startswith("`load_fixed_replay.tfds_")
    # gin appends "In call to configurable ..." to the loader's message; the rest is equal.
    assert str(loader.value).split("\n  In call to configurable")[0] == message
    assert cli.main(["convert", "--tfds_name", name, "--tfds_data_dir", directory,
                     str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
  with pytest.raises(ValueError, match=r"suffix\(es\) \[7\]"):
    store.convert_tfds(NAME, data_dir, str(tmp_path / "s"), [7])
  assert os.listdir(tmp_path) == []


def test_convert_tfds_checks_free_space_before_decoding(data_dir, tmp_path, monkeypatch):
  from batch_rl.datasets import store
  monkeypatch.setattr(store, "free_bytes", lambda path: 1000)
  decoded = []
  monkeypatch.setattr(rlu_tfds, "iter_checkpoint", lambda *a: decoded.append(a) or iter(()))
  with pytest.raises(store.InsufficientSpaceError, match=r"2 checkpoint\(s\) of tfds:.*needs"):
    store.convert_tfds(NAME, data_dir, str(tmp_path / "s"))
  assert decoded == [] and os.listdir(tmp_path) == []

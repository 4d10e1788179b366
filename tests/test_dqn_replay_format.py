"""Tests for batch_rl.datasets.dqn_replay_format against Dopamine's own reader and writer."""

import gzip
import os
import pickle
import shutil
import tracemalloc

import numpy as np
import pytest

from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl import tf_utils

GENUINE_DIR = "/work/shared/data/dqn_replay/Pong/1/replay_logs"
# From /work/shared/data/README.md.
GENUINE_ADD_COUNTS = {0: 9999, 1: 19999, 2: 5695}
SIX = ("$store$_observation", "$store$_action", "$store$_reward", "$store$_terminal",
       "add_count", "invalid_range")


@pytest.fixture(scope="module")
def crb():
    from dopamine.tf.replay_memory import circular_replay_buffer

    return circular_replay_buffer


def _dopamine_buffer(crb, obs_shape, capacity):
    return crb.OutOfGraphReplayBuffer(
        observation_shape=obs_shape, stack_size=4, replay_capacity=capacity, batch_size=32
    )


def _assert_matches_dopamine(shard, buf):
    for key in fmt.STORE_KEYS:
        ours, theirs = getattr(shard, key), buf._store[key]
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, key
        np.testing.assert_array_equal(ours, theirs, err_msg=key)
    assert shard.info.add_count == int(buf.add_count)
    np.testing.assert_array_equal(shard.info.invalid_range, buf.invalid_range)
    assert shard.info.invalid_range.dtype == np.int64


def _random_arrays(rng, capacity, obs_shape):
    return dict(
        observation=rng.integers(0, 256, (capacity, *obs_shape), dtype=np.uint8),
        action=rng.integers(0, 18, capacity).astype(np.int32),
        reward=rng.normal(size=capacity).astype(np.float32),
        terminal=(rng.random(capacity) < 0.05).astype(np.uint8),
    )


def _path(d, name, suffix):
    return os.path.join(str(d), f"{name}_ckpt.{suffix}.gz")


def _gz_save(path, array, allow_pickle=False):
    with gzip.open(path, "wb") as f:
        np.save(f, array, allow_pickle=allow_pickle)


def _gunzip(path):
    with gzip.open(path, "rb") as f:
        return f.read()


@pytest.fixture
def small_shard(tmp_path):
    """A valid capacity-50 shard, suffix 0, in tmp_path/replay_logs."""
    d = tmp_path / "replay_logs"
    arrays = _random_arrays(np.random.default_rng(3), 50, (84, 84))
    fmt.write_shard(str(d), 0, add_count=37, **arrays)
    return d, arrays


# ------------------------------------------------------------------ 1. genuine files


@pytest.mark.parametrize("suffix", [0, 1, 2])
def test_genuine_shards_match_dopamine(crb, suffix):
    shard = fmt.read_shard(GENUINE_DIR, suffix)
    buf = _dopamine_buffer(crb, (84, 84), 10_000)
    buf.load(GENUINE_DIR, suffix)
    _assert_matches_dopamine(shard, buf)
    info = shard.info
    assert (info.capacity, info.observation_shape) == (10_000, (84, 84))
    assert info.add_count == GENUINE_ADD_COUNTS[suffix]
    assert info.is_full == (suffix == 1)
    assert info.cursor == GENUINE_ADD_COUNTS[suffix] % 10_000
    assert info.dtypes == fmt._CANONICAL_DTYPES


def test_genuine_listing():
    assert fmt.list_suffixes(GENUINE_DIR) == [0, 1, 2]


def test_episode_end_indices_is_never_unpickled(tmp_path):
    d = tmp_path / "replay_logs"
    shutil.copytree(GENUINE_DIR, d)
    sentinel = tmp_path / "unpickled"
    # A pickle that creates `sentinel` when loaded: any unpickling path would trip it.
    trap = pickle.dumps(type("Trap", (), {"__reduce__": lambda self: (open, (str(sentinel), "w"))})())
    for s in (0, 1, 2):
        os.chmod(_path(d, "episode_end_indices", s), 0o644)
        with gzip.open(_path(d, "episode_end_indices", s), "wb") as f:
            f.write(trap)
    assert fmt.list_suffixes(str(d)) == [0, 1, 2]
    trapped = fmt.read_shard(str(d), 2)
    assert not sentinel.exists()
    # Without the file at all (as in the public dataset) the result is identical.
    for s in (0, 1, 2):
        os.remove(_path(d, "episode_end_indices", s))
    plain = fmt.read_shard(str(d), 2)
    for key in fmt.STORE_KEYS:
        np.testing.assert_array_equal(getattr(trapped, key), getattr(plain, key))
    # The trap is live: unpickling it really does create the file.
    pickle.loads(trap).close()
    assert sentinel.exists()


# ------------------------------------------------------------------ 2. round trips


@pytest.mark.parametrize("obs_shape,add_count", [((84, 84), 730), ((10, 10, 4), 321)])
def test_write_then_read_and_dopamine_reads_ours(crb, tmp_path, obs_shape, add_count):
    capacity = 500
    arrays = _random_arrays(np.random.default_rng(0), capacity, obs_shape)
    ours_dir = tmp_path / "ours" / "replay_logs"
    fmt.write_shard(str(ours_dir), 5, add_count=add_count, **arrays)

    shard = fmt.read_shard(str(ours_dir), 5)
    for key in fmt.STORE_KEYS:
        np.testing.assert_array_equal(getattr(shard, key), arrays[key])
    assert shard.info.add_count == add_count and shard.info.observation_shape == obs_shape
    np.testing.assert_array_equal(
        shard.info.invalid_range, [(add_count % capacity - 1 + i) % capacity for i in range(5)]
    )

    buf = _dopamine_buffer(crb, obs_shape, capacity)
    buf.load(str(ours_dir), 5)
    _assert_matches_dopamine(shard, buf)

    # Dopamine re-saving what it loaded gives byte-identical .npy payloads.
    theirs_dir = tmp_path / "theirs"
    theirs_dir.mkdir()
    buf.save(str(theirs_dir), 5)
    for name in SIX:
        assert _gunzip(_path(ours_dir, name, 5)) == _gunzip(_path(theirs_dir, name, 5)), name


@pytest.mark.parametrize("obs_shape,n_adds", [((84, 84), 800), ((10, 10, 4), 300)])
def test_dopamine_add_and_save_read_by_us(crb, tmp_path, obs_shape, n_adds):
    rng = np.random.default_rng(1)
    capacity = 500
    buf = _dopamine_buffer(crb, obs_shape, capacity)
    steps_left = 0
    for _ in range(n_adds):
        if steps_left == 0:
            steps_left = int(rng.integers(10, 60))
        steps_left -= 1
        buf.add(rng.integers(1, 256, obs_shape, dtype=np.uint8), int(rng.integers(0, 6)),
                float(rng.choice([-1.0, 0.0, 1.0])), steps_left == 0)
    buf.save(str(tmp_path), 7)
    assert os.path.exists(_path(tmp_path, "episode_end_indices", 7))  # pickled, ignored

    shard = fmt.read_shard(str(tmp_path), 7)
    _assert_matches_dopamine(shard, buf)
    assert shard.info.is_full == (buf.add_count >= capacity)
    # Dopamine's 3 all-zero padding transitions follow each terminal (obs are drawn >= 1).
    # Only look at written entries: past add_count, Dopamine's np.empty storage is garbage.
    add_count = shard.info.add_count
    term = np.flatnonzero(shard.terminal[:add_count])
    # The latest add that wrote index t, then the 3 adds after it if they happened.
    last_add = term + capacity * ((add_count - 1 - term) // capacity)
    pad = [(n + k) % capacity for n in last_add for k in (1, 2, 3) if n + k < add_count]
    assert len(pad) >= 9
    assert not shard.observation[pad].any() and not shard.action[pad].any()


def test_never_filled_dopamine_buffer(crb, tmp_path):
    # Dopamine saves an empty buffer's invalid_range as np.zeros(stack_size), float64.
    buf = _dopamine_buffer(crb, (10, 10, 4), 30)
    buf._store = {k: np.zeros_like(v) for k, v in buf._store.items()}  # no np.empty garbage
    buf.save(str(tmp_path), 0)
    info = fmt.read_shard_info(str(tmp_path), 0)
    assert info.add_count == 0 and info.cursor == 0 and not info.is_full
    assert info.invalid_range.dtype == np.int64 and info.invalid_range.tolist() == [0, 0, 0, 0]
    _assert_matches_dopamine(fmt.read_shard(str(tmp_path), 0), buf)


def test_invalid_range_matches_dopamine(crb):
    for capacity in (5, 7, 100):
        for stack, horizon in ((4, 1), (1, 1), (4, 3)):
            for cursor in range(0, capacity, max(1, capacity // 7)):
                ours = fmt.invalid_range(cursor, capacity, stack, horizon)
                assert ours.dtype == np.int64
                np.testing.assert_array_equal(ours, crb.invalid_range(cursor, capacity, stack, horizon))
    with pytest.raises(ValueError):
        fmt.invalid_range(5, 5, 4, 1)


def test_safely_castable_dtypes_are_accepted(small_shard):
    d, arrays = small_shard
    _gz_save(_path(d, "$store$_terminal", 0), arrays["terminal"].astype(bool))
    _gz_save(_path(d, "$store$_action", 0), arrays["action"].astype(">i2"))
    shard = fmt.read_shard(str(d), 0)
    assert shard.info.dtypes["terminal"] == np.bool_
    assert shard.terminal.dtype == np.uint8 and shard.action.dtype == np.int32
    np.testing.assert_array_equal(shard.terminal, arrays["terminal"])
    np.testing.assert_array_equal(shard.action, arrays["action"])


# ------------------------------------------------------------------ 3. bad input


def _raises_naming(path, fn, *args, match=None):
    with pytest.raises(fmt.ReplayFormatError) as e:
        fn(*args)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)
    if match:
        assert match in str(e.value), str(e.value)
    return str(e.value)


def test_nonexistent_dir(tmp_path):
    d = str(tmp_path / "Pong" / "1" / "replay_logs")
    for fn, args in ((fmt.list_suffixes, ()), (fmt.read_shard_info, (0,)), (fmt.read_shard, (0,))):
        msg = _raises_naming(d, fn, d, *args, match="<root>/<Game>/<run>/replay_logs/")
        assert "$store$_observation_ckpt.N.gz" in msg


def test_suffix_not_present_lists_available():
    _raises_naming(GENUINE_DIR, fmt.read_shard_info, GENUINE_DIR, 5, match="[0, 1, 2]")


def test_missing_reward_file(tmp_path):
    d = tmp_path / "replay_logs"
    shutil.copytree(GENUINE_DIR, d)
    os.chmod(d, 0o755)
    os.remove(_path(d, "$store$_reward", 1))
    assert fmt.list_suffixes(str(d)) == [0, 2]
    _raises_naming(_path(d, "$store$_reward", 1), fmt.read_shard, str(d), 1, match="[0, 2]")
    for s in (0, 2):
        os.remove(_path(d, "add_count", s))
    msg = _raises_naming(d, fmt.list_suffixes, str(d), match="missing")
    assert "$store$_reward_ckpt.1.gz" in msg and "add_count_ckpt.0.gz" in msg


def test_truncated_observation(tmp_path):
    d = tmp_path / "replay_logs"
    shutil.copytree(GENUINE_DIR, d)
    path = _path(d, "$store$_observation", 0)
    os.chmod(path, 0o644)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    assert fmt.read_shard_info(str(d), 0).capacity == 10_000  # headers only: still fine
    _raises_naming(path, fmt.read_shard, str(d), 0, match="truncated")


def test_missing_gzip_trailer_is_detected(small_shard):
    # Cutting only the CRC/length trailer leaves the payload intact: caught only because
    # the reader reads to end of stream.
    d, _ = small_shard
    path = _path(d, "$store$_action", 0)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-8])
    _raises_naming(path, fmt.read_shard, str(d), 0)


def test_corrupt_gzip(small_shard):
    d, arrays = small_shard
    path = _path(d, "$store$_reward", 0)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(300))
    _raises_naming(path, fmt.read_shard_info, str(d), 0, match="not a gzip-compressed .npy")
    _gz_save(path, arrays["reward"])
    # Flipped bytes inside the deflate stream of a valid header.
    path = _path(d, "$store$_observation", 0)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    with open(path, "wb") as f:
        f.write(bytes(data))
    _raises_naming(path, fmt.read_shard, str(d), 0)


def test_mismatched_lengths(small_shard):
    d, arrays = small_shard
    path = _path(d, "$store$_action", 0)
    _gz_save(path, arrays["action"][:-1])
    msg = _raises_naming(path, fmt.read_shard_info, str(d), 0, match="50 vs 49")
    assert _path(d, "$store$_observation", 0) in msg


def test_object_and_pickled_store_files(small_shard):
    d, arrays = small_shard
    path = _path(d, "$store$_terminal", 0)
    _gz_save(path, arrays["terminal"].astype(object), allow_pickle=True)
    _raises_naming(path, fmt.read_shard_info, str(d), 0, match="object")
    with gzip.open(path, "wb") as f:
        pickle.dump(arrays["terminal"], f)
    _raises_naming(path, fmt.read_shard_info, str(d), 0, match="pickle")


def test_wrong_dtype_and_fortran_order(small_shard):
    d, arrays = small_shard
    path = _path(d, "$store$_action", 0)
    _gz_save(path, arrays["action"].astype(np.float64))
    _raises_naming(path, fmt.read_shard_info, str(d), 0, match="int32")
    _gz_save(path, arrays["action"])
    path = _path(d, "$store$_observation", 0)
    _gz_save(path, np.asfortranarray(arrays["observation"]))
    _raises_naming(path, fmt.read_shard_info, str(d), 0, match="Fortran")


# ------------------------------------------------------------------ 4. memory


def test_observation_out_is_filled_in_place(small_shard):
    d, arrays = small_shard
    big = np.zeros((3, 50, 84, 84), np.uint8)
    shard = fmt.read_shard(str(d), 0, observation_out=big[1])
    assert np.shares_memory(shard.observation, big)
    np.testing.assert_array_equal(big[1], arrays["observation"])
    assert not big[0].any() and not big[2].any()
    _raises_naming(_path(d, "$store$_observation", 0), fmt.read_shard, str(d), 0, big[:, :2])
    with pytest.raises(ValueError):
        fmt.read_shard(str(d), 0, observation_out=big[:, 0])  # right shape, not contiguous


def test_peak_memory_near_array_size(tmp_path):
    capacity = 7_000  # 7000 * 84 * 84 bytes = 49.4 MB
    rng = np.random.default_rng(4)
    # Tiled random frames: realistic header/shape, compresses fast at gzip level 9.
    frames = rng.integers(0, 256, (7, 84, 84), dtype=np.uint8)
    observation = np.tile(frames, (capacity // 7, 1, 1))
    arrays = _random_arrays(rng, capacity, (1,))
    arrays["observation"] = observation
    fmt.write_shard(str(tmp_path), 0, add_count=capacity, **arrays)
    fmt.read_shard_info(str(tmp_path), 0)  # TensorFlow import and caches, outside tracing
    del arrays

    tracemalloc.start()
    try:
        shard = fmt.read_shard(str(tmp_path), 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ratio = peak / observation.nbytes
    print(f"read_shard peak traced memory / observation bytes = {ratio:.3f}")
    assert 1.0 <= ratio < 1.3  # >= 1: tracemalloc does see the numpy array
    np.testing.assert_array_equal(shard.observation, observation)


# ------------------------------------------------------------------ 5. atomic writes


def test_write_is_atomic_and_add_count_last(tmp_path, monkeypatch):
    tf = tf_utils.tensorflow()
    renamed = []
    real_rename = tf.io.gfile.rename

    def rename(src, dst, overwrite=False):
        renamed.append(os.path.basename(dst))
        return real_rename(src, dst, overwrite=overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", rename)
    d = tmp_path / "new" / "replay_logs"
    arrays = _random_arrays(np.random.default_rng(5), 40, (10, 10, 4))
    fmt.write_shard(str(d), 2, add_count=45, **arrays)
    assert sorted(os.listdir(d)) == sorted(f"{n}_ckpt.2.gz" for n in SIX)  # no temp files
    assert renamed[-1] == "add_count_ckpt.2.gz" and len(renamed) == 6
    mtimes = {n: os.stat(_path(d, n, 2)).st_mtime_ns for n in SIX}
    assert mtimes["add_count"] == max(mtimes.values())


def test_failed_rewrite_leaves_no_complete_shard(crb, tmp_path, monkeypatch):
    buf = _dopamine_buffer(crb, (10, 10, 4), 40)
    for i in range(30):
        buf.add(np.full((10, 10, 4), i, np.uint8), 1, 0.0, i % 9 == 8)
    buf.save(str(tmp_path), 3)
    assert fmt.list_suffixes(str(tmp_path)) == [3]

    tf = tf_utils.tensorflow()
    real_rename = tf.io.gfile.rename

    def failing_rename(src, dst, overwrite=False):
        if "$store$_reward" in dst:
            raise OSError("disk full")
        return real_rename(src, dst, overwrite=overwrite)

    monkeypatch.setattr(tf.io.gfile, "rename", failing_rename)
    arrays = _random_arrays(np.random.default_rng(6), 40, (10, 10, 4))
    with pytest.raises(OSError, match="disk full"):
        fmt.write_shard(str(tmp_path), 3, add_count=12, **arrays)
    left = os.listdir(tmp_path)
    assert not [n for n in left if ".tmp-" in n]
    # The old add_count and the stale episode_end_indices pickle went first.
    assert "add_count_ckpt.3.gz" not in left and "episode_end_indices_ckpt.3.gz" not in left
    with pytest.raises(fmt.ReplayFormatError):
        fmt.list_suffixes(str(tmp_path))

    monkeypatch.setattr(tf.io.gfile, "rename", real_rename)
    fmt.write_shard(str(tmp_path), 3, add_count=12, **arrays)
    np.testing.assert_array_equal(fmt.read_shard(str(tmp_path), 3).reward, arrays["reward"])


def test_write_validates_before_touching_disk(tmp_path):
    d = tmp_path / "never"
    good = _random_arrays(np.random.default_rng(7), 20, (84, 84))
    bad_cases = [
        dict(good, action=good["action"][:-1]),
        dict(good, action=good["action"].astype(np.float32)),
        dict(good, terminal=np.full(20, 300)),
        dict(good, observation=good["observation"].astype(np.float32)),
        dict(good, observation=good["observation"].astype(np.int16) - 1),
    ]
    for arrays in bad_cases:
        with pytest.raises(ValueError):
            fmt.write_shard(str(d), 0, add_count=20, **arrays)
    with pytest.raises(ValueError):
        fmt.write_shard(str(d), 0, add_count=-1, **good)
    with pytest.raises(ValueError):
        fmt.write_shard(str(d), 0, add_count=3, invalid_range=np.array([19, 20]), **good)
    assert not d.exists()
    # Lossless integer narrowing is fine: int64 actions, bool terminals.
    fmt.write_shard(str(d), 0, add_count=20, **dict(
        good, action=good["action"].astype(np.int64), terminal=good["terminal"].astype(bool)))
    shard = fmt.read_shard(str(d), 0)
    assert shard.info.dtypes["action"] == np.int32
    np.testing.assert_array_equal(shard.action, good["action"])


def test_checkpoints_of_different_capacity_are_refused_by_loader_and_converter(tmp_path):
  from batch_rl.datasets import fixed_replay, store  # pylint: disable=g-import-not-at-top
  replay_dir = str(tmp_path / "replay_logs")
  for suffix, capacity in ((0, 50), (1, 60)):
    fmt.write_shard(replay_dir, suffix, observation=np.zeros((capacity, 10, 10), np.uint8),
                    action=np.zeros(capacity, np.int32),
                    reward=np.zeros(capacity, np.float32),
                    terminal=np.zeros(capacity, np.uint8), add_count=capacity)
  with pytest.raises(fmt.ReplayFormatError, match=r"suffix 0 has capacity 50.*suffix 1 has 60"):
    fixed_replay.load_fixed_replay(replay_dir)
  with pytest.raises(fmt.ReplayFormatError, match="separate stores"):
    store.convert(replay_dir, str(tmp_path / "store"))
  assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()

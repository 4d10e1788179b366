"""The memory-mapped store: same data as the .gz files, atomic conversion, clear failures."""
import os

import jax
import numpy as np
import pytest

from batch_rl.datasets import cli
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import store
from tests.test_data_subsampling import CAPACITY, EPISODES, write_tagged


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = tmp_path_factory.mktemp("source")
  write_tagged(path, EPISODES, CAPACITY, final_suffix=2)
  return path


def assert_same(a: fixed_replay.FixedReplay, b: fixed_replay.FixedReplay):
  for x, y in zip(a.arrays, b.arrays):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_store_loads_the_same_arrays_as_the_gz_files(source, tmp_path):
  out = store.convert(str(source), str(tmp_path / "store"))
  assert out.suffixes == (0, 1, 2) and isinstance(out.observation, np.memmap)
  for kwargs in ({}, {"suffixes": [1, 2]}, {"suffixes": [0, 2]},
                 {"data_fraction": 0.3, "subsample": "uniform_trajectories", "seed": 4}):
    from_gz = fixed_replay.load_fixed_replay(str(source), **kwargs)
    from_store = fixed_replay.load_fixed_replay(store_dir=str(tmp_path / "store"), **kwargs)
    assert_same(from_gz, from_store)
    assert from_store.suffixes == from_gz.suffixes
  # Adjacent checkpoints are a view of the map (no private copy of the frames).
  view = fixed_replay.load_fixed_replay(store_dir=str(tmp_path / "store"), suffixes=[1, 2])
  assert isinstance(view.arrays.observation, np.memmap)
  assert os.path.samefile(view.arrays.observation.filename,
                          os.path.join(out.path, "observation.npy"))
  assert not view.arrays.observation.flags.writeable
  device = jax.device_put(view.arrays)  # what the Runner does
  np.testing.assert_array_equal(np.asarray(device.observation), view.arrays.observation)


def test_convert_is_idempotent_and_refuses_foreign_directories(source, tmp_path):
  first = store.convert(str(source), str(tmp_path / "s"), [0])
  again = store.convert(str(source), str(tmp_path / "s"), [0])
  assert again.suffixes == first.suffixes
  with pytest.raises(store.StoreError, match=r"already holds checkpoints \[0\]"):
    store.convert(str(source), str(tmp_path / "s"), [1])
  (tmp_path / "mine").mkdir()
  with pytest.raises(store.StoreError, match="exists and is not a converted store"):
    store.convert(str(source), str(tmp_path / "mine"))


def test_interrupted_conversion_is_never_used_and_is_redone(source, tmp_path):
  # A conversion that died half-way leaves only <store>.partial (with a marker).
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in os.listdir(source):
    os.link(source / name, broken / name)
  os.remove(broken / "$store$_observation_ckpt.1.gz")
  with open(source / "$store$_observation_ckpt.1.gz", "rb") as f:
    (broken / "$store$_observation_ckpt.1.gz").write_bytes(f.read()[:300])  # truncated
  with pytest.raises(fmt.ReplayFormatError, match=r"observation_ckpt\.1\.gz.*truncated"):
    store.convert(str(broken), str(tmp_path / "s"))
  assert not os.path.exists(tmp_path / "s") and not os.path.exists(tmp_path / "s.partial")

  # A killed process cannot clean up: simulate what it leaves behind.
  partial = tmp_path / "s.partial"
  partial.mkdir()
  (partial / ".batch_rl_partial_store").touch()
  (partial / "observation.npy").write_bytes(b"\x93NUMPY half")
  with pytest.raises(store.StoreError, match=r"s\.partial.*rerun"):
    fixed_replay.load_fixed_replay(store_dir=str(tmp_path / "s"))
  out = store.convert(str(source), str(tmp_path / "s"))
  assert not partial.exists()
  assert_same(fixed_replay.load_fixed_replay(store_dir=out.path),
              fixed_replay.load_fixed_replay(str(source)))


def test_truncated_store_file_is_named(source, tmp_path):
  out = store.convert(str(source), str(tmp_path / "s"), [0])
  path = os.path.join(out.path, "reward.npy")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 8)
  with pytest.raises(store.StoreError, match="reward.npy"):
    store.open_store(out.path)


def test_too_small_disk_is_refused_before_writing(source, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(store, "free_bytes", lambda path: 1000)
  need = store.required_bytes(3, CAPACITY, (3, 3))
  with pytest.raises(store.InsufficientSpaceError, match=r"needs .* GB .* only 0\.00 GB"):
    store.convert(str(source), str(tmp_path / "s"))
  assert os.listdir(tmp_path) == []
  assert cli.main(["convert", str(source), str(tmp_path / "s")]) == 2
  assert "of disk; only" in capsys.readouterr().err
  assert need == 3 * CAPACITY * (9 + 4 + 4 + 1)

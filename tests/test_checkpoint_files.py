"""Checkpoint files: arrays beside the state, partial checkpoints, pruning, atomicity."""
import os

import numpy as np
import pytest

from batch_rl import checkpointing


def names(directory):
  return sorted(os.listdir(directory))


@pytest.mark.parametrize("compress", [False, True])
def test_arrays_round_trip_and_are_pruned_with_their_checkpoint(tmp_path, compress):
  directory = str(tmp_path / "ckpt")
  frames = np.random.RandomState(0).randint(0, 255, (3, 50, 84, 84), np.uint8)
  for iteration in range(3):
    checkpointing.save(directory, iteration, {"step": np.int64(iteration)}, keep=2,
                       arrays={"buffer/observation": frames + iteration,
                               "buffer/add_count": np.int32(iteration)},
                       compress=compress)
  assert names(directory) == ["ckpt_000001.arrays.npz", "ckpt_000001.msgpack",
                              "ckpt_000002.arrays.npz", "ckpt_000002.msgpack"]
  arrays = checkpointing.read_arrays(directory, 2)
  np.testing.assert_array_equal(arrays["buffer/observation"], frames + 2)
  # Aligned, so that jax.device_put on the CPU aliases it instead of copying it.
  assert arrays["buffer/observation"].ctypes.data % 64 == 0
  assert arrays["buffer/add_count"] == 2 and arrays["buffer/add_count"].dtype == np.int32


def test_a_partial_checkpoint_is_read_back_and_removed_once_its_iteration_completes(tmp_path):
  directory = str(tmp_path / "ckpt")
  checkpointing.save(directory, 0, {"step": np.int64(5)})
  checkpointing.save_partial(directory, 1, {"step": np.int64(7), "calls": np.int64(3)},
                             arrays={"x": np.arange(4)})
  assert checkpointing.list_iterations(directory) == [0]  # not a completed iteration
  assert checkpointing.list_partial(directory) == [1]
  assert int(checkpointing.read_partial(directory, 1)["calls"]) == 3
  np.testing.assert_array_equal(checkpointing.read_arrays(directory, 1, partial=True)["x"],
                                np.arange(4))
  assert checkpointing.read_partial(directory, 2) is None
  checkpointing.save(directory, 1, {"step": np.int64(9)})
  assert checkpointing.list_partial(directory) == []
  assert names(directory) == ["ckpt_000000.msgpack", "ckpt_000001.msgpack"]


def test_online_checkpoints_name_the_agent_state_for_readers():
  state = {"params": {"w": 1}, "step": 3}
  assert checkpointing.agent_state_dict(state) is state  # offline: the state itself
  assert checkpointing.agent_state_dict({"agent": state, "carry": {}}) is state
  assert checkpointing.agent_state_dict({"agent": {"0": state, "1": {}}}) is state


def test_a_failed_arrays_write_leaves_nothing(tmp_path, monkeypatch):
  directory = str(tmp_path / "ckpt")
  monkeypatch.setattr(checkpointing, "_free_bytes", lambda _: 10)  # 10 bytes free
  with pytest.raises(checkpointing.WriteError, match="ckpt_000000.arrays.npz"):
    checkpointing.save(directory, 0, {"step": np.int64(0)}, arrays={"x": np.zeros(1000)})
  assert names(directory) == []  # no .tmp, and no .msgpack committing a missing array

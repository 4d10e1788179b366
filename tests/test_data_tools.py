"""`python -m batch_rl.data` subsample / verify / inspect, checked against Dopamine's buffer."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from batch_rl.datasets import subset as data_tools
from batch_rl.datasets import cli
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import subsampling
from batch_rl.datasets import verify
from tests.test_data_subsampling import CAPACITY, EPISODES, dopamine_valid, write_tagged


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = tmp_path_factory.mktemp("source")
  write_tagged(path, EPISODES, CAPACITY, final_suffix=2)
  return path


def dopamine_transitions(buffer, indices):
  state, action, reward, next_state, next_action, _, terminal, _ = \
      buffer.sample_transition_batch(batch_size=len(indices), indices=np.asarray(indices))
  return state, action, reward, next_state, next_action, terminal


@pytest.mark.parametrize("scheme,horizon", [("uniform_transitions", 1),
                                            ("uniform_trajectories", 3),
                                            ("checkpoint_prefix", 1),
                                            ("first_fraction", 2)])
def test_subset_reads_back_identically_in_dopamine(source, tmp_path, scheme, horizon):
  out = tmp_path / "subset"
  written = data_tools.write_subset(str(source), str(out), scheme, data_fraction=0.3, seed=2,
                                    update_horizon=horizon)
  chosen = fixed_replay.load_fixed_replay(str(source), data_fraction=0.3, seed=2,
                                          subsample=scheme, update_horizon=horizon)
  valid = np.asarray(chosen.arrays.valid)
  assert sum(written.values()) == valid.size
  for slot, suffix in enumerate(chosen.suffixes):
    kept = valid[valid // CAPACITY == slot] - slot * CAPACITY
    if suffix not in written:
      assert kept.size == 0
      assert not os.path.exists(out / f"add_count_ckpt.{suffix}.gz")
      continue
    info = fmt.read_shard_info(str(out), suffix)
    # Dopamine's own reader: exactly the kept states are valid, in time order ...
    new_valid, new_buffer = dopamine_valid(out, suffix, info.capacity, update_horizon=horizon)
    _, old_buffer = dopamine_valid(source, suffix, CAPACITY, update_horizon=horizon)
    assert new_valid.size == kept.size
    old_time = subsampling.time_position(
        subsampling.ShardData(suffix, CAPACITY, int(old_buffer.add_count),
                              old_buffer._store["terminal"], kept), kept)
    kept_in_time = kept[np.argsort(old_time)]
    # ... and each is the same transition as in the source.
    for ours, theirs in zip(dopamine_transitions(new_buffer, new_valid),
                            dopamine_transitions(old_buffer, kept_in_time)):
      np.testing.assert_array_equal(ours, theirs)
  # And our loader reads the subset back to the same number of states.
  again = fixed_replay.load_fixed_replay(str(out), update_horizon=horizon)
  assert again.num_transitions == valid.size


def test_verify_reports_statistics_and_checksums(source, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(source, copy)
  report = verify.verify(str(copy))
  assert report["errors"] == []
  for suffix in (0, 1, 2):
    entry = report["checkpoints"][str(suffix)]
    valid, buffer = dopamine_valid(copy, suffix, CAPACITY)
    stats = entry["stats"]
    assert stats["valid_transitions"] == valid.size
    assert stats["episodes_ended"] == int(buffer._store["terminal"].sum())
    actions = buffer._store["action"][valid]
    assert stats["action_histogram"] == {str(a): int(np.sum(actions == a))
                                         for a in np.unique(actions)}
    assert sum(stats["reward_histogram"].values()) == valid.size
    assert len(entry["files"]) == 6
    raw = open(copy / f"$store$_action_ckpt.{suffix}.gz", "rb").read()
    assert entry["files"][f"$store$_action_ckpt.{suffix}.gz"]["sha256"] == \
        hashlib.sha256(raw).hexdigest()
  assert report["totals"]["valid_transitions"] == sum(
      dopamine_valid(copy, s, CAPACITY)[0].size for s in (0, 1, 2))


def test_verify_cli_names_truncated_corrupt_and_changed_files(source, tmp_path, capsys):
  copy = tmp_path / "copy"
  shutil.copytree(source, copy)
  report_path = tmp_path / "report.json"
  assert cli.main(["verify", str(copy), "--output", str(report_path)]) == 0
  first = json.loads(report_path.read_text())
  assert first["errors"] == [] and first["totals"]["valid_transitions"] > 0

  obs = copy / "$store$_observation_ckpt.1.gz"
  obs.write_bytes(obs.read_bytes()[:-200])                        # truncated
  reward = copy / "$store$_reward_ckpt.2.gz"
  raw = bytearray(reward.read_bytes())
  raw[len(raw) // 2] ^= 0xFF                                      # corrupt (CRC fails)
  reward.write_bytes(bytes(raw))
  os.remove(copy / "$store$_terminal_ckpt.0.gz")                # missing
  capsys.readouterr()
  assert cli.main(["verify", str(copy), "--output", str(report_path)]) == 1
  out = capsys.readouterr().out
  errors = [line for line in out.splitlines() if line.startswith("ERROR")]
  assert len(errors) == 3
  assert any("$store$_observation_ckpt.1.gz" in e and "truncated" in e for e in errors)
  assert any("$store$_reward_ckpt.2.gz" in e for e in errors)
  assert any("$store$_terminal_ckpt.0.gz" in e and "missing" in e for e in errors)
  assert "CHANGED since the last verify: $store$_observation_ckpt.1.gz" in out
  assert "CHANGED since the last verify: $store$_reward_ckpt.2.gz" in out


def test_inspect_and_help(source, capsys):
  assert cli.main(["inspect", str(source)]) == 0
  out = capsys.readouterr().out
  assert "complete checkpoints (3): [0, 1, 2]" in out and f"capacity {CAPACITY}" in out
  for command in ("inspect", "convert", "subsample", "verify"):
    with pytest.raises(SystemExit) as e:
      cli.build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
  assert cli.main(["inspect", str(source / "nowhere")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_cli_runs_as_a_module(source, tmp_path):
  out = subprocess.run([sys.executable, "-m", "batch_rl.data", "subsample", str(source),
                        str(tmp_path / "sub"), "--scheme", "first_fraction",
                        "--num_transitions", "40"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.returncode == 0, out.stderr
  assert "Wrote 40 transitions" in out.stdout
  assert fixed_replay.load_fixed_replay(str(tmp_path / "sub")).num_transitions == 40


def test_inspect_and_verify_report_a_stale_tail_and_a_backwards_add_count(tmp_path):
  """A full checkpoint, then a partial one whose buffer still holds, past its cursor,
  40 entries of an earlier pass (3 of them terminal): information, not errors."""
  capacity, frames = 100, (4, 4)
  rng = np.random.default_rng(0)

  def arrays(terminal):
    return dict(observation=rng.integers(1, 255, (capacity,) + frames, dtype=np.uint8),
                action=rng.integers(1, 3, capacity).astype(np.int32),
                reward=np.ones(capacity, np.float32), terminal=terminal)

  full_terminal = np.zeros(capacity, np.uint8)
  full_terminal[[30, 60, 90]] = 1
  fmt.write_shard(str(tmp_path), 0, add_count=250, **arrays(full_terminal))
  partial = arrays(np.zeros(capacity, np.uint8))
  partial["terminal"][[70, 80, 95]] = 1  # past the cursor at 60
  for key in ("observation", "action", "reward"):
    partial[key][60:] = 0
  partial["action"][60:100] = 2  # the stale tail: an earlier pass's actions
  fmt.write_shard(str(tmp_path), 1, add_count=60, **partial)

  text = data_tools.inspect(str(tmp_path))
  assert "checkpoint 1: 40 of the 40 entries past the cursor (add_count 60" in text
  assert "checkpoint 1: 3 terminal flags past the cursor" in text
  assert "checkpoint 1: add_count 60 runs backwards from checkpoint 0's 250." in text
  report = verify.verify(str(tmp_path))
  assert report["errors"] == []
  assert any("40 of the 40 entries past the cursor" in n for n in report["notes"])
  assert any("3 terminal flags past the cursor" in n for n in report["notes"])
  assert any("runs backwards" in n for n in report["notes"])
  assert report["checkpoints"]["1"]["stats"]["episodes_ended"] == 0

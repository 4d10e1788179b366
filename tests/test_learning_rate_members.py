"""Learning rates x seeds in one program (`FixedReplayRunner.learning_rates`): member
(rate, k) logs what a solo run with `create_optimizer.learning_rate = rate` and seed k
logs, in lr_<rate>/seed_<k>/, with checkpoints a solo run reads, and resumes."""
import os
import shutil

import gin
import pytest

from batch_rl import gin_bindings
from batch_rl.study import status as status_lib
from tests import conftest
from tests.test_runner import clear_gin, replay_dir  # pylint: disable=unused-import
from tests.test_vmapped_seeds import assert_same_logs, bindings, run, scalars

RATES = (1e-4, 3e-3)  # 30x apart, so a member at the wrong rate logs a different loss


def member_bindings(replay_dir, **kwargs):
  return bindings(replay_dir, **kwargs) + [
      f"FixedReplayRunner.learning_rates = {list(RATES)}",
      "create_optimizer.learning_rate = 5e-4"]  # the base rate the factors are taken from


@pytest.fixture(scope="module")
def members_run(replay_dir, tmp_path_factory):
  base = tmp_path_factory.mktemp("members") / "run"
  run(base, member_bindings(replay_dir, seed=2, num_seeds=2))
  gin.clear_config()
  return base


def test_each_member_logs_what_its_solo_run_logs(members_run, replay_dir, tmp_path):
  assert sorted(os.listdir(members_run)) == ["bindings.gin", "config.gin", "lr_0.0001",
                                             "lr_0.003"]
  assert sorted(os.listdir(members_run / "lr_0.003")) == ["seed_2", "seed_3"]
  run(tmp_path / "solo", bindings(replay_dir, seed=3, data_seed=2)
      + ["create_optimizer.learning_rate = 0.003"])
  solo = scalars(tmp_path / "solo")
  assert_same_logs(scalars(members_run / "lr_0.003" / "seed_3"), solo)
  # The rates differ from each other: same seed, same initialisation, another loss.
  slow = scalars(members_run / "lr_0.0001" / "seed_3")
  assert slow[("Train/Loss", 0)] != solo[("Train/Loss", 0)]
  assert slow[("Params/distance_from_init", 1)] < solo[("Params/distance_from_init", 1)]


def test_each_member_directory_records_its_own_rate_and_continues_solo(
    members_run, replay_dir, tmp_path):
  for rate in RATES:
    for seed in (2, 3):
      with open(members_run / f"lr_{rate}" / f"seed_{seed}" / "config.gin") as f:
        found = gin_bindings.bindings(f.read())
      assert found["create_optimizer.learning_rate"] == rate
      assert found["FixedReplayRunner.seed"] == seed
      assert "FixedReplayRunner.learning_rates" not in found
      assert "FixedReplayRunner.num_seeds" not in found
  # A member's checkpoint is a solo run's: a solo rerun there restores it and goes on.
  copy = tmp_path / "member"
  shutil.copytree(members_run / "lr_0.0001" / "seed_2", copy)
  run(copy, bindings(replay_dir, seed=2, data_seed=2, num_iterations=3)
      + ["create_optimizer.learning_rate = 0.0001"])
  assert conftest.checkpointed_iteration(str(copy)) == 2


def test_members_resume_and_status_reads_them(members_run, replay_dir, tmp_path):
  base = tmp_path / "resumed"
  run(base, member_bindings(replay_dir, seed=2, num_seeds=2, num_iterations=1))
  assert status_lib.completed_iterations(str(base)) == 1
  run(base, member_bindings(replay_dir, seed=2, num_seeds=2, num_iterations=2))
  assert status_lib.completed_iterations(str(base)) == 2
  for rate in RATES:
    member = f"lr_{rate}/seed_3"
    assert_same_logs(scalars(base / member), scalars(members_run / member))


@pytest.mark.parametrize("value, message", [
    ("[]", "is empty"), ("[0.001, -1.0]", "positive"), ("[0.001, 0.001]", "repeats"),
    ("0.001", "expected a list")])
def test_bad_learning_rates_name_the_binding(replay_dir, tmp_path, value, message):
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=r"FixedReplayRunner\.learning_rates.*" + message):
    run(tmp_path / "bad", bindings(replay_dir) + [f"FixedReplayRunner.learning_rates = {value}"])
  assert not (tmp_path / "bad").exists()

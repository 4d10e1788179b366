"""Seeds trained together (`FixedReplayRunner.num_seeds`): seed k of a vmapped run logs
what a solo run with seed k logs, in a run directory of its own, and resumes."""
import os

import gin
import jax
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl import gin_bindings
from tests import conftest
from tests.test_runner import clear_gin, replay_dir  # pylint: disable=unused-import

# Float tolerance between a vmapped and a plain program (XLA may fuse them differently).
RTOL, ATOL = 2e-4, 1e-5
TIMING_TAGS = ("Train/StepsPerSecond",)  # and every Time/ tag: wall clock, not results


def bindings(replay_dir, *, seed=0, num_seeds=1, num_iterations=2, data_seed=None):
  out = [f"load_fixed_replay.replay_dir = '{replay_dir}'",
         "FixedReplayRunner.game = 'breakout'",
         "FixedReplayRunner.domain = 'minatar'",
         f"FixedReplayRunner.num_iterations = {num_iterations}",
         "FixedReplayRunner.training_steps = 30",
         "FixedReplayRunner.evaluation_steps = 60",
         "FixedReplayRunner.num_eval_envs = 2",
         "FixedReplayRunner.diagnostics_batch_size = 64",
         f"FixedReplayRunner.seed = {seed}",
         "MinAtarEnvironment.minimal_action_set = True",
         "DQNAgent.network = @MinAtarDQNNetwork",
         "DQNAgent.target_update_period = 10",
         "load_fixed_replay.data_fraction = 0.5"]
  if num_seeds != 1:
    out.append(f"FixedReplayRunner.num_seeds = {num_seeds}")
  if data_seed is not None:
    out.append(f"FixedReplayRunner.data_seed = {data_seed}")
  return out


def run(base_dir, gin_bindings_list):
  from batch_rl.runners import offline  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  config_lib.parse_gin([], gin_bindings_list)
  return offline.FixedReplayRunner(base_dir=str(base_dir)).run()


def scalars(run_dir):
  return {(tag, step): values for (where, tag, step), values in
          conftest.run_scalars(str(run_dir)).items() if where == "."}


def assert_same_logs(vmapped, solo):
  """Every scalar of every step equal within float tolerance, timings aside."""
  result = lambda tag: tag not in TIMING_TAGS and not tag.startswith("Time/")
  keys = {k for k in solo if result(k[0])}
  assert keys == {k for k in vmapped if result(k[0])}
  for key in sorted(keys):
    np.testing.assert_allclose(vmapped[key], solo[key], rtol=RTOL, atol=ATOL,
                               err_msg=str(key))


@pytest.fixture(scope="module")
def vmapped_run(replay_dir, tmp_path_factory):
  base = tmp_path_factory.mktemp("vmapped") / "run"
  run(base, bindings(replay_dir, seed=3, num_seeds=3))
  gin.clear_config()
  return base


def test_each_seed_logs_what_its_solo_run_logs(vmapped_run, replay_dir, tmp_path):
  assert sorted(os.listdir(vmapped_run)) == ["bindings.gin", "config.gin", "seed_3",
                                             "seed_4", "seed_5"]
  # Seed 5 alone, on the data the vmapped run chose with its first seed (data_seed 3).
  run(tmp_path / "solo5", bindings(replay_dir, seed=5, data_seed=3))
  solo = scalars(tmp_path / "solo5")
  vmapped = scalars(vmapped_run / "seed_5")
  assert ("Rank/srank", 1) in solo and ("Eval/AverageReturn", 1) in solo
  assert_same_logs(vmapped, solo)
  # The seeds differ from each other (their own init, sampling and evaluation keys).
  other = scalars(vmapped_run / "seed_4")
  assert other[("Train/Loss", 0)] != vmapped[("Train/Loss", 0)]


def test_each_seed_directory_records_its_own_seed(vmapped_run):
  for seed in (3, 4, 5):
    for name in ("config.gin", "bindings.gin"):
      with open(vmapped_run / f"seed_{seed}" / name) as f:
        found = gin_bindings.bindings(f.read())
      assert found["FixedReplayRunner.seed"] == seed, name
      assert found["FixedReplayRunner.data_seed"] == 3, name
      assert "FixedReplayRunner.num_seeds" not in found, name
    assert conftest.checkpointed_iteration(str(vmapped_run / f"seed_{seed}")) == 1


def test_a_seed_directory_continues_as_a_solo_run(vmapped_run, replay_dir, tmp_path):
  """Its recorded bindings are a solo run's: a solo rerun there resumes, not refuses."""
  import shutil  # pylint: disable=g-import-not-at-top
  copy = tmp_path / "seed_4"
  shutil.copytree(vmapped_run / "seed_4", copy)
  run(copy, bindings(replay_dir, seed=4, data_seed=3, num_iterations=3))
  assert conftest.checkpointed_iteration(str(copy)) == 2
  assert ("Train/Loss", 2) in scalars(copy)


def test_vmapped_run_resumes_as_if_never_interrupted(vmapped_run, replay_dir, tmp_path):
  base = tmp_path / "resumed"
  run(base, bindings(replay_dir, seed=3, num_seeds=3, num_iterations=2))
  # A stop between the seeds' checkpoint writes: seed 5 is an iteration behind, so
  # every seed redoes iteration 1 (its events are dropped first).
  os.remove(base / "seed_5" / "checkpoints" / "ckpt_000001.msgpack")
  run(base, bindings(replay_dir, seed=3, num_seeds=3, num_iterations=2))
  assert all(len(values) == 1 for values in scalars(base / "seed_3").values())
  for seed in (3, 4, 5):
    assert_same_logs(scalars(base / f"seed_{seed}"),
                     scalars(vmapped_run / f"seed_{seed}"))


def test_num_seeds_below_one_names_the_binding(replay_dir, tmp_path):
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=r"FixedReplayRunner\.num_seeds"):
    run(tmp_path / "bad", bindings(replay_dir, num_seeds=0))
  assert not (tmp_path / "bad").exists()


def test_seeds_that_do_not_fit_the_device_stop_before_anything_is_written(
    replay_dir, tmp_path, monkeypatch):
  from batch_rl.runners import device_memory  # pylint: disable=g-import-not-at-top
  from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(device_memory, "device_limit_bytes", lambda device=None: 10**6)
  with pytest.raises(ConfigError, match=r"needs about .* GB of device memory.*"
                                        r"FixedReplayRunner\.num_seeds"):
    run(tmp_path / "big", bindings(replay_dir, num_seeds=4))
  assert not (tmp_path / "big").exists()


def test_program_bytes_grow_with_the_seeds(replay_dir, tmp_path):
  """XLA's estimate of the compiled step: the data once, the states per seed."""
  from batch_rl.runners import device_memory, offline  # pylint: disable=g-import-not-at-top
  needs = {}
  for num_seeds in (1, 4):
    gin.clear_config()
    config_lib.parse_gin([], bindings(replay_dir, num_seeds=num_seeds))
    runner = offline.FixedReplayRunner(base_dir=str(tmp_path / f"s{num_seeds}"))
    runner._compile(runner._initial_state)  # pylint: disable=protected-access
    compiled = runner._schedule[0][0]  # pylint: disable=protected-access
    needs[num_seeds] = device_memory.program_bytes(compiled)
  data = sum(x.nbytes for x in jax.tree.leaves(runner._data))  # pylint: disable=protected-access
  state = sum(x.nbytes for x in jax.tree.leaves(runner._initial_state)) / 4  # pylint: disable=protected-access
  assert needs[1] >= data + state
  # Three more seeds add at least their states, and no more than three times what one
  # seed needs beside the data: the data is not copied per seed.
  per_seed = needs[1] - data
  assert 3 * state <= needs[4] - needs[1] <= 3 * per_seed * 1.1


def test_analysis_reads_the_seeds_as_ordinary_runs(vmapped_run):
  from analysis import loading  # pylint: disable=g-import-not-at-top
  sweep = loading.load_sweep(str(vmapped_run), cache=False)
  assert sorted(sweep.runs["seed"].tolist()) == [3, 4, 5]
  assert sorted(sweep.runs["run"].tolist()) == ["seed_3", "seed_4", "seed_5"]
  # Every seed logged both iterations; none is taken for a hyperparameter setting.
  srank = sweep.scalars[sweep.scalars["tag"] == "Rank/srank"]
  assert srank.groupby("seed")["iteration"].nunique().tolist() == [2, 2, 2]
  assert "FixedReplayRunner.data_seed" not in sweep.runs.columns

"""Seeds trained together online (`OnlineRunner.num_seeds`): seed k of a vmapped run
logs what a solo run with seed k logs, keeps the buffer its solo run keeps, writes a
solo run's directory of its own, and resumes exactly."""
import os
import shutil

import gin
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import gin_bindings
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.runners import common
from batch_rl.runners import registry
from batch_rl.runners import stop_signal
from tests import conftest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Float tolerance between a vmapped and a plain program (XLA may fuse them differently).
RTOL, ATOL = 2e-4, 1e-5
SEEDS = (3, 4)


def is_timing(tag):
  return tag == "Train/StepsPerSecond" or tag.startswith("Time/")


def bindings(*, seed=SEEDS[0], num_seeds=len(SEEDS), num_iterations=2, extra=()):
  settings = dict(training_steps=150, num_iterations=num_iterations, evaluation_steps=30,
                  min_replay_history=40, replay_capacity=120, updates_per_step=0.5,
                  target_update_env_steps=20, diagnostics_batch_size=32, seed=seed,
                  log_dataset=True)
  if num_seeds != 1:
    settings["num_seeds"] = num_seeds
  return [f"OnlineRunner.{k} = {v!r}" for k, v in settings.items()] + [
      "DQNAgent.batch_size = 8", "MinAtarEnvironment.minimal_action_set = True",
      *extra]


def make(base_dir, gin_bindings_list):
  gin.clear_config()
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")],
                       gin_bindings_list)
  return registry.create_runner(base_dir=str(base_dir))


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


class StopAfterChecks(stop_signal.GracefulStop):
  """A stop flag that turns on after the runner has looked at it `n` times once armed
  (it looks once per environment step and evaluation step)."""

  def __init__(self, n: int, armed: bool = True):
    super().__init__()
    self._checks_left, self.armed = n, armed

  @property
  def requested(self):
    if not self.armed:
      return None
    self._checks_left -= 1
    return "SIGTERM" if self._checks_left < 0 else None

  @requested.setter
  def requested(self, value):
    del value


def scalars(run_dir):
  return {(tag, step): values for (where, tag, step), values in
          conftest.run_scalars(str(run_dir)).items() if where == "."}


def assert_same_logs(got, want):
  """Every scalar of every step, logged once, equal within float tolerance (timings
  aside)."""
  keys = {k for k in want if not is_timing(k[0])}
  assert keys == {k for k in got if not is_timing(k[0])}
  for key in sorted(keys):
    assert len(got[key]) == len(want[key]) == 1, key
    np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=str(key))


@pytest.fixture(scope="module")
def vmapped_run(tmp_path_factory):
  base = tmp_path_factory.mktemp("vmapped") / "run"
  make(base, bindings()).run()
  gin.clear_config()
  return base


def test_each_seed_logs_and_keeps_what_its_solo_run_does(vmapped_run, tmp_path):
  assert sorted(os.listdir(vmapped_run)) == ["bindings.gin", "config.gin", "seed_3",
                                             "seed_4"]
  make(tmp_path / "solo4", bindings(seed=4, num_seeds=1)).run()
  solo, vmapped = scalars(tmp_path / "solo4"), scalars(vmapped_run / "seed_4")
  for tag in ("Train/Loss", "Train/EpisodeReturn", "Rank/srank", "Eval/AverageReturn"):
    assert (tag, 0) in solo and (tag, 1) in solo, tag
  assert_same_logs(vmapped, solo)
  # Its replay buffer, logged as a dataset, is the solo run's.
  ours = fmt.read_shard(str(vmapped_run / "seed_4" / "replay_logs"), 1)
  theirs = fmt.read_shard(str(tmp_path / "solo4" / "replay_logs"), 1)
  assert ours.info.add_count == theirs.info.add_count
  for key in ("observation", "action", "reward", "terminal"):
    np.testing.assert_array_equal(getattr(ours, key), getattr(theirs, key), err_msg=key)
  # The seeds differ (their own environment, init, acting, sampling and evaluation).
  other = scalars(vmapped_run / "seed_3")
  assert other[("Train/Loss", 0)] != vmapped[("Train/Loss", 0)]
  assert other[("Train/EpisodeReturn", 0)] != vmapped[("Train/EpisodeReturn", 0)]


def test_each_seed_directory_records_its_own_seed(vmapped_run):
  for seed in SEEDS:
    for name in ("config.gin", "bindings.gin"):
      found = gin_bindings.bindings((vmapped_run / f"seed_{seed}" / name).read_text())
      assert found["OnlineRunner.seed"] == seed, name
      assert "OnlineRunner.num_seeds" not in found, name
    assert conftest.checkpointed_iteration(str(vmapped_run / f"seed_{seed}")) == 1
  found = gin_bindings.bindings((vmapped_run / "bindings.gin").read_text())
  assert found["OnlineRunner.num_seeds"] == 2  # the program's, for the same-run check


def test_a_seed_directory_continues_as_a_solo_run(vmapped_run, tmp_path):
  copy = tmp_path / "seed_3"
  shutil.copytree(vmapped_run / "seed_3", copy)
  make(copy, bindings(seed=3, num_seeds=1, num_iterations=3)).run()
  assert conftest.checkpointed_iteration(str(copy)) == 2
  assert ("Train/Loss", 2) in scalars(copy)


def test_vmapped_run_stopped_mid_iteration_resumes_exactly(vmapped_run, tmp_path):
  base = tmp_path / "stopped"
  # 50 environment steps into iteration 2 (armed once iteration 1 is checkpointed) ...
  runner = make(base, bindings())
  stop = runner._stop = StopAfterChecks(50, armed=False)  # pylint: disable=protected-access
  with pytest.raises(stop_signal.Preempted, match=r"seed_\*"):
    runner.run(on_iteration=lambda *_: setattr(stop, "armed", True))
  # ... then 5 steps into its evaluation (after its last 100 environment steps).
  runner = make(base, bindings())
  runner._stop = StopAfterChecks(100 + 5)  # pylint: disable=protected-access
  with pytest.raises(stop_signal.Preempted):
    runner.run()
  for seed in SEEDS:
    assert checkpointing.list_partial(str(base / f"seed_{seed}" / "checkpoints")) == [1]
    saved = checkpointing.read_partial(str(base / f"seed_{seed}" / "checkpoints"), 1)
    assert int(saved["carry"]["step"]) == 150  # a solo run's carry, at the evaluation
  make(base, bindings()).run()
  for seed in SEEDS:
    assert_same_logs(scalars(base / f"seed_{seed}"), scalars(vmapped_run / f"seed_{seed}"))


def test_vmapped_run_redoes_the_iteration_one_seed_lacks(vmapped_run, tmp_path):
  base = tmp_path / "behind"
  shutil.copytree(vmapped_run, base)
  # A stop between the seeds' checkpoint writes: seed 4 is an iteration behind, so both
  # seeds redo iteration 2 (their events of it dropped first).
  for suffix in (".msgpack", ".arrays.npz"):
    os.remove(base / "seed_4" / "checkpoints" / f"ckpt_000001{suffix}")
  make(base, bindings()).run()
  for seed in SEEDS:
    assert_same_logs(scalars(base / f"seed_{seed}"), scalars(vmapped_run / f"seed_{seed}"))
    assert conftest.checkpointed_iteration(str(base / f"seed_{seed}")) == 1


def test_a_diverging_seed_is_named_with_its_directory(tmp_path):
  runner = make(tmp_path / "diverges", bindings())
  finite, diverged = {"Train/Loss": 0.5}, {"Train/Loss": float("nan")}
  runner._check_finite(0, "", [finite, finite], None)  # pylint: disable=protected-access
  with pytest.raises(common.DivergenceError,
                     match=r"Seed 4 of this run's 2 \(.*seed_4\): Training diverged in "
                           r"iteration 1 of 2"):
    runner._check_finite(0, "", [finite, diverged], None)  # pylint: disable=protected-access


def test_num_seeds_below_one_names_the_binding(tmp_path):
  with pytest.raises(common.ConfigError, match=r"OnlineRunner\.num_seeds"):
    make(tmp_path / "never", bindings(num_seeds=0))
  assert not (tmp_path / "never").exists()

"""Every gridworld gin file runs through train.py's path (parse_gin + create_runner) for a
couple of fitting iterations and writes the tags; bad input gives clear messages."""
import glob
import os

import gin
import pytest

from batch_rl import config as config_lib
from batch_rl import run_experiment
from batch_rl import summary_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(f for f in glob.glob(os.path.join(REPO, "gin_configs", "gridworld", "*.gin"))
                   if not f.endswith("base.gin"))
# Shrink every run: a 6x6 grid (deep linear D = 180), 2 iterations of 2 steps, 1 seed.
TINY = ["GridworldEnv.width = 6", "GridworldEnv.height = 6", "GridworldRunner.seeds = [3]",
        "GridworldRunner.num_iterations = 2", "GridworldRunner.log_every = 1",
        "GridworldRunner.gradient_steps = 2", "GridworldRunner.dataset_episodes = 4"]


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_gin_file_runs_and_writes_tags(path, tmp_path):
  bindings = list(TINY)
  if "online" in path:
    bindings.append("GridworldRunner.updates_per_env_step = 2")
  config_lib.parse_gin([path], bindings)
  runner = run_experiment.create_runner(base_dir=str(tmp_path))
  runner.run()
  assert os.path.isfile(tmp_path / "config.gin")
  scalars = summary_writer.read_scalars(str(tmp_path / "seed_3"))
  for tag in ("Rank/srank", "Train/Loss", "Train/TDError", "Eval/AverageReturn",
              "Gridworld/srank_all_states", "Gridworld/stable_rank",
              "Gridworld/QError_mean", "Gridworld/NormalizedReturn"):
    assert sorted(scalars[tag]) == [0, 1], (tag, path)
  if "deep_linear" in path:
    assert sorted(scalars["Rank/srank_eig"]) == [0, 1]
  if "lp" in os.path.basename(path):
    assert "Train/LpPenalty" in scalars
  if "dr3" in path:
    assert "Train/DR3" in scalars


@pytest.mark.parametrize("binding, message", [
    ("GridworldRunner.srank_delta = 1.5", r"`GridworldRunner\.srank_delta` must be in \(0, 1\)"),
    ("GridworldRunner.srank_delta = 0.0", r"`GridworldRunner\.srank_delta`"),
    ("GridworldEnv.feature_dim = 0", r"`GridworldEnv\.feature_dim` must be >= 1"),
    ("GridworldEnv.wall_fraction = 0.7", r"`GridworldEnv\.wall_fraction`"),
    ("GridworldRunner.target = 'td3'", r"`GridworldRunner\.target` must be one of"),
    ("GridworldRunner.lp_coefficient = -1.0", r"GridworldRunner\.lp_coefficient"),
])
def test_bad_input_is_a_config_error_before_writing(binding, message, tmp_path):
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "gridworld", "fqi_t10.gin")],
                       [binding])
  out = tmp_path / "run"
  with pytest.raises(run_experiment.ConfigError, match=message):
    run_experiment.create_runner(base_dir=str(out))
  assert not out.exists()

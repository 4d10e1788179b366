"""The notebooks and `python -m analysis.report` on small logs made by real runs.

A module fixture makes 4 short runs (DQN and DQN + Lp, 2 seeds, MinAtar Breakout data
logged by the quickstart's logger), then every notebook under analysis/notebooks is
executed top to bottom with nbclient (kernel "python3": the current interpreter's
ipykernel) and must write its PNG files.
"""
import glob
import os
import subprocess
import sys

import gin
import nbformat
import pytest
from nbclient import NotebookClient

from analysis import loading
from batch_rl import config as config_lib
from tests import helpers
from batch_rl.datasets import quickstart

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "analysis", "notebooks", "*.ipynb")))
EXPECTED_PNGS = {
    "01_learning_curves": ["learning_curves.png"],
    "02_relative_improvement": ["relative_improvement_DQNAgent_LpRegularizer_vs_DQNAgent.png"],
    "03_aggregate_performance": ["aggregates.png", "performance_profiles.png"],
    "04_rank_vs_performance": ["rank_vs_performance.png"],
    "05_phases_of_learning": ["phases.png"],
    "06_feature_diagnostics": ["feature_diagnostics.png"],
    "07_offline_policy_selection": ["policy_selection_regret.png",
                                    "policy_selection_improvement.png"],
}


def bindings(replay_dir, seed, lp):
  out = [f"load_fixed_replay.replay_dir = '{replay_dir}'",
         "FixedReplayRunner.game = 'breakout'", "FixedReplayRunner.domain = 'minatar'",
         "FixedReplayRunner.num_iterations = 4", "FixedReplayRunner.training_steps = 30",
         "FixedReplayRunner.evaluation_steps = 60",
         "FixedReplayRunner.diagnostics_batch_size = 64", f"FixedReplayRunner.seed = {seed}",
         "MinAtarEnvironment.minimal_action_set = True",
         "DQNAgent.network = @MinAtarDQNNetwork", "DQNAgent.target_update_period = 10"]
  if lp:
    out += ["import batch_rl.agents.regularizer_terms",
            "DQNAgent.regularizers = [@LpRegularizer()]", "LpRegularizer.coefficient = 0.001"]
  return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  from batch_rl.runners import offline, registry  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("analysis")
  replay_dir = str(root / "data" / "breakout" / "1" / "replay_logs")
  quickstart.log_behaviour_policy(replay_dir, num_checkpoints=2, capacity=1500, seed=0)
  for lp in (False, True):
    for seed in (0, 1):
      config_lib.parse_gin([], bindings(replay_dir, seed, lp))
      offline.FixedReplayRunner(
          base_dir=str(root / "runs" / ("dqn_lp" if lp else "dqn") / f"seed{seed}")).run()
      gin.clear_config()
  return root


@pytest.fixture(autouse=True)
def cache_dir(sweep_dir, monkeypatch):
  # The notebook kernels inherit the environment: they share the tests' cache.
  monkeypatch.setenv("BATCH_RL_CACHE", str(sweep_dir / "cache"))


def test_real_runs_load_with_labels(sweep_dir):
  sweep = loading.load_sweep(str(sweep_dir / "runs"))
  assert sorted(sweep.runs["agent"]) == ["DQNAgent", "DQNAgent", "DQNAgent+LpRegularizer",
                                         "DQNAgent+LpRegularizer"]
  assert sorted(sweep.runs["seed"]) == [0, 0, 1, 1]
  assert set(sweep.runs["game"]) == {"breakout"} and sweep.runs["complete"].all()
  # LpRegularizer.coefficient and DQNAgent.regularizers differ only between agents,
  # which the agent label already says: no hyperparameter column.
  assert sweep.hyperparameters == []
  assert {"Rank/srank", "Eval/AverageReturn", "Features/dead_units",
          "Train/LpPenalty"} <= set(sweep.tags)
  counts = sweep.scalars[sweep.scalars["tag"] == "Rank/srank"].groupby(
      "run", observed=True).size()
  assert set(counts) == {4}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes_and_writes_pngs(path, sweep_dir, tmp_path):
  notebook = nbformat.read(path, as_version=4)
  assert all(not c.get("outputs") and not c.get("execution_count")
             for c in notebook.cells if c.cell_type == "code"), "commit notebooks cleared"
  (index,) = [i for i, c in enumerate(notebook.cells)
              if "parameters" in c.metadata.get("tags", [])]
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
      f"LOGDIR = {str(sweep_dir / 'runs')!r}\nOUT = {str(tmp_path)!r}\nREPS = 200"))
  NotebookClient(notebook, timeout=helpers.SUBPROCESS_TIMEOUT, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  name = os.path.splitext(os.path.basename(path))[0]
  for png in EXPECTED_PNGS[name]:
    assert os.path.getsize(tmp_path / png) > 1000, png


def test_every_notebook_is_checked():
  assert sorted(EXPECTED_PNGS) == [os.path.splitext(os.path.basename(p))[0]
                                   for p in NOTEBOOKS]


def report(*args):
  return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=helpers.SUBPROCESS_TIMEOUT, env=os.environ)


def test_report_cli_writes_every_figure(sweep_dir, tmp_path):
  out = tmp_path / "report"
  result = report("--logdir", str(sweep_dir / "runs"), "--out", str(out), "--reps", "200")
  assert result.returncode == 0, result.stderr
  for pngs in EXPECTED_PNGS.values():
    for png in pngs:
      assert (out / png).is_file(), png
  for table in ("aggregates.csv", "ate_rank_on_return.csv", "ate_interventions_on_srank.csv",
                "phases.csv"):
    assert (out / table).is_file(), table


def test_report_bad_input_names_what_is_missing(sweep_dir, tmp_path, capsys):
  from analysis import report as report_lib  # pylint: disable=g-import-not-at-top
  assert report_lib.main(["--logdir", str(tmp_path / "missing"), "--out",
                          str(tmp_path / "o")]) == 2  # bad input
  assert "no such directory" in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    report_lib.main(["--help"])
  assert exit_info.value.code == 0 and "--logdir" in capsys.readouterr().out
  # One agent only: no relative-improvement pair; the other figures are still drawn.
  assert report_lib.main(["--logdir", str(sweep_dir / "runs" / "dqn"), "--out",
                          str(tmp_path / "o"), "--reps", "100"]) == 0
  err = capsys.readouterr().err
  assert "skipped relative improvement: relative improvement: no (variant, base)" in err
  assert (tmp_path / "o" / "learning_curves.png").is_file()
  assert (tmp_path / "o" / "phases.png").is_file()

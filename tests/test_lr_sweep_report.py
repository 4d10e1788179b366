"""experiments/lr_sweep.py on run directories whose final values are known."""
import os

import numpy as np
import pytest

from analysis import seed_statistics as ss
from tests import helpers
from tests.test_analysis_loading import config_text, write_run



def _load_script():
  return helpers.load_script("experiments", "lr_sweep.py")


def test_report_gives_the_spearman_rho_of_each_seed_and_its_verdict(tmp_path, monkeypatch):
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  script = _load_script()
  n = script.num_iterations()
  rates = [1e-5, 1e-4, 1e-3, 1e-2]
  out = tmp_path / "sweep"
  for seed in range(3):
    for k, lr in enumerate(rates):
      # srank falls with the rate (rho = -1 for every seed); dead units rise with it
      # except seed 2, which swaps the two highest rates (rho = 0.8).
      dead_rank = k if seed != 2 else [0, 1, 3, 2][k]
      curves = {"Rank/srank": {i: 100.0 - 10 * k for i in range(n)},
                "Features/dead_units": {i: 0.1 * dead_rank for i in range(n)},
                "Eval/AverageReturn": {i: 1.0 + seed for i in range(n)},
                "Value/QData": {i: 2.0 for i in range(n)}}
      write_run(str(out / f"lr{lr}" / f"seed_{seed}"), curves,
                config=config_text("breakout", seed, lr=lr, iterations=n))
  # One run cut short: left out, and named.
  write_run(str(out / "lr0.1" / "seed_0"), {"Rank/srank": {0: 1.0}, "Features/dead_units":
                                            {0: 1.0}, "Eval/AverageReturn": {0: 0.0},
                                            "Value/QData": {0: 0.0}},
            config=config_text("breakout", 0, lr=0.1, iterations=n))
  doc = str(tmp_path / "doc")
  script.main(["--no_launch", "--study_dir", str(out), "--doc", doc])
  text = open(doc + ".md").read()
  assert "Not yet finished (left out): lr0.1/seed_0" in text
  srank = next(l for l in text.splitlines() if l.startswith("| higher learning rates give lower srank"))
  assert "seed 0: -1, seed 1: -1, seed 2: -1" in srank and srank.endswith("| -1 ± 0 | reproduced |")
  dead = next(l for l in text.splitlines() if l.startswith("| higher learning rates give more dead"))
  # rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8 for seed 2.
  m, h = ss.mean_ci([1.0, 1.0, 0.8])
  assert "seed 2: 0.8" in dead and ss.format_ci(m, h) in dead
  assert dead.endswith(f"| {ss.verdict(m, h, +1)} |")
  rows = [l for l in text.splitlines() if l.startswith("| 1e-05 |")]
  # Returns 1, 2, 3 over the seeds: 2 ± t_{0.975, 2} * 1 / sqrt(3) = 2 ± 2.48.
  assert rows and rows[0].startswith("| 1e-05 | 3 | 100 ± 0 | 0 ± 0 | 2 ± 2.48 |")
  assert os.path.getsize(doc + ".png") > 1000


def test_report_refuses_when_no_run_has_finished(tmp_path, monkeypatch):
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  script = _load_script()
  write_run(str(tmp_path / "sweep" / "lr1e-3" / "seed_0"), {"Rank/srank": {0: 1.0}},
            config=config_text("breakout", 0, lr=1e-3, iterations=script.num_iterations()))
  write_run(str(tmp_path / "sweep" / "lr1e-4" / "seed_0"), {"Rank/srank": {0: 1.0}},
            config=config_text("breakout", 0, lr=1e-4, iterations=script.num_iterations()))
  with pytest.raises(SystemExit, match="No run under"):
    script.main(["--no_launch", "--study_dir", str(tmp_path / "sweep"), "--doc",
                 str(tmp_path / "d")])

"""The claims' statistics (analysis.seed_statistics) on hand-worked numbers, and
experiments/offline_claims.py's report on run directories with known curves."""
import os

import numpy as np
import pytest

from analysis import seed_statistics as ss
from tests import helpers
from tests.test_analysis_loading import write_run


# t_{0.975, 4}: the two-sided 95% quantile of Student's t with 4 degrees of freedom.
T4 = 2.7764451051977987


def test_mean_ci_is_the_student_t_interval():
  m, h = ss.mean_ci([1, 2, 3, 4, 5])
  # std(ddof=1) = sqrt(2.5); half-width = t * sqrt(2.5) / sqrt(5).
  assert m == 3.0 and h == pytest.approx(T4 * np.sqrt(2.5) / np.sqrt(5))
  assert np.isnan(ss.mean_ci([4.0])[1])
  with pytest.raises(ValueError):
    ss.mean_ci([])


@pytest.mark.parametrize("mean,half,direction,expected", [
    (3.0, 1.0, +1, ss.REPRODUCED), (3.0, 4.0, +1, ss.NOT_REPRODUCED),
    (-3.0, 1.0, +1, ss.REVERSED), (-3.0, 1.0, -1, ss.REPRODUCED),
    (3.0, float("nan"), +1, ss.NOT_REPRODUCED), (0.0, 0.0, +1, ss.NOT_REPRODUCED)])
def test_verdict(mean, half, direction, expected):
  assert ss.verdict(mean, half, direction) == expected


def test_peak_and_fall_on_a_hand_worked_curve():
  it, x = [0, 1, 2, 3, 4, 5], [0, 10, 0, 0, 0, 0]
  assert ss.peak(it, x, window=1) == (1.0, 10.0)
  assert ss.fall(it, x, window=1, last=3) == 1.0
  # Window 3, shrinking at the ends: iteration 0 averages x[0:2] = 5, iteration 1
  # averages x[0:3] = 10/3, so the smoothed peak is at 0.
  assert ss.peak(it, x, window=3) == (0.0, 5.0)
  # Unsorted input is sorted by iteration first.
  assert ss.peak([5, 4, 3, 2, 1, 0], x[::-1], window=1) == (1.0, 10.0)
  # Ends at half its peak.
  assert ss.fall([0, 1, 2], [2, 4, 2], window=1, last=1) == 0.5


def _load_script():
  return helpers.load_script("experiments", "offline_claims.py")


def _curves(n, srank, ret):
  return {"Rank/srank": dict(enumerate(srank)), "Eval/AverageReturn": dict(enumerate(ret)),
          "Value/QMax": {i: 10.0 ** (i / 10) for i in range(n)},
          "Value/QData": {i: 1.0 + i for i in range(n)},
          "Value/MCReturn": {i: 1.7 for i in range(n)},
          "Features/dot_next": {i: 100.0 for i in range(n)},
          "Features/dead_units": {i: 0.0 for i in range(n)},
          "Time/TrainSeconds": {i: 6.0 for i in range(n)}}


def test_report_states_each_claim_from_paired_seeds(tmp_path):
  script = _load_script()
  n = script.num_iterations(script.study_data("main"))
  out = tmp_path / "runs"
  # dqn_10 seed s: srank rises to 100 at iteration 9, then falls linearly to 40;
  # lp_10 is dqn_10 + (s + 1) everywhere, with the return lower by (s + 1).
  rise = np.concatenate([np.linspace(60, 100, 10), np.linspace(100, 40, n - 10)])
  for s in range(5):
    ret = np.linspace(1, 3, n)
    write_run(str(out / "main" / "dqn_10" / f"seed_{s}"), _curves(n, rise + s, ret))
    write_run(str(out / "main" / "lp_10" / f"seed_{s}"),
              _curves(n, rise + 2 * s + 1, ret - (s + 1)))
  # Four of dqn_100's five seeds: unfinished, left out.
  for s in range(4):
    write_run(str(out / "main" / "dqn_100" / f"seed_{s}"), _curves(n, rise, ret))
  doc = str(tmp_path / "doc")
  script.main(["--no_launch", "--out", str(out), "--doc", doc, "--results", ""])
  text = open(doc + ".md").read()
  rows = {line.split(" | ")[1]: line for line in text.splitlines()
          if line.startswith("| 1 ")}
  half = T4 * np.sqrt(2.5) / np.sqrt(5)
  srank_row = rows["Lp keeps srank higher (10% data)"]
  assert "1, 2, 3, 4, 5" in srank_row and ss.format_ci(3.0, half) in srank_row
  assert srank_row.endswith(f"| {ss.REPRODUCED} |")
  assert rows["Lp improves the return (10% data)"].endswith(f"| {ss.REVERSED} |")
  # srank's fall after its peak: the smoothed peak is (100 + 100 + 100 - 60/19)/3 ... per
  # seed; the final value is the mean of the last three points. Checked against numpy.
  fall_row = rows["srank falls after its peak (10% data)"]
  expected = []
  for s in range(5):
    x = rise + s
    smoothed = np.convolve(x, np.ones(3) / 3, mode="same")
    smoothed[0], smoothed[-1] = x[:2].mean(), x[-2:].mean()
    expected.append((smoothed.max() - x[-3:].mean()) / smoothed.max())
  assert ", ".join(f"{v:.3g}" for v in expected) in fall_row
  assert fall_row.endswith(f"| {ss.REPRODUCED} |")
  assert "dqn_100 4/5" in text and "Lp keeps srank higher (100% data)" not in text
  assert os.path.exists(doc + ".png") and os.path.exists(doc + "_values.png")
  # Phase rows for each finished dqn_10 seed.
  assert sum(line.startswith("| dqn_10 | ") for line in text.splitlines()) == 1 + 5


def test_report_refuses_when_nothing_has_finished(tmp_path):
  script = _load_script()
  with pytest.raises(SystemExit, match="No setting has all its runs finished"):
    script.main(["--no_launch", "--out", str(tmp_path), "--doc", str(tmp_path / "d"),
                 "--results", ""])

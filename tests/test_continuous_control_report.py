"""experiments/continuous_control.py's claims on hand-made per-seed curves with known
answers: seed-paired differences, the directions of the verdicts, the fall from the
peak, the learning-check criterion."""
import numpy as np
import pytest

from tests import helpers

cc = helpers.load_script("experiments", "continuous_control.py")


def curves(srank, ret, dots=None):
  it = np.arange(len(srank), dtype=np.float64)
  out = {"Rank/srank": (it, np.asarray(srank, np.float64)),
         "Eval/AverageReturn": (it, np.asarray(ret, np.float64))}
  if dots is not None:
    out["Features/dot_next_backup"] = (it, np.asarray(dots, np.float64))
  return out


def test_more_updates_lower_rank_and_return_is_reproduced_seed_by_seed():
  runs = {}
  for n, drop in ((1, 0.0), (4, 5.0), (16, 10.0)):
    noise = [0.0, 1.0, -1.0] if n == 16 else [0.0] * 3
    runs[f"Hopper-v5/updates_per_step{n}"] = [
        curves([100, 90 - drop + s + noise[s], 80 - drop + s + noise[s]],
               [500 - 10 * drop + s] * 3) for s in range(3)]
  rows = {r["claim"]: r for r in cc.update_rows(runs)}
  srank = rows["2. Hopper-v5: final srank, n = 16 - n = 1"]
  # Seed k minus seed k: the seeds' own offsets (+s) cancel.
  np.testing.assert_allclose(srank["values"], [-10, -9, -11])
  assert srank["verdict"] == "reproduced"  # -10 ± 2.5, below 0 as the claim predicts
  ret = rows["2. Hopper-v5: final return, n = 4 - n = 1"]
  np.testing.assert_allclose(ret["values"], [-50, -50, -50])
  raised = {k: [curves(c["Rank/srank"][1] + 30, c["Eval/AverageReturn"][1]) for c in v]
            if k.endswith("step16") else v for k, v in runs.items()}
  reversed_row = {r["claim"]: r for r in cc.update_rows(raised)}[
      "2. Hopper-v5: final srank, n = 16 - n = 1"]
  assert reversed_row["verdict"] == "reversed"  # 20 ± 2.5: more updates, higher rank
  assert "missing" in rows["2. Walker2d-v5: final srank, n = 16 - n = 1"]


def test_offline_falls_correlations_and_dr3_directions():
  rng = np.random.default_rng(0)
  falling = [curves([50, 100, 80, 60 + s], [10, 300, 200, 100 + 5 * s]) for s in range(3)]
  runs = {"sac": falling,
          "cql": [curves([50, 100, 80, 60 + s], [10, 300, 200, 100 + 5 * s],
                         [40 + s, 45, 50, 55]) for s in range(3)],
          "cql_dr3": [curves([50, 100, 95, 90], [10, 300, 290, 280 + rng.random()],
                             [40, 30, 20, 10 + s]) for s in range(3)]}
  rows = {r["claim"]: r for r in cc.offline_rows(runs)}
  fall = rows["3. sac: srank fall from its peak"]
  # window-2 smoothed peak (100 + 80) / 2 = 90; final = mean of the last 2
  np.testing.assert_allclose(fall["values"], [(90 - (80 + 60 + s) / 2) / 90 for s in range(3)])
  assert fall["verdict"] == "reproduced"
  assert rows["3. cql: corr(srank, return) over iterations"]["verdict"] == "reproduced"
  dots = rows["4. final phi(s,a).phi(s',a'), CQL + DR3 - CQL"]
  assert dots["verdict"] == "reproduced" and np.all(dots["values"] < 0)
  assert rows["4. final return, CQL + DR3 - CQL"]["verdict"] == "reproduced"


@pytest.mark.parametrize("last, verdict", [([60, 80, 100], "reproduced"),
                                           ([60, 80, 40], "not reproduced")])
def test_learning_check_needs_every_seed_at_five_times_random(last, verdict):
  runs = {"run": [curves([1, 2], [10, x]) for x in last]}
  row = cc.learning_rows(runs, random_mean=10.0)[0]
  assert row["verdict"] == verdict
  np.testing.assert_allclose(row["values"], last)

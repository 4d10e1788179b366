"""The numbers of analysis/: scores, relative improvement, rliable aggregates, phases, ATEs.

Checked against hand computation, rliable / scipy called directly on the same arrays.
"""
import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics
from scipy import stats

from analysis import phases
from analysis import scores
from analysis import treatment_effects as te


def tidy(curves):
  """{(game, agent, seed): [values per iteration]} -> a tidy table like Sweep.scalars."""
  rows = []
  for (game, agent, seed), values in curves.items():
    for it, v in enumerate(values):
      rows.append({"run": f"{game}/{agent}/{seed}", "game": game, "domain": "atari",
                   "agent": agent, "seed": seed, "iteration": it,
                   "tag": "Eval/AverageReturn", "value": float(v)})
  return pd.DataFrame(rows)


CURVES = {
    ("Pong", "DQN", 0): [1, 5, 3], ("Pong", "DQN", 1): [2, 2, 4],
    ("Pong", "DQN+Lp", 0): [6, 2, 1], ("Pong", "DQN+Lp", 1): [0, 8, 8],
    ("Breakout", "DQN", 0): [-4, -2, -3], ("Breakout", "DQN", 1): [-6, -6, -6],
    ("Breakout", "DQN+Lp", 0): [-5, -5, -5], ("Breakout", "DQN+Lp", 1): [-9, -7, -8],
}


def test_run_scores_best_and_final_by_hand():
  best = scores.run_scores(tidy(CURVES), how="best").set_index("run")["score"]
  assert best["Pong/DQN/0"] == 5 and best["Breakout/DQN+Lp/1"] == -7
  final = scores.run_scores(tidy(CURVES), how="final", last=2).set_index("run")["score"]
  assert final["Pong/DQN/0"] == 4 and final["Pong/DQN+Lp/1"] == 8


def test_relative_improvement_iup_protocol_by_hand():
  per_game = scores.per_game(scores.run_scores(tidy(CURVES), how="best"))
  # Best iteration per run, then mean over seeds.
  assert per_game.loc["Pong", "DQN"] == (5 + 4) / 2
  assert per_game.loc["Pong", "DQN+Lp"] == (6 + 8) / 2
  relative = scores.relative_improvement(per_game["DQN+Lp"], per_game["DQN"])
  pong = (7 - 4.5) / 4.5
  breakout = (-6 - (-4)) / 4  # base -4 = mean(-2, -6); variant -6 = mean(-5, -7)
  assert relative.to_dict() == pytest.approx({"Pong": pong, "Breakout": breakout})
  assert list(relative.index) == ["Breakout", "Pong"]  # sorted
  summary = scores.improvement_summary(relative)
  assert summary == {"median": pytest.approx((pong + breakout) / 2), "improved": 1,
                     "games": 2}
  # The other reading: max over iterations of the seed-mean curve.
  other = scores.best_of_mean_curve(tidy(CURVES))
  assert other.loc["Pong", "DQN"] == max((1 + 2) / 2, (5 + 2) / 2, (3 + 4) / 2)


def test_relative_improvement_with_zero_base_is_nan():
  rel = scores.relative_improvement(pd.Series({"a": 1.0, "b": 2.0}),
                                    pd.Series({"a": 0.0, "b": 1.0}))
  assert np.isnan(rel["a"]) and rel["b"] == 1.0
  assert scores.improvement_summary(rel)["games"] == 1


def test_human_normalization_uses_the_reference_table():
  ref = scores.reference_scores()
  assert len(ref) == 55
  pong = ref.loc["pong"]
  assert scores.human_normalized(pong["human"], "Pong") == pytest.approx(1.0)
  assert scores.human_normalized(pong["random"], "Pong") == pytest.approx(0.0)
  assert scores.human_normalized(10.0, "MsPacman") == pytest.approx(
      (10.0 - ref.loc["mspacman", "random"]) / (ref.loc["mspacman", "human"] -
                                                ref.loc["mspacman", "random"]))
  with pytest.raises(KeyError, match="NotAGame"):
    scores.human_normalized(1.0, "NotAGame")


@pytest.mark.filterwarnings("ignore:random_state is deprecated:FutureWarning")
def test_score_matrices_and_iqm_match_rliable_on_the_same_arrays():
  rng = np.random.default_rng(0)
  rows = []
  games = ["Asterix", "Breakout", "Pong", "Seaquest", "Qbert"]
  for agent in ("A", "B"):
    for g in games:
      for seed in range(5 if agent == "A" else 4):
        rows.append({"run": f"{agent}{g}{seed}", "game": g, "domain": "atari",
                     "agent": agent, "seed": seed, "score": rng.normal(1000, 300)})
  run = pd.DataFrame(rows)
  score_dict, order, used, notes = scores.score_matrices(run)
  assert used == "human" and order == sorted(games)
  assert score_dict["A"].shape == (4, 5) and any("4 seed(s)" in n for n in notes)
  # The normalized entry for agent B, Pong, seed 2, by hand.
  ref = scores.reference_scores().loc["pong"]
  raw = run[(run.agent == "B") & (run.game == "Pong") & (run.seed == 2)]["score"].item()
  assert score_dict["B"][2, order.index("Pong")] == pytest.approx(
      (raw - ref["random"]) / (ref["human"] - ref["random"]))

  table = scores.aggregate(score_dict, reps=500, seed=3).set_index(["algorithm", "metric"])
  for agent, matrix in score_dict.items():
    # Point estimates: IQM = 25% trimmed mean of all runs x games (scipy), others by numpy.
    assert table.loc[(agent, "IQM"), "estimate"] == pytest.approx(
        stats.trim_mean(matrix.ravel(), 0.25))
    assert table.loc[(agent, "Median"), "estimate"] == pytest.approx(
        np.median(matrix.mean(axis=0)))
    assert table.loc[(agent, "Mean"), "estimate"] == pytest.approx(matrix.mean())
    assert table.loc[(agent, "Optimality Gap"), "estimate"] == pytest.approx(
        np.mean(1 - np.minimum(matrix, 1)))
  # Intervals: rliable called directly with the same seed. Its StratifiedBootstrap
  # draws from the global np.random, which `aggregate` seeds with its `seed`.
  np.random.seed(3)
  funcs = [metrics.aggregate_median, metrics.aggregate_iqm, metrics.aggregate_mean,
           metrics.aggregate_optimality_gap]
  _, intervals = rly.get_interval_estimates(
      score_dict, lambda x: np.array([f(x) for f in funcs]), reps=500,
      random_state=np.random.RandomState(3))
  for agent in score_dict:
    np.testing.assert_allclose(
        table.loc[agent].loc[list(scores.METRICS), ["lower", "upper"]].to_numpy().T,
        intervals[agent])


def test_score_matrices_raw_for_other_domains_and_missing_games_named():
  run = pd.DataFrame([{"run": "r", "game": "breakout", "domain": "minatar", "agent": "A",
                       "seed": 0, "score": 3.0},
                      {"run": "s", "game": "asterix", "domain": "minatar", "agent": "B",
                       "seed": 0, "score": 1.0}])
  with pytest.raises(LookupError, match="every algorithm on every game"):
    scores.score_matrices(run)
  score_dict, _, used, notes = scores.score_matrices(run[run.agent == "A"])
  assert used == "raw" and score_dict["A"].tolist() == [[3.0]] and notes


def test_performance_profile_is_the_fraction_above_tau():
  score_dict = {"A": np.array([[0.1, 0.5], [0.9, 2.0]])}
  taus, profiles, _ = scores.performance_profiles(score_dict, taus=[0.0, 0.5, 1.0], reps=20)
  np.testing.assert_allclose(profiles["A"], [1.0, 0.5, 0.25])


# ----------------------------------------------------------------- phases
def three_phase_curve():
  """srank: 5 for 10 iterations, linear up to 105 by iteration 30, flat to 60, 5 at 70+."""
  it = np.arange(100)
  s = np.full(100, 5.0)
  s[10:31] = np.linspace(5, 105, 21)
  s[31:61] = 105
  s[61:71] = np.linspace(105, 5, 11)[1:]
  s[71:] = 5
  return it, s


def test_phase_rule_on_a_synthetic_three_phase_curve():
  it, s = three_phase_curve()
  found = phases.find_phases(it, s, phases.PhaseRule(window=1))
  # Half-way up the rise (55) is reached at iteration 20; half the peak (52.5) is first
  # undercut on the way down at 105 - 10 * 6 = 45, iteration 66.
  assert found.minimum_at == 0 and found.peak_at == 30
  assert found.phase2_start == 20 and found.phase3_start == 66
  assert found.phase_of([0, 19, 20, 65, 66, 99]).tolist() == [1, 1, 2, 2, 3, 3]


def test_phase_rule_with_smoothing_and_iteration_offsets():
  it, s = three_phase_curve()
  found = phases.find_phases(it + 1000, s, phases.PhaseRule(window=5))
  smoothed = phases.smooth(s, 5)
  assert smoothed[2] == pytest.approx(np.mean(s[0:5]))
  assert smoothed[0] == pytest.approx(np.mean(s[0:3]))  # window shrinks at the ends
  assert found.phase2_start == 1020 and 1064 <= found.phase3_start <= 1067


def test_phase_rule_stuck_in_phase_one_and_no_phase_three():
  it = np.arange(50)
  flat = 10 + 0.01 * it  # rises 5% only: stays in Phase 1
  found = phases.find_phases(it, flat)
  assert found.phase2_start is None and found.phase3_start is None
  rising = np.minimum(5 + 2.0 * it, 60)  # rises and stays high: no Phase 3
  found = phases.find_phases(it, rising, phases.PhaseRule(window=1))
  assert found.phase2_start == 14 and found.phase3_start is None  # 5 + 2t >= 32.5
  with pytest.raises(ValueError, match="1-D"):
    phases.find_phases([1, 2], [1.0])


# ----------------------------------------------------------------- treatment effects
def test_rank_conditioning_ate_against_hand_and_scipy():
  rng = np.random.default_rng(1)
  data = pd.DataFrame({"srank": rng.integers(1, 100, 60).astype(float),
                       "score": rng.normal(size=60),
                       "activation": ["relu", "tanh"] * 30})
  table = te.rank_conditioning_ate(data, quantiles=(0.5, 0.75), group_by="activation")
  assert list(table["group"]) == ["Combined", "Combined", "relu", "relu", "tanh", "tanh"]
  row = table[(table.group == "relu") & (table["quantile"] == 0.75)].iloc[0]
  relu = data[data.activation == "relu"]
  q = np.quantile(relu.srank, 0.75)
  treated, control = relu[relu.srank > q].score, relu[relu.srank <= q].score
  assert row["threshold"] == q and row["n_treated"] == len(treated)
  assert row["ATE"] == pytest.approx(treated.mean() - control.mean())
  assert row["SE"] == pytest.approx(np.sqrt(treated.var() / len(treated) +
                                            control.var() / len(control)))
  assert row["p_value"] == pytest.approx(
      stats.ttest_ind(treated, control, equal_var=False, alternative="greater").pvalue)


def test_intervention_effects_by_hand():
  data = pd.DataFrame({
      "lr": [1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-3],
      "act": ["relu", "relu", "relu", "tanh", "tanh", "tanh"],
      "srank": [50.0, 60.0, 20.0, 90.0, 100.0, 70.0]})
  table = te.intervention_effects(data, {"lr": 1e-4, "act": "relu"})
  lr = table[table.factor == "lr"].iloc[0]
  assert lr["treatment"] == 1e-3
  assert lr["ATE"] == pytest.approx(np.mean([20, 90, 70]) - np.mean([50, 60, 100]))
  assert lr["p_value"] == pytest.approx(stats.ttest_ind([20, 90, 70], [50, 60, 100],
                                                        equal_var=False).pvalue)
  held = te.intervention_effects(data, {"lr": 1e-4, "act": "relu"}, others="control")
  act = held[held.factor == "act"].iloc[0]  # lr held at 1e-4: tanh 100 vs relu 50, 60
  assert act["ATE"] == pytest.approx(100 - 55) and np.isnan(act["SE"])
  with pytest.raises(KeyError, match="dropout"):
    te.intervention_effects(data, {"dropout": 0.0})

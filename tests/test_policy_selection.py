"""analysis.policy_selection: simple regret, rank correlations and improvement over the
online choice on hand-made tables with hand-worked answers; its errors; and the report's
section on a small logdir written with the Runner's summary writer."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import policy_selection as ps
from tests.test_analysis_loading import config_text, write_run

LR = "create_optimizer.learning_rate"
LRS = (1e-4, 1e-3, 1e-2)
RET, SRANK, DEAD, LOSS, TD, Q, QMC = ("Eval/AverageReturn", "Rank/srank",
                                      "Features/dead_units", "Train/Loss", "Train/TDLoss",
                                      "Value/QData", "Value/QMinusMCReturn")


def tidy(entries):
  """[(game, seed, lr, iteration, {tag: value})] -> a table like Sweep.scalars."""
  rows = []
  for game, seed, lr, iteration, values in entries:
    for tag, value in values.items():
      rows.append({"run": f"{game}/lr{lr}/seed{seed}", "game": game, "domain": "atari",
                   "agent": "DQNAgent", "seed": seed, LR: lr, "iteration": iteration,
                   "tag": tag, "value": float(value)})
  table = pd.DataFrame(rows)
  for column in ("run", "game", "domain", "agent", "tag"):
    table[column] = table[column].astype("category")
  return table


def group(tags, game="Pong", seed=0, iteration=0):
  """One (game, seed) group of the three learning rates: tags = {tag: [v per lr]}."""
  return [(game, seed, lr, iteration, {t: v[k] for t, v in tags.items()})
          for k, lr in enumerate(LRS)]


def picked(selected, criterion):
  row = selected[selected["criterion"] == criterion]
  assert len(row) == 1
  return row.iloc[0]


# ----------------------------------------------------------------- regret
def test_simple_regret_formula_by_hand():
  assert ps.simple_regret(5, 1, 9) == 0.5
  assert ps.simple_regret(9, 1, 9) == 1.0 and ps.simple_regret(1, 1, 9) == 0.0
  assert ps.simple_regret(-2, -10, 0) == pytest.approx(0.8)
  out = ps.simple_regret([3, 4], [3, 0], [3, 8])
  assert np.isnan(out[0]) and out[1] == 0.5  # R_max == R_min: undefined


def test_each_criterion_on_three_candidates_by_hand():
  # Returns 1, 5, 9 for learning rates 1e-4, 1e-3, 1e-2.
  table = tidy(group({RET: [1, 5, 9],
                      SRANK: [1, 9, 5],          # highest at 1e-3 (return 5): 0.5
                      DEAD: [0.3, 0.2, 0.1],     # fewest at 1e-2 (return 9): 1
                      LOSS: [1, 2, 3],           # lowest at 1e-4 (return 1): 0
                      Q: [7, 1, 2],              # highest at 1e-4: 0
                      QMC: [-6, 0.5, -2]}))      # |.| = 6, 0.5, 2: lowest at 1e-3: 0.5
  cands = ps.candidate_table(table, LR, [0])
  assert [c.name for c in cands.criteria] == [
      "srank", "dead_units", "q_value", "td_loss", "q_mc_gap"]
  assert cands.tags["td_loss"] == [LOSS]
  selected = ps.selections(cands)
  expected = {"online": (1e-2, 1.0), "srank": (1e-3, 0.5), "dead_units": (1e-2, 1.0),
              "q_value": (1e-4, 0.0), "td_loss": (1e-4, 0.0), "q_mc_gap": (1e-3, 0.5)}
  for criterion, (lr, regret) in expected.items():
    row = picked(selected, criterion)
    assert row["selected"] == str(lr) and row["regret"] == regret, criterion
    assert row["return_min"] == 1 and row["return_max"] == 9 and row["n_candidates"] == 3
  assert picked(selected, "q_mc_gap")["criterion_value"] == 0.5  # the absolute value


def test_ties_take_the_mean_return_and_nan_values_are_never_chosen():
  table = tidy(group({RET: [1, 5, 9], SRANK: [9, 5, 9], DEAD: [np.nan, 0.2, 0.4]}))
  selected = ps.selections(ps.candidate_table(table, LR, [0], skip_missing=True))
  srank = picked(selected, "srank")  # 1e-4 and 1e-2 tie: expected return (1 + 9) / 2
  assert srank["n_tied"] == 2 and srank["return_selected"] == 5 and srank["regret"] == 0.5
  assert srank["selected"] == "0.0001, 0.01"
  dead = picked(selected, "dead_units")  # NaN at 1e-4 is not "fewest"
  assert dead["selected"] == "0.001" and dead["regret"] == 0.5


def test_regret_mean_and_se_over_seeds_by_hand():
  # srank picks candidate k (returns 1, 5, 9: regret 0, 0.5, 1) in each (game, seed).
  picks = {("Pong", 0): 1, ("Pong", 1): 2, ("Pong", 2): 0,
           ("Breakout", 0): 2, ("Breakout", 1): 2, ("Breakout", 2): 1}
  entries = []
  for (game, seed), k in picks.items():
    entries += group({RET: [1, 5, 9], SRANK: [5 if i == k else 1 for i in range(3)]},
                     game=game, seed=seed)
  summary = ps.evaluate(tidy(entries), iterations=[0]).regret
  summary = summary[summary["criterion"] == "srank"].set_index("game")
  # Pong regrets 0.5, 1, 0: mean 0.5, sd 0.5, SE 0.5 / sqrt(3).
  assert summary.loc["Pong", "regret_mean"] == pytest.approx(0.5)
  assert summary.loc["Pong", "regret_se"] == pytest.approx(0.5 / np.sqrt(3))
  # Breakout 1, 1, 0.5: mean 5/6, variance ((1/6)^2 * 2 + (1/3)^2) / 2 = 1/12.
  assert summary.loc["Breakout", "regret_mean"] == pytest.approx(5 / 6)
  assert summary.loc["Breakout", "regret_se"] == pytest.approx(np.sqrt(1 / 12 / 3))
  # All games: per seed mean over games 0.75, 1, 0.25 -> mean 2/3, variance 7/48.
  assert summary.loc[ps.ALL_GAMES, "regret_mean"] == pytest.approx(2 / 3)
  assert summary.loc[ps.ALL_GAMES, "regret_se"] == pytest.approx(np.sqrt(7 / 48 / 3))
  assert list(summary.index) == ["Breakout", "Pong", ps.ALL_GAMES]
  assert set(summary["regret_n"]) == {3}


def test_equal_returns_give_nan_regret_left_out_and_noted():
  entries = (group({RET: [4, 4, 4], SRANK: [1, 2, 3]}, seed=0)
             + group({RET: [1, 5, 9], SRANK: [1, 9, 5]}, seed=1))
  result = ps.evaluate(tidy(entries), iterations=[0])
  regret = result.regret.set_index(["criterion", "game"])
  assert regret.loc[("srank", "Pong"), "regret_mean"] == 0.5
  assert regret.loc[("srank", "Pong"), "regret_n"] == 1
  assert any("all returned the same" in p and "Pong seed 0" in p for p in result.problems)


# ----------------------------------------------------------------- correlations
def test_rank_correlations_hand_worked_and_against_scipy():
  rng = np.random.default_rng(0)
  noisy = rng.normal(size=3)
  entries = group({RET: [1, 5, 9], SRANK: [1, 2, 3], DEAD: [0.1, 0.2, 0.3],
                   Q: [1, 9, 5], LOSS: list(noisy)})
  table = ps.rank_correlations(ps.candidate_table(tidy(entries), LR, [0], skip_missing=True))
  table = table.set_index("criterion")
  # srank rises with the return: +1. Dead units rise with it too, but fewer is better:
  # oriented -dead_units falls as the return rises: -1.
  assert table.loc["srank", ["spearman", "kendall"]].tolist() == pytest.approx([1, 1])
  assert table.loc["dead_units", ["spearman", "kendall"]].tolist() == pytest.approx([-1, -1])
  # Q ranks 1, 3, 2 against 1, 2, 3: rho = 1 - 6 (0 + 1 + 1) / (3 (9 - 1)) = 0.5;
  # pairs (1,2), (1,3) concordant, (2,3) discordant: tau = (2 - 1) / 3.
  assert table.loc["q_value", "spearman"] == pytest.approx(0.5)
  assert table.loc["q_value", "kendall"] == pytest.approx(1 / 3)
  assert table.loc["td_loss", "kendall"] == pytest.approx(
      stats.kendalltau(-noisy, [1, 5, 9]).statistic)
  assert table.loc["td_loss", "spearman"] == pytest.approx(
      stats.spearmanr(-noisy, [1, 5, 9]).statistic)
  assert set(table["n"]) == {3}


def test_rank_correlation_summary_and_constant_criterion():
  entries = (group({RET: [1, 5, 9], SRANK: [1, 2, 3], DEAD: [0, 0, 0]}, seed=0)
             + group({RET: [1, 5, 9], SRANK: [1, 9, 5], DEAD: [0, 0, 0]}, seed=1))
  result = ps.evaluate(tidy(entries), iterations=[0])
  per_group = result.correlations.set_index(["criterion", "seed"])
  assert np.isnan(per_group.loc[("dead_units", 0), "spearman"])  # constant: undefined
  summary = result.correlation_summary.set_index(["criterion", "game"])
  # srank: rho 1 and 0.5 over two seeds: mean 0.75, SE = sd / sqrt(2) = 0.25.
  assert summary.loc[("srank", "Pong"), "spearman_mean"] == pytest.approx(0.75)
  assert summary.loc[("srank", "Pong"), "spearman_se"] == pytest.approx(0.25)
  assert summary.loc[("srank", "Pong"), "kendall_mean"] == pytest.approx((1 + 1 / 3) / 2)
  assert summary.loc[("dead_units", "Pong"), "spearman_n"] == 0


# ----------------------------------------------------------------- improvement
def test_improvement_over_online_by_hand():
  # Three seeds; the candidates' returns per seed, srank picks the middle one.
  entries = []
  for seed, returns in enumerate(([2, 10, 12], [3, 15, 20], [1, 25, 30])):
    entries += group({RET: returns, SRANK: [1, 9, 5]}, seed=seed)
  for seed, returns in enumerate(([-40, -30, -10], [-50, -20, -5])):
    entries += group({RET: returns, SRANK: [9, 1, 5]}, game="Breakout", seed=seed)
  improvement = ps.evaluate(tidy(entries), iterations=[0]).improvement.set_index("game")
  # Pong: median online return of 12, 20, 30 = 20; median srank choice of 10, 15, 25 = 15.
  assert improvement.loc["Pong", "return_online"] == 20
  assert improvement.loc["Pong", "return_criterion"] == 15
  assert improvement.loc["Pong", "improvement_pct"] == pytest.approx(100 * (15 - 20) / 20)
  # Breakout: median of -10, -5 = -7.5; of -40, -50 = -45: 100 (-45 + 7.5) / 7.5 = -500.
  assert improvement.loc["Breakout", "improvement_pct"] == pytest.approx(-500)
  zero = ps.improvement_over_online(pd.DataFrame({
      "game": ["Pong"] * 2, "seed": [0, 0], "iteration": [0, 0],
      "criterion": ["online", "srank"], "return_selected": [0.0, -1.0]}))
  assert np.isnan(zero["improvement_pct"].item())


# ----------------------------------------------------------------- tags and defaults
def test_td_loss_uses_train_tdloss_where_logged_else_train_loss():
  # 1e-4 has regularisers (TD loss 1, total 10); the others log the TD loss as Train/Loss.
  entries = group({RET: [1, 5, 9], LOSS: [10, 2, 3]})
  entries[0][4][TD] = 1.0
  cands = ps.candidate_table(tidy(entries), LR, [0], skip_missing=True)
  assert cands.tags["td_loss"] == [LOSS, TD]
  assert cands.table["td_loss"].tolist() == [1, 2, 3]
  assert picked(ps.selections(cands), "td_loss")["selected"] == "0.0001"


def test_detect_column_and_default_iterations():
  entries = []
  for it in range(20):
    entries += group({RET: [1, 5, 9], SRANK: [1, 9, 5]}, iteration=it)
  table = tidy(entries)
  assert ps.detect_column(table) == LR
  assert ps.default_iterations(table) == [1, 19]  # the 2nd of 20 (ceil(20 / 10)), the last
  assert ps.default_iterations(table[table["iteration"] < 3]) == [0, 2]
  # No hyperparameter varies, the agent does: the agents compete.
  agents = table[table[LR] == 1e-4].assign(agent="DQNAgent")
  other = table[table[LR] == 1e-3].assign(agent="DQNAgent+LpRegularizer", run="lp")
  both = pd.concat([agents, other]).drop(columns=[LR])
  assert ps.detect_column(both) == "agent"
  assert ps.candidate_table(both, "agent", [0], skip_missing=True).group_by == ["game", "seed"]


# ----------------------------------------------------------------- bad input
def test_single_candidate_is_an_error_naming_the_run():
  entries = group({RET: [1, 5, 9], SRANK: [1, 2, 3]}) + [
      ("Breakout", 0, 1e-4, 0, {RET: 1, SRANK: 2})]
  with pytest.raises(ps.SelectionError, match=r"single candidate.*Breakout/lr0.0001/seed0"):
    ps.candidate_table(tidy(entries), LR, [0])
  with pytest.raises(ps.SelectionError, match="nothing to select among"):
    ps.detect_column(tidy(entries[-1:]))


def test_missing_criterion_tag_raises_or_is_skipped_with_a_problem():
  entries = group({RET: [1, 5, 9], SRANK: [1, 2, 3], DEAD: [0, 0, 0]})
  del entries[2][4][DEAD]
  with pytest.raises(ps.MissingTagError,
                     match=r"'dead_units' needs 'Features/dead_units'.*Pong/lr0.01/seed0"):
    ps.candidate_table(tidy(entries), LR, [0], criteria=ps.CRITERIA[:2])
  cands = ps.candidate_table(tidy(entries), LR, [0], skip_missing=True)
  assert [c.name for c in cands.criteria] == ["srank"]
  assert any("'dead_units'" in p and "left out" in p for p in cands.problems)
  assert any("'Train/TDLoss' or 'Train/Loss'" in p for p in cands.problems)
  entries = group({SRANK: [1, 2, 3]})
  with pytest.raises(ps.MissingTagError, match="never logged 'Eval/AverageReturn'"):
    ps.candidate_table(tidy(entries), LR, [0])
  with pytest.raises(ps.MissingTagError, match="no criterion can be computed"):
    ps.evaluate(tidy(group({RET: [1, 2, 3]})), iterations=[0])


def test_iteration_not_reached_or_tag_absent_there_names_run_and_iteration():
  entries = []
  for it in range(3):
    entries += group({RET: [1, 5, 9], SRANK: [1, 2, 3]}, iteration=it)
  table = tidy(entries)
  short = table[~((table["run"] == "Pong/lr0.001/seed0") & (table["iteration"] == 2))]
  with pytest.raises(ps.SelectionError,
                     match=r"Pong/lr0.001/seed0 did not reach iteration 2 \(last logged: 1\)"):
    ps.candidate_table(short, LR, [0, 2])
  gap = table[~((table["run"] == "Pong/lr0.01/seed0") & (table["iteration"] == 1)
                & (table["tag"] == SRANK))]
  with pytest.raises(ps.SelectionError,
                     match=r"run Pong/lr0.01/seed0 has no 'Rank/srank' at iteration 1"):
    ps.candidate_table(gap, LR, [1], criteria=ps.CRITERIA[:1])
  with pytest.raises(ps.SelectionError, match="'dropout' is not a label column"):
    ps.candidate_table(table, "dropout", [0])


def test_two_varying_hyperparameters_must_be_named():
  table = tidy(group({RET: [1, 5, 9], SRANK: [1, 2, 3]}))
  table["dropout"] = table["run"].map({r: k % 2 for k, r in enumerate(
      table["run"].cat.categories)}).astype(float)
  with pytest.raises(ps.SelectionError, match=r"2 hyperparameters vary.*dropout"):
    ps.detect_column(table)


# ----------------------------------------------------------------- the report
def test_report_writes_the_policy_selection_section(tmp_path, monkeypatch, capsys):
  from analysis import report  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  # The other sections have their own tests (test_analysis_notebooks.py); left out here
  # to keep this one fast.
  for section in ("learning_curves", "relative_improvement", "aggregates",
                  "rank_vs_performance", "phase_curves", "feature_diagnostics"):
    monkeypatch.setattr(report, section, lambda *args, **kwargs: [])
  root = tmp_path / "sweep"
  for seed in (0, 1):
    for k, lr in enumerate(LRS):
      write_run(root / f"lr{lr}" / f"s{seed}", {
          RET: {i: [1, 5, 9][k] + i + seed for i in range(3)},
          SRANK: {i: [1, 9, 5][k] for i in range(3)},       # the middle return: 0.5
          DEAD: {i: [0.3, 0.2, 0.1][k] for i in range(3)},  # the best: 1
          LOSS: {i: [1, 2, 3][k] for i in range(3)}},       # the worst: 0
                config_text("Pong", seed, lr=lr))
  out = tmp_path / "out"
  assert report.main(["--logdir", str(root), "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert f"candidates differ in '{LR}'; iterations [0, 2]" in printed
  assert "criterion 'q_value' needs 'Value/QData'" in printed and "left out" in printed
  for name in ("policy_selection.csv", "policy_selection_correlations.csv",
               "policy_selection_correlations_summary.csv", "policy_selection_improvement.csv",
               "policy_selection.md"):
    assert f"wrote {out / name}" in printed, name
  for png in ("policy_selection_regret.png", "policy_selection_improvement.png"):
    assert (out / png).stat().st_size > 1000, png
  regret = pd.read_csv(out / "policy_selection_regret.csv")
  regret = regret[regret["game"] == ps.ALL_GAMES].set_index(["iteration", "criterion"])
  assert regret.loc[(2, "srank"), "regret_mean"] == 0.5
  assert regret.loc[(0, "dead_units"), "regret_mean"] == 1.0
  assert regret.loc[(0, "td_loss"), "regret_mean"] == 0.0
  assert "| Pong | 1.00 ± 0.00 (2) | 0.50 ± 0.00 (2) | 1.00 ± 0.00 (2) | 0.00 ± 0.00 (2) |" in (
      out / "policy_selection.md").read_text()
  # The column and iterations options reach the section; a bad one skips it, named.
  assert report.main(["--logdir", str(root), "--out", str(tmp_path / "cli"),
                      "--selection_column", LR, "--selection_iterations", "1,7"]) == 1
  err = capsys.readouterr().err
  assert ("skipped offline policy selection: offline policy selection: run(s) lr0.0001/s0, "
          "lr0.0001/s1") in err and "did not reach iteration 7 (last logged: 2" in err

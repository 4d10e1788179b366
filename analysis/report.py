r"""Draws every figure and table the analysis notebooks draw, without Jupyter.

  python -m analysis.report --logdir runs/my_sweep --out reports/my_sweep

Writes PNG figures and CSV tables into --out and prints what it wrote and what it
skipped (a figure whose tags no run logged is skipped with the reason; one whose tags
only some runs logged is drawn from those). See docs/analysis.md. Exit status 2, with
one `error:` line, when the logdir is missing or holds nothing to draw.
"""
import argparse
import logging
import os
import sys
from typing import Optional, Sequence

import pandas as pd

from analysis import figures
from analysis import loading
from analysis import phases as phases_lib
from analysis import policy_selection as selection_lib
from analysis import scores as scores_lib
from analysis import treatment_effects as te

RETURN = scores_lib.RETURN_TAG
SRANK = "Rank/srank"


def default_pairs(agents: Sequence[str]) -> list:
  """(variant, base) for every agent "X+Y" whose base "X" is also there."""
  agents = set(agents)
  return [(a, a.rsplit("+", 1)[0]) for a in sorted(agents)
          if "+" in a and a.rsplit("+", 1)[0] in agents]


def learning_curves(sweep: loading.Sweep, out: str, spread: str = "std") -> list:
  """srank and return per game over iterations (IUP Figures 2, 3, A.1-A.3)."""
  tags = sweep.require([SRANK, RETURN], "learning curves")
  fig = figures.curves_per_game(sweep.scalars, tags, by="agent", spread=spread)
  return [figures.save(fig, out, "learning_curves")]


def relative_improvement(sweep: loading.Sweep, out: str, pairs: Optional[list] = None,
                         how: str = "best") -> list:
  """Bars of (variant - base) / |base| per game (IUP Figure 7), one figure per pair."""
  sweep.require([RETURN], "relative improvement")
  pairs = default_pairs(sweep.runs["agent"]) if pairs is None else pairs
  if not pairs:
    raise LookupError("relative improvement: no (variant, base) pair of agents: name them "
                      "(--pair VARIANT,BASE) or run agents 'X' and 'X+Y' "
                      f"(agents here: {sorted(sweep.runs['agent'].unique())}).")
  per_game = scores_lib.per_game(scores_lib.run_scores(sweep.scalars, how=how))
  written = []
  for variant, base in pairs:
    missing = [a for a in (variant, base) if a not in per_game.columns]
    if missing:
      raise LookupError(f"relative improvement: no runs of agent(s) {missing}.")
    relative = scores_lib.relative_improvement(per_game[variant], per_game[base])
    summary = scores_lib.improvement_summary(relative)
    name = f"relative_improvement_{slug(variant)}_vs_{slug(base)}"
    relative.rename("relative_improvement").to_csv(os.path.join(out, name + ".csv"))
    fig = figures.relative_improvement_bars(relative, summary, variant, base)
    written += [figures.save(fig, out, name), os.path.join(out, name + ".csv")]
  return written


def aggregates(sweep: loading.Sweep, out: str, how: str = "final", last: int = 1,
               reps: int = 2000, normalize: str = "auto") -> list:
  """IQM, median, mean, optimality gap with bootstrap CIs, and performance profiles."""
  sweep.require([RETURN], "aggregate performance")
  run = scores_lib.run_scores(sweep.scalars, how=how, last=last)
  score_dict, games, used, notes = scores_lib.score_matrices(run, normalize=normalize)
  for note in notes:
    print(f"aggregate performance: {note}")
  xlabel = "Human Normalized Score" if used == "human" else "Raw Score"
  table = scores_lib.aggregate(score_dict, reps=reps)
  table.to_csv(os.path.join(out, "aggregates.csv"), index=False)
  written = [figures.save(figures.aggregate_intervals(table, xlabel), out, "aggregates"),
             os.path.join(out, "aggregates.csv")]
  taus, profiles, cis = scores_lib.performance_profiles(score_dict, reps=reps)
  written.append(figures.save(figures.performance_profile(taus, profiles, cis, xlabel), out,
                              "performance_profiles"))
  return written


def rank_vs_performance(sweep: loading.Sweep, out: str, by: str = "agent",
                        per_iteration: bool = False, control: Optional[dict] = None) -> list:
  """Scatter of srank vs return with correlations, and the ATE tables 1 and 3."""
  sweep.require([SRANK, RETURN], "rank vs performance")
  data = te.final_values(sweep.scalars, {"srank": SRANK, "score": RETURN},
                         per_iteration=per_iteration)
  data = normalized_scores(data)
  written = [figures.save(figures.rank_vs_performance(data, "srank", "score", by), out,
                          "rank_vs_performance")]
  figures.correlations(data, "srank", "score", by).to_csv(
      os.path.join(out, "rank_performance_correlations.csv"), index=False)
  te.rank_conditioning_ate(data, group_by=by).to_csv(
      os.path.join(out, "ate_rank_on_return.csv"), index=False)
  runs = te.final_values(sweep.scalars, {"srank": SRANK})
  control = default_control(sweep) if control is None else control
  te.intervention_effects(runs, control).to_csv(
      os.path.join(out, "ate_interventions_on_srank.csv"), index=False)
  return written + [os.path.join(out, name) for name in (
      "rank_performance_correlations.csv", "ate_rank_on_return.csv",
      "ate_interventions_on_srank.csv")]


def normalized_scores(data: pd.DataFrame) -> pd.DataFrame:
  """Adds human-normalized `score` where every row is an Atari game with references."""
  reference = scores_lib.reference_scores()
  atari = (data["domain"].astype(str) == "atari").all() and all(
      scores_lib.game_key(g) in reference.index for g in data["game"].astype(str).unique())
  if atari:
    data = data.assign(raw_score=data["score"], score=[
        float(scores_lib.human_normalized(s, g, reference))
        for s, g in zip(data["score"], data["game"].astype(str))])
  return data


def default_control(sweep: loading.Sweep) -> dict:
  """Control value per factor: the base agent, and each hyperparameter's commonest value."""
  control = {}
  agents = sorted(sweep.runs["agent"].unique(), key=lambda a: (a.count("+"), a))
  if len(agents) > 1:
    control["agent"] = agents[0]
  for key in sweep.hyperparameters:
    counts = sweep.runs[key].astype(str).value_counts()
    if len(counts) > 1:
      value = counts.index[0]
      control[key] = next(v for v in sweep.runs[key] if str(v) == value)
  return control


def phase_curves(sweep: loading.Sweep, out: str, max_panels: int = 6,
                 rule: phases_lib.PhaseRule = phases_lib.PhaseRule()) -> list:
  """srank, dead units and return with the three phases shaded (empirical study Sec. 4)."""
  tags = sweep.require(list(figures.PHASE_TAGS), "phases of learning")
  if SRANK not in tags:
    raise LookupError("phases of learning: the rule needs Rank/srank.")
  groups = sweep.runs[["game", "agent"]].drop_duplicates().sort_values(["game", "agent"])
  groups = [tuple(map(str, g)) for g in groups.to_numpy()[:max_panels]]
  fig, table = figures.phase_curves(sweep.scalars, groups, rule, tags)
  table.to_csv(os.path.join(out, "phases.csv"), index=False)
  return [figures.save(fig, out, "phases"), os.path.join(out, "phases.csv")]


def feature_diagnostics(sweep: loading.Sweep, out: str) -> list:
  """phi(s)^T phi(s') and sigma_max / sigma_min curves (DR3 and Lp diagnostics)."""
  sweep.require(["Features/dot_next", "Rank/sigma_max", "Rank/sigma_min"],
                "feature diagnostics")
  return [figures.save(figures.feature_diagnostics(sweep.scalars), out,
                       "feature_diagnostics")]


def policy_selection(sweep: loading.Sweep, out: str, column: Optional[str] = None,
                     iterations: Optional[Sequence[int]] = None) -> list:
  """Offline policy selection among runs that differ in one setting (empirical study
  Section 10, Figures 19 and 20): simple regret, rank correlations, improvement over
  the online choice.

  `column` defaults to the one hyperparameter that varies within a game (else the
  agent), `iterations` to the last one every run reached and the one a tenth of the way.
  A criterion whose tags some run lacks is left out with a printed note; the others
  are still computed.
  """
  sweep.require([RETURN], "offline policy selection")
  result = selection_lib.evaluate(sweep.scalars, column=column, iterations=iterations)
  print(f"offline policy selection: candidates differ in {result.column!r}; iterations "
        f"{result.iterations}; criteria {[c.name for c in result.candidates.criteria]}")
  for note in result.problems:
    print(f"offline policy selection: {note}")
  tables = {"policy_selection": result.selections,
            "policy_selection_regret": result.regret,
            "policy_selection_correlations": result.correlations,
            "policy_selection_correlations_summary": result.correlation_summary,
            "policy_selection_improvement": result.improvement}
  written = []
  for name, table in tables.items():
    table.to_csv(os.path.join(out, name + ".csv"), index=False)
    written.append(os.path.join(out, name + ".csv"))
  path = os.path.join(out, "policy_selection.md")
  with open(path, "w") as f:
    f.write(selection_lib.regret_markdown(result.regret, result.column))
  written.append(path)
  written.append(figures.save(figures.policy_selection_regret(result.regret), out,
                              "policy_selection_regret"))
  written.append(figures.save(figures.policy_selection_improvement(result.improvement),
                              out, "policy_selection_improvement"))
  return written


def _iterations(text: str) -> list:
  try:
    return [int(i) for i in text.split(",") if i.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated iterations such as 19,199, got {text!r}") from None


def slug(text: str) -> str:
  return "".join(c if c.isalnum() else "_" for c in text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Figures and tables of a sweep of batch_rl runs (TensorBoard logs).",
      epilog="See docs/analysis.md for what each figure shows.")
  parser.add_argument("--logdir", required=True, help="a run's base_dir or a folder of runs")
  parser.add_argument("--out", required=True, help="folder for the PNG and CSV files")
  parser.add_argument("--agents", default=None,
                      help="comma-separated agent labels to keep (default: all)")
  parser.add_argument("--pair", action="append", default=None, metavar="VARIANT,BASE",
                      help="agents compared by the relative-improvement figure "
                      "(repeatable; default every 'X+Y' with its base 'X')")
  parser.add_argument("--by", default="agent",
                      help="column that colors the rank-vs-performance scatter (agent or "
                      "a gin binding such as create_optimizer.learning_rate)")
  parser.add_argument("--selection_column", default=None,
                      help="offline policy selection: the column the competing runs differ "
                      "in (default: the one hyperparameter varying within a game, else the "
                      "agent)")
  parser.add_argument("--selection_iterations", type=_iterations, default=None,
                      metavar="I,J", help="offline policy selection: iterations to select at "
                      "(default: the last every run reached and the one a tenth of the way)")
  parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
  parser.add_argument("--no_cache", action="store_true", help="ignore and keep no cache")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
  try:
    sweep = loading.load_sweep(args.logdir, cache=not args.no_cache)
  except loading.LogdirError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.agents:
    sweep = sweep.select(agents=args.agents.split(","))
  if sweep.runs.empty or sweep.scalars.empty:
    print(f"error: no scalars to draw under {args.logdir} (agents kept: {args.agents}).",
          file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  print(f"{len(sweep.runs)} runs, games {sorted(sweep.runs['game'].unique())}, agents "
        f"{sorted(sweep.runs['agent'].unique())}, hyperparameters {sweep.hyperparameters}")
  pairs = [tuple(p.split(",", 1)) for p in args.pair] if args.pair else None
  sections = [
      ("learning curves", lambda: learning_curves(sweep, args.out)),
      ("relative improvement", lambda: relative_improvement(sweep, args.out, pairs)),
      ("aggregate performance", lambda: aggregates(sweep, args.out, reps=args.reps)),
      ("rank vs performance", lambda: rank_vs_performance(sweep, args.out, by=args.by)),
      ("phases of learning", lambda: phase_curves(sweep, args.out)),
      ("feature diagnostics", lambda: feature_diagnostics(sweep, args.out)),
      ("offline policy selection", lambda: policy_selection(
          sweep, args.out, args.selection_column, args.selection_iterations)),
  ]
  written = 0
  for name, section in sections:
    try:
      for path in section():
        print(f"wrote {path}")
        written += 1
    except (LookupError, ValueError) as e:
      print(f"skipped {name}: {e}", file=sys.stderr)
  return 0 if written else 1


if __name__ == "__main__":
  sys.exit(main())

r"""Is DQN more robust to evaluation-time input perturbations than BC, although BC's
rank is higher? (Gulcehre et al. 2022, Section 11, Figures 21-22), on MinAtar Breakout.

  python experiments/robustness.py                 # the default runs below, 3 seeds each
  python experiments/robustness.py --dqn_runs A/seed_0 A/seed_1 A/seed_2 \
      --bc_runs B/seed_0 B/seed_1 B/seed_2 --table /tmp/r.md --figure /tmp/r.png

Inputs are finished offline runs on the quickstart's data (gin_configs/quickstart.gin
for DQN, gin_configs/quickstart_bc.gin for BC), one directory per seed; the defaults
are the long runs of the offline claims studies (runs/offline_claims/main/dqn_10 and
runs/offline_claims/3seeds/bc_10, relative to the repository). A run that is missing
or has not checkpointed its last iteration is named, and nothing is summarised.

For every run, its final checkpoint is evaluated by `batch_rl.runners.evaluate_perturbed`
(the run's own evaluation: same environments, seeds and epsilon; events in
<run>/perturbed/, already evaluated levels are not redone) at the random-shift and
random-scaling levels given, with --evaluation_steps agent steps per phase. Then:

  R_P(eps) = S(eps) / S(0) per run (analysis/robustness.py: the paper's metric as read
  there), mean and 95% t-interval over seeds per level; per run and kind, the mean of R
  over the levels > 0; DQN minus BC with Welch's 95% interval. Final srank: the run's
  Rank/srank at its last iteration (its own event file), BC minus DQN likewise.

Verdict per kind: "reproduced" when DQN's mean R exceeds BC's (interval above 0) and
BC's final srank exceeds DQN's (interval above 0); "reversed" when BC's mean R exceeds
DQN's (interval below 0); "not reproduced" otherwise (the reason given). Overall:
reproduced (reversed) if every kind is, else not reproduced. Writes the markdown table
--table (docs/robustness.md) and the figure --figure (docs/robustness.png).
"""
import argparse
import logging
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from batch_rl.validation import ConfigError  # pylint: disable=g-import-not-at-top

# The committed archive of the offline claims (experiments/offline_claims.py), which
# keeps these runs' final checkpoints.
DEFAULT_DQN = [os.path.join("results", "offline_claims", "main", "dqn_10", f"seed_{s}")
               for s in range(3)]
DEFAULT_BC = [os.path.join("results", "offline_claims", "3seeds", "bc_10", f"seed_{s}")
              for s in range(3)]
CLAIM = "DQN is more robust to these perturbations than BC, although BC's rank is higher"
SRANK_TAG = "Rank/srank"


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dqn_runs", nargs="+", default=DEFAULT_DQN,
                      help="DQN run directories, one per seed (relative to the repository "
                      "or absolute)")
  parser.add_argument("--bc_runs", nargs="+", default=DEFAULT_BC,
                      help="BC run directories, one per seed")
  parser.add_argument("--kinds", nargs="+", default=["shift", "scale"])
  parser.add_argument("--shift_levels", nargs="+", type=int, default=[1, 2, 3, 4],
                      help="pixels of the random shift (MinAtar: at most 5)")
  parser.add_argument("--scale_levels", nargs="+", type=float, default=[0.25, 0.5, 0.75, 1.0],
                      help="zoom factors in [1/(1 + level), 1 + level] (at most 1)")
  parser.add_argument("--evaluation_steps", type=int, default=5000,
                      help="agent steps of each evaluation phase (plain and per level)")
  parser.add_argument("--min_seeds", type=int, default=3)
  parser.add_argument("--table", default=os.path.join(REPO, "docs", "robustness.md"))
  parser.add_argument("--figure", default=os.path.join(REPO, "docs", "robustness.png"),
                      help="a PNG file")
  args = parser.parse_args(argv)
  absolute = lambda path: path if os.path.isabs(path) else os.path.join(REPO, path)
  args.dqn_runs = [absolute(p) for p in args.dqn_runs]
  args.bc_runs = [absolute(p) for p in args.bc_runs]
  return args


def run_state(run_dir: str) -> tuple[bool, str]:
  """(finished, why not) of one run: its config's num_iterations all checkpointed."""
  from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
  from batch_rl import gin_bindings  # pylint: disable=g-import-not-at-top
  config = os.path.join(run_dir, "config.gin")
  if not os.path.isfile(config):
    return False, "no such run (no config.gin)"
  with open(config) as f:
    total = gin_bindings.bindings(f.read()).get("FixedReplayRunner.num_iterations", 200)
  done = checkpointing.list_iterations(os.path.join(run_dir, "checkpoints"))
  if not done or done[-1] < total - 1:
    last = f"iteration {done[-1] + 1}" if done else "no iteration"
    return False, f"unfinished: {last} of {total} checkpointed"
  return True, ""


def evaluate(args, run_dir: str) -> int:
  """The perturbed evaluations of the run's final checkpoint; returns its iteration."""
  from batch_rl.runners import evaluate_perturbed  # pylint: disable=g-import-not-at-top
  levels = {"shift": args.shift_levels, "scale": args.scale_levels}
  bindings = [f"PerturbedEvaluation.kinds = {list(args.kinds)!r}",
              "PerturbedEvaluation.levels = {"
              + ", ".join(f"'{k}': {levels[k]!r}" for k in args.kinds) + "}",
              f"PerturbedEvaluation.evaluation_steps = {args.evaluation_steps}"]
  iteration, _ = evaluate_perturbed.evaluate_run(run_dir, bindings=bindings)
  return iteration


def final_srank(run_dir: str) -> float:
  from analysis import robustness  # pylint: disable=g-import-not-at-top
  scalars = robustness.read_scalars(run_dir)
  srank = scalars[scalars["tag"] == SRANK_TAG].sort_values("iteration")
  return float(srank["value"].iloc[-1]) if len(srank) else float("nan")


def shown(path: str) -> str:
  """A run's path relative to the repository when it is inside it."""
  relative = os.path.relpath(path, REPO)
  return path if relative.startswith("..") else relative


def direction(low: float, high: float) -> int:
  """+1 when the interval lies above 0, -1 below, 0 when it holds 0 (or is unknown)."""
  if np.isfinite(low) and low > 0:
    return 1
  if np.isfinite(high) and high < 0:
    return -1
  return 0


def verdict(robust: tuple, srank: tuple) -> tuple[str, str]:
  """(verdict, reason) of one kind from (DQN - BC mean R) and (BC - DQN srank)
  intervals (difference, lower, upper)."""
  more_robust, higher_rank = direction(*robust[1:]), direction(*srank[1:])
  if more_robust < 0:
    return "reversed", "BC is more robust than DQN (interval below 0)"
  if more_robust > 0 and higher_rank > 0:
    return "reproduced", "DQN more robust and BC's srank higher, both intervals above 0"
  reasons = []
  if more_robust == 0:
    reasons.append("the robustness difference's interval holds 0")
  if higher_rank < 0:
    reasons.append("DQN's srank is higher than BC's")
  elif higher_rank == 0:
    reasons.append("the srank difference's interval holds 0")
  return "not reproduced", "; ".join(reasons)


def fmt(mean, low=float("nan"), high=float("nan"), digits=3) -> str:
  if not np.isfinite(mean):
    return "n/a"
  interval = f" [{low:.{digits}g}, {high:.{digits}g}]" if np.isfinite(low) else ""
  return f"{mean:.{digits}g}{interval}"


def summarise(args, runs: dict, iterations: dict) -> tuple[str, object]:
  """The markdown table and the figure of the evaluated runs."""
  from analysis import robustness  # pylint: disable=g-import-not-at-top
  tables = {agent: [robustness.run_table(robustness.read_scalars(
      os.path.join(r, "perturbed")), iteration=iterations[r]) for r in dirs]
            for agent, dirs in runs.items()}
  summary = robustness.summarise(tables)
  sranks = {agent: [final_srank(r) for r in dirs] for agent, dirs in runs.items()}
  per_run = {agent: [robustness.mean_robustness(t) for t in ts] for agent, ts in tables.items()}
  srank_diff = robustness.difference_ci(sranks["BC"], sranks["DQN"])
  lines = [
      f"# Robustness to evaluation-time input perturbations: DQN vs BC", "",
      f"Claim (Gulcehre et al. 2022, Section 11): {CLAIM}. MinAtar Breakout, the "
      "quickstart's data; each run's final checkpoint evaluated with its observations "
      f"perturbed (random shift: pixels; random scaling: zoom factors in [1/(1 + level), "
      f"1 + level]), {args.evaluation_steps} agent steps per phase. R = S(level) / S(0) "
      "per run (analysis/robustness.py), mean and 95% t-interval over seeds; differences "
      "with Welch's 95% interval. Produced by `python experiments/robustness.py"
      + "".join(f" {a}" for a in sys.argv[1:]) + "`.", "",
      "Runs: " + "; ".join(f"{agent}: " + ", ".join(
          f"{shown(r)} (iteration {iterations[r]})" for r in dirs)
                           for agent, dirs in runs.items()) + ".", ""]
  verdicts = []
  lines += ["| kind | DQN mean R over levels > 0 | BC mean R | DQN - BC | BC - DQN final "
            "srank | verdict |", "| --- | --- | --- | --- | --- | --- |"]
  for kind in args.kinds:
    dqn = [r.get(kind, float("nan")) for r in per_run["DQN"]]
    bc = [r.get(kind, float("nan")) for r in per_run["BC"]]
    diff = robustness.difference_ci(dqn, bc)
    outcome, reason = verdict(diff, srank_diff)
    verdicts.append(outcome)
    lines.append(f"| {kind} | {fmt(*robustness.mean_ci(dqn)[:3])} | "
                 f"{fmt(*robustness.mean_ci(bc)[:3])} | {fmt(*diff)} | {fmt(*srank_diff)} | "
                 f"**{outcome}**: {reason} |")
  overall = (verdicts[0] if len(set(verdicts)) == 1 and verdicts[0] != "not reproduced"
             else "not reproduced")
  dqn_srank, bc_srank = robustness.mean_ci(sranks["DQN"]), robustness.mean_ci(sranks["BC"])
  lines += ["", f"**Verdict: {overall}.** Final srank (last iteration): DQN "
            f"{fmt(*dqn_srank[:3])}, BC {fmt(*bc_srank[:3])} (per seed: DQN "
            + ", ".join(f"{s:.0f}" for s in sranks["DQN"]) + "; BC "
            + ", ".join(f"{s:.0f}" for s in sranks["BC"]) + ").", ""]
  lines += ["| kind | level | DQN return | BC return | DQN R | BC R |",
            "| --- | --- | --- | --- | --- | --- |"]
  for (kind, level), group in summary.groupby(["kind", "level"]):
    cells = {}
    for _, row in group.iterrows():
      cells[row["agent"]] = (fmt(row["score_mean"], row["score_lower"], row["score_upper"]),
                             fmt(row["robustness_mean"], row["robustness_lower"],
                                 row["robustness_upper"]))
    blank = ("n/a", "n/a")
    lines.append(f"| {kind} | {level:g} | {cells.get('DQN', blank)[0]} | "
                 f"{cells.get('BC', blank)[0]} | {cells.get('DQN', blank)[1]} | "
                 f"{cells.get('BC', blank)[1]} |")
  lines += ["", "Per seed (mean R over levels > 0; unperturbed return S(0), the ratio's "
            "denominator; final srank):", ""]
  for agent, dirs in runs.items():
    for r, table, robust, srank in zip(dirs, tables[agent], per_run[agent], sranks[agent]):
      lines.append(f"- {agent} {shown(r)}: " + ", ".join(
          f"{k} {robust.get(k, float('nan')):.3f}" for k in args.kinds)
                   + f"; S(0) {table['unperturbed'].iloc[0]:.3g}; srank {srank:.0f}")
  figure = robustness.curves(summary, kinds=args.kinds, xlabels={
      "shift": "shift level (pixels)", "scale": "scale level (factor in [1/(1+l), 1+l])"})
  return "\n".join(lines) + "\n", figure


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  runs = {"DQN": args.dqn_runs, "BC": args.bc_runs}
  problems = []
  for agent, dirs in runs.items():
    if len(dirs) < args.min_seeds:
      problems.append(f"{agent} has {len(dirs)} runs; the claim needs at least "
                      f"{args.min_seeds} seeds (--min_seeds)")
    for r in dirs:
      finished, why = run_state(r)
      if not finished:
        problems.append(f"{agent} {r}: {why}")
  if problems:
    print("Not summarising; these runs are not ready:\n  " + "\n  ".join(problems)
          + "\nRerun once they have finished.", file=sys.stderr)
    return 1
  iterations = {}
  for agent, dirs in runs.items():
    for r in dirs:
      logging.info("%s %s: perturbed evaluation of the final checkpoint", agent, r)
      try:
        iterations[r] = evaluate(args, r)
      except ConfigError as e:  # e.g. earlier evaluations there made with other settings
        print(f"Error: {e} Here: rerun with the settings those were made with "
              "(--evaluation_steps, levels), or move that folder aside.", file=sys.stderr)
        return 2
  table, figure = summarise(args, runs, iterations)
  from analysis import figures  # pylint: disable=g-import-not-at-top
  from batch_rl.study import files as study_files  # pylint: disable=g-import-not-at-top
  study_files.write_text(os.path.abspath(args.table), table)
  path = os.path.abspath(args.figure)
  figures.save(figure, os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])
  print(table)
  print(f"Wrote {args.table} and {args.figure}.")
  return 0


if __name__ == "__main__":
  sys.exit(main())

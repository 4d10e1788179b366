r"""The empirical study's learning-rate claim at MinAtar scale (Gulcehre et al. 2022, Section 7).

  python experiments/lr_sweep.py                  # train what is missing, then report
  python experiments/lr_sweep.py --no_launch      # report the finished runs only

Runs: studies/lr_sweep.toml (offline DQN on 10% of the quickstart's MinAtar Breakout
data, twelve learning rates a quarter-decade apart from 1e-5 to 5.62e-3, 3 seeds, 100K
gradient steps), launched into --study_dir through the study launcher (resumable;
finished runs are kept in results/lr_sweep, restored before and archived after).

Claim: higher learning rates give more dead units and lower rank ("Increasing the
learning rate increases the number of dead units", Figures 11-12, and the effective
rank diminishes with them). Per seed, Spearman's rho between log learning rate and the
final (mean of the last 3 iterations) srank, dead-unit fraction and return across the
twelve rates; the claim's quantity is rho, with a Student-t 95% CI over seeds and a
verdict (analysis.seed_statistics). Writes <doc>.md and <doc>.png (final srank, dead
units and return against the learning rate, mean ± CI over seeds).

The same runs are the candidates of offline policy selection (Section 10):
`python -m analysis.report --logdir runs/lr_sweep --out reports/lr_sweep`.
"""
import argparse
import os
import sys
import warnings

try:
  import tomllib
except ImportError:  # Python 3.10
  import tomli as tomllib  # pylint: disable=import-error

import numpy as np
from scipy import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from analysis import loading  # pylint: disable=g-import-not-at-top
from analysis import figures  # pylint: disable=g-import-not-at-top
from analysis import seed_statistics as ss  # pylint: disable=g-import-not-at-top
from analysis import treatment_effects  # pylint: disable=g-import-not-at-top
from batch_rl.study import files as study_files  # pylint: disable=g-import-not-at-top

STUDY = os.path.join(REPO, "studies", "lr_sweep.toml")
COLUMN = "create_optimizer.learning_rate"
LAST = 3
TAGS = {"srank": "Rank/srank", "dead_units": "Features/dead_units",
        "return": "Eval/AverageReturn", "q_data": "Value/QData"}
# (quantity, the sign of rho the claim predicts, what the claim says)
CLAIMS = (("srank", -1, "higher learning rates give lower srank"),
          ("dead_units", +1, "higher learning rates give more dead units"),
          ("return", 0, "(not a claim) return against the learning rate"))


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--study_dir", default=os.path.join(REPO, "runs", "lr_sweep"))
  parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
  parser.add_argument("--max_parallel", type=int, default=1)
  parser.add_argument("--no_launch", action="store_true")
  parser.add_argument("--results", default=os.path.join(REPO, "results"),
                      help="the archive of finished runs (<results>/lr_sweep), restored "
                      "before the launch and refreshed after it ('' for none)")
  parser.add_argument("--doc", default=os.path.join(REPO, "docs", "lr_sweep"))
  return parser.parse_args(argv)


def num_iterations() -> int:
  with open(STUDY, "rb") as f:
    data = tomllib.load(f)
  for b in data["bindings"]:
    if b.replace(" ", "").startswith("FixedReplayRunner.num_iterations="):
      return int(b.split("=")[1])
  raise ValueError(f"{STUDY} binds no FixedReplayRunner.num_iterations")


def finals(study_dir: str, iterations: int):
  """(one row per finished run: seed, learning rate, final values; the unfinished runs)."""
  sweep = loading.load_sweep(study_dir)
  if COLUMN not in sweep.runs.columns:
    raise SystemExit(f"{study_dir}: its runs do not vary {COLUMN}; is it the lr sweep?")
  done = sweep.runs[sweep.runs["last_iteration"] + 1 >= iterations]["run"]
  unfinished = sorted(set(sweep.runs["run"]) - set(done))
  if done.empty:
    return None, unfinished
  scalars = sweep.scalars[sweep.scalars["run"].isin(set(done))]
  table = treatment_effects.final_values(scalars, TAGS, last=LAST)
  return table, unfinished


def spearman_per_seed(table, quantity) -> dict:
  """{seed: rho(log lr, quantity)} over the seeds that finished every rate."""
  rates = sorted(table[COLUMN].unique())
  out = {}
  for seed, rows in table.groupby("seed"):
    if len(rows) != len(rates):
      continue
    with warnings.catch_warnings():  # a constant column: rho is undefined, taken as 0
      warnings.simplefilter("ignore", stats.ConstantInputWarning)
      rho = stats.spearmanr(np.log10(rows[COLUMN].astype(float)), rows[quantity]).statistic
    out[seed] = float(rho) if np.isfinite(rho) else 0.0  # constant: no association
  return out


def report(table, unfinished, iterations) -> str:
  lines = [f"Offline DQN on 10% of the quickstart's MinAtar Breakout data, {iterations} x "
           "10,000 gradient steps per run (studies/lr_sweep.toml); final = mean of the last "
           f"{LAST} iterations; mean ± Student-t 95% CI over seeds. Produced by "
           "`python experiments/lr_sweep.py`.", ""]
  if unfinished:
    lines += [f"Not yet finished (left out): {', '.join(unfinished)}.", ""]
  lines += ["| learning rate | seeds | final srank | final dead units | final return | "
            "final Q(s,a_data) |", "| --- | --- | --- | --- | --- | --- |"]
  for lr, rows in table.groupby(COLUMN):
    cells = [ss.format_ci(*ss.mean_ci(rows[q].to_numpy())) for q in
             ("srank", "dead_units", "return", "q_data")]
    lines.append(f"| {float(lr):.3g} | {len(rows)} | " + " | ".join(cells) + " |")
  lines += ["", "| claim | per-seed Spearman rho (log lr, final value) | mean ± 95% CI | "
            "verdict |", "| --- | --- | --- | --- |"]
  for quantity, direction, text in CLAIMS:
    rhos = spearman_per_seed(table, quantity)
    if not rhos:
      continue
    m, h = ss.mean_ci(list(rhos.values()))
    v = ss.verdict(m, h, direction) if direction else "-"
    shown = ", ".join(f"seed {s}: {r:.3g}" for s, r in rhos.items())
    lines.append(f"| {text} | {shown} | {ss.format_ci(m, h)} | {v} |")
  return "\n".join(lines) + "\n"


def plot(table, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
  for ax, (quantity, title) in zip(axes, (("srank", "final srank"),
                                          ("dead_units", "final dead-unit fraction"),
                                          ("return", "final return"))):
    rates, means, halves = [], [], []
    for lr, rows in table.groupby(COLUMN):
      m, h = ss.mean_ci(rows[quantity].to_numpy())
      rates.append(float(lr))
      means.append(m)
      halves.append(0.0 if not np.isfinite(h) else h)
    ax.errorbar(rates, means, yerr=halves, marker="o", capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  path = os.path.abspath(path)
  figures.save(fig, os.path.dirname(path), os.path.splitext(os.path.basename(path))[0])


def main(argv):
  args = parse_args(argv)
  if not args.no_launch:
    from batch_rl.study import launch as study_launch  # pylint: disable=g-import-not-at-top
    study_launch.launch_in_order([("lr_sweep", STUDY, args.study_dir)], args.executor,
                                 args.max_parallel, archive_dir=args.results or None)
  iterations = num_iterations()
  table, unfinished = finals(args.study_dir, iterations)
  if table is None:
    raise SystemExit(f"No run under {args.study_dir} has finished its {iterations} "
                     "iterations.")
  text = report(table, unfinished, iterations)
  plot(table, args.doc + ".png")
  study_files.write_text(args.doc + ".md", text)
  print(text)
  print(f"Written: {args.doc}.md, {args.doc}.png")


if __name__ == "__main__":
  main(sys.argv[1:])

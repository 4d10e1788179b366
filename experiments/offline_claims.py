r"""The four small-scale offline claims (Lp, DR3, targets, activation), offline on the quickstart's MinAtar data.

  python experiments/offline_claims.py                      # all claims, 3 seeds
  python experiments/offline_claims.py --claims lp dr3 --seeds 0 1

Each variant trains offline DQN through the same Runner and gin files as train.py, on
the quickstart's MinAtar Breakout dataset (logged by the project on first use), with
fixed seeds; then the script compares the final diagnostics (mean of the last
`--final_iterations` iterations of each run) between variants:

  lp    with the IUP Lp penalty srank ends higher than without      (IUP Section 5)
  dr3   with DR3 the feature dot product phi(s)^T phi(s') ends lower (DR3)
  mc    Monte-Carlo regression keeps srank higher than SARSA and FQE (IUP Fig. 4d)
  tanh  a tanh torso keeps srank higher than relu                    (Gulcehre et al.)

Each variant is a study (`batch_rl.study`: its TOML is written to
--out/<variant>/study.toml) whose runs are its seeds, launched through the study
launcher on --executor (local: --max_parallel runs at a time; slurm or ray: submitted
and waited for). FQE evaluates the greedy policy of the same seed's DQN run (its last
checkpoint), so the dqn study runs first. Runs live in --out/<variant>/seed_<k>;
rerunning resumes interrupted runs and skips finished ones. Writes a figure (curves, mean and min-max over seeds) and a
markdown table with per-seed outcomes. This is an experiment, not a test: it takes
~10-30 minutes on 2 CPU cores; its table is docs/offline_claims.md.
"""
import argparse
import json
import logging
import os
import sys
import time

import numpy as np

from batch_rl import summary_writer
from batch_rl.study import launch as study_launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bindings on top of gin_configs/quickstart.gin, per variant.
VARIANTS = {
    "dqn": [],
    "lp": ["DQNAgent.regularizers = [@LpRegularizer()]",
           "LpRegularizer.coefficient = {lp_coefficient}"],
    "dr3": ["DQNAgent.regularizers = [@DR3Regularizer()]",
            "DR3Regularizer.coefficient = {dr3_coefficient}",
            "DR3Regularizer.variant = 'paper'"],
    "sarsa": ["DQNAgent.backup = 'sarsa'"],
    "fqe": ["DQNAgent.backup = 'fqe'",
            "DQNAgent.evaluation_policy = @CheckpointPolicy",
            "CheckpointPolicy.checkpoint_dir = '{policy_run}'"],
    "mc": ["DQNAgent.backup = 'monte_carlo'"],
    "tanh": ["MinAtarDQNNetwork.activation = 'tanh'"],
}

# claim: (metric, variant, baselines, direction), direction +1: variant ends higher.
CLAIMS = {
    "lp": ("Rank/srank", "lp", ("dqn",), +1),
    "dr3": ("Features/dot_next", "dr3", ("dqn",), -1),
    "mc": ("Rank/srank", "mc", ("sarsa", "fqe"), +1),
    "tanh": ("Rank/srank", "tanh", ("dqn",), +1),
}
CLAIM_TEXT = {
    "lp": "with the Lp penalty srank ends higher than without",
    "dr3": "with DR3 the mean feature dot product ends lower than without",
    "mc": "Monte-Carlo regression keeps srank higher than SARSA and FQE",
    "tanh": "a tanh torso keeps srank higher than relu",
}


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--claims", nargs="+", choices=sorted(CLAIMS), default=sorted(CLAIMS))
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--iterations", type=int, default=12)
  parser.add_argument("--steps", type=int, default=2500, help="gradient steps per iteration")
  parser.add_argument("--eval_steps", type=int, default=2000)
  parser.add_argument("--data_fraction", type=float, default=0.2,
                      help="of the 50K-transition dataset (smaller = more steps per datum)")
  parser.add_argument("--lp_coefficient", type=float, default=0.001)
  parser.add_argument("--dr3_coefficient", type=float, default=0.1)
  parser.add_argument("--final_iterations", type=int, default=3)
  parser.add_argument("--out", default=os.path.join(REPO, "runs", "claims"))
  parser.add_argument("--executor", choices=("local", "slurm", "ray"), default="local")
  parser.add_argument("--max_parallel", type=int, default=1,
                      help="local executor: runs at a time")
  parser.add_argument("--figure", default=os.path.join(REPO, "docs", "offline_claims.png"))
  parser.add_argument("--table", default=os.path.join(REPO, "docs", "offline_claims.md"))
  args = parser.parse_args(argv)
  if "fqe" in variants_needed(args.claims) and len(set(args.seeds)) < 2:
    # FQE's study labels each seed's setting (its own DQN policy); a lone label would
    # not name a run directory.
    parser.error("the mc claim (FQE) needs at least two --seeds.")
  return args


def variants_needed(claims):
  needed = []
  for claim in claims:
    _, variant, baselines, _ = CLAIMS[claim]
    for name in baselines + (variant,):
      if name == "fqe" and "dqn" not in needed:
        needed.append("dqn")  # FQE evaluates the DQN run's policy
      if name not in needed:
        needed.append(name)
  order = list(VARIANTS)
  return sorted(needed, key=order.index)


def run_dir(args, variant, seed):
  return os.path.join(args.out, variant, f"seed_{seed}")


def study_text(args, variant) -> str:
  """The TOML study of one variant: its seeds, on the quickstart data and settings."""
  fields = {"lp_coefficient": args.lp_coefficient, "dr3_coefficient": args.dr3_coefficient,
            "policy_run": run_dir(args, "dqn", "{seed}")}
  bindings = [b.format(**fields) for b in VARIANTS[variant]] + [
      f"FixedReplayRunner.num_iterations = {args.iterations}",
      f"FixedReplayRunner.training_steps = {args.steps}",
      f"FixedReplayRunner.evaluation_steps = {args.eval_steps}",
      f"load_fixed_replay.data_fraction = {args.data_fraction}",
  ]
  lines = [f'name = "offline_claims_{variant}"', 'gin_files = ["gin_configs/quickstart.gin"]',
           f"bindings = {json.dumps([b for b in bindings if '{seed}' not in b])}"]
  per_seed = [b for b in bindings if "{seed}" in b]
  if per_seed:  # FQE: each seed evaluates its own DQN run, so seeds are labelled settings
    lines.append("[axes.seed]")
    for seed in args.seeds:
      seed_bindings = [b.replace("{seed}", str(seed)) for b in per_seed]
      seed_bindings.append(f"FixedReplayRunner.seed = {seed}")
      lines.append(f'seed_{seed} = {{ bindings = {json.dumps(seed_bindings)} }}')
  else:
    lines += ["[seeds]", 'binding = "FixedReplayRunner.seed"', f"values = {list(args.seeds)}"]
  return "\n".join(lines) + "\n"


def train(args, variant):
  """Launches (or resumes) the variant's study and waits for its runs."""
  study_dir = os.path.join(args.out, variant)
  os.makedirs(study_dir, exist_ok=True)
  study_file = os.path.join(study_dir, "study.toml")
  with open(study_file + ".tmp", "w") as f:
    f.write(study_text(args, variant))
  os.replace(study_file + ".tmp", study_file)
  options = ({"max_parallel": args.max_parallel} if args.executor == "local" else
             {"wait": True})
  result = study_launch.launch(study_file, study_dir, args.executor, **options)
  failed = {k: v for k, v in result.summary.items() if k != "done"}
  if failed:
    raise SystemExit(f"{variant}: runs ended {failed}; see "
                     f"`python -m batch_rl.study status {study_dir}`.")


def final_value(scalars, tag, count):
  steps = sorted(scalars[tag])
  return float(np.mean([scalars[tag][s][-1] for s in steps[-count:]]))


def curves(scalars, tag):
  steps = sorted(scalars[tag])
  return np.array(steps), np.array([scalars[tag][s][-1] for s in steps])


def summarise(args, variants):
  logs = {v: {s: summary_writer.read_scalars(run_dir(args, v, s)) for s in args.seeds}
          for v in variants}
  lines = [
      f"Offline DQN on the quickstart's MinAtar Breakout data (data_fraction "
      f"{args.data_fraction}), {args.iterations} iterations x {args.steps} gradient steps, "
      f"seeds {args.seeds}; final = mean of the last {args.final_iterations} iterations "
      "of each run. Produced by `python experiments/offline_claims.py "
      + " ".join(sys.argv[1:]) + "`.", "",
      "| claim | metric | variant: final per seed (mean) | baseline: final per seed (mean) "
      "| seeds where it holds | holds on the mean |",
      "| --- | --- | --- | --- | --- | --- |"]
  for claim in args.claims:
    tag, variant, baselines, direction = CLAIMS[claim]
    ours = [final_value(logs[variant][s], tag, args.final_iterations) for s in args.seeds]
    for base in baselines:
      theirs = [final_value(logs[base][s], tag, args.final_iterations) for s in args.seeds]
      wins = sum(direction * (a - b) > 0 for a, b in zip(ours, theirs))
      fmt = lambda xs: ", ".join(f"{x:.3g}" for x in xs) + f" ({np.mean(xs):.3g})"
      holds = direction * (np.mean(ours) - np.mean(theirs)) > 0
      lines.append(f"| {CLAIM_TEXT[claim]} | {tag} | {variant}: {fmt(ours)} | {base}: "
                   f"{fmt(theirs)} | {wins}/{len(args.seeds)} | {'yes' if holds else 'NO'} |")
  lines.append("")
  lines.append("Final evaluation return (mean over seeds): " + ", ".join(
      f"{v} {np.mean([final_value(logs[v][s], 'Eval/AverageReturn', args.final_iterations) for s in args.seeds]):.2f}"
      for v in variants if args.eval_steps > 0))
  return logs, "\n".join(lines) + "\n"


def plot(args, logs):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(args.claims), figsize=(4.2 * len(args.claims), 3.3),
                           squeeze=False)
  for ax, claim in zip(axes[0], args.claims):
    tag, variant, baselines, _ = CLAIMS[claim]
    for name in baselines + (variant,):
      runs = [curves(logs[name][s], tag) for s in args.seeds]
      steps = runs[0][0]
      values = np.stack([r[1] for r in runs])
      line, = ax.plot(steps, values.mean(axis=0), label=name)
      ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.2,
                      color=line.get_color())
    ax.set_title(CLAIM_TEXT[claim], fontsize=8)
    ax.set_xlabel(f"iteration ({args.steps} steps)")
    ax.set_ylabel(tag)
    ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(args.figure)), exist_ok=True)
  fig.savefig(args.figure + ".tmp.png", dpi=110)
  os.replace(args.figure + ".tmp.png", args.figure)


def main(argv):
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  variants = variants_needed(args.claims)
  start = time.perf_counter()
  for i, variant in enumerate(variants):
    t0 = time.perf_counter()
    train(args, variant)
    elapsed = time.perf_counter() - start
    eta = elapsed / (i + 1) * (len(variants) - i - 1)
    print(f"[{i + 1}/{len(variants)}] {variant} ({len(args.seeds)} seeds): "
          f"{time.perf_counter() - t0:.0f} s (elapsed {elapsed / 60:.1f} min, ETA "
          f"{eta / 60:.1f} min)", flush=True)
  logs, table = summarise(args, variants)
  plot(args, logs)
  with open(args.table + ".tmp", "w") as f:
    f.write(table)
  os.replace(args.table + ".tmp", args.table)
  print(table)
  print(f"Figure: {args.figure}\nTable: {args.table}")


if __name__ == "__main__":
  main(sys.argv[1:])

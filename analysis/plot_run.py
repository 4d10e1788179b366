r"""Plots one run's curves (return, srank, singular values, loss) per iteration.

  python -m analysis.plot_run --logdir runs/quickstart --out docs/quickstart.png

The full analysis library (sweeps, seeds, the papers' figures) is analysis/'s own
issue; this draws a single run for a first look.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

PANELS = (
    ("Eval/AverageReturn", "evaluation return"),
    ("Rank/srank", "srank (delta = 0.01)"),
    ("Rank/sigma_max", "sigma_max and sigma_min of Phi"),
    ("Train/Loss", "TD loss (Huber)"),
)


def plot(scalars, title: str, out: str) -> None:
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
  for ax, (tag, label) in zip(axes, PANELS):
    for name in ((tag, "Rank/sigma_min") if tag == "Rank/sigma_max" else (tag,)):
      series = scalars.get(name, {})
      steps = sorted(series)
      ax.plot([s + 1 for s in steps], [series[s][-1] for s in steps], marker="o", ms=3,
              label=name.split("/")[1])
    if tag == "Rank/sigma_max":
      ax.set_yscale("log")
      ax.legend(fontsize=8)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
  fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=110)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--logdir", required=True, help="a run's base_dir")
  parser.add_argument("--out", required=True, help="PNG file to write")
  parser.add_argument("--title", default=None)
  args = parser.parse_args(argv)
  from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
  scalars = summary_writer.read_scalars(args.logdir)
  missing = [tag for tag, _ in PANELS if tag not in scalars]
  if len(missing) == len(PANELS):
    print(f"error: no batch_rl scalars in {args.logdir} (expected tags "
          f"{[t for t, _ in PANELS]}); is it a run's --base_dir?", file=sys.stderr)
    return 1
  if missing:
    print(f"warning: {args.logdir} lacks {missing}; those panels are empty.", file=sys.stderr)
  plot(scalars, args.title or args.logdir, args.out)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

r"""The empirical study's bsuite experiments (Gulcehre et al. 2022, Sections 4-7 and
Appendix A.12-A.14) as committed studies, and their report.

  python experiments/bsuite_lab.py                 # launch what is not done, then report
  python experiments/bsuite_lab.py --no_launch     # report on what is there

Launches, through the study launcher (local executor by default; --executor slurm or
ray on a cluster), studies/bsuite_activations.toml, bsuite_depth.toml,
bsuite_bottleneck.toml and bsuite_hessian.toml into <out>/<name>/ (each run trains its 5
seeds vmapped in one program and writes seed_<k>/ run directories), computes the
Hessian spectra of the Hessian study's runs (`python -m batch_rl.runners.hessian_spectrum`),
then writes docs/bsuite_lab.md and its figures: each claim with its per-seed quantity,
the mean and its 95% t-interval over seeds, and the verdict (reproduced, not
reproduced, reversed), fixed here before any run was made:

1. Activations (Figure 9): final penultimate srank, ELU minus ReLU and tanh minus ReLU,
   per game; reproduced if the interval is above 0.
2. Depth (Figure 23): (a) ranks fall layer by layer: per seed, Spearman's rho between a
   layer's index and its final srank (depth 4 and 8), reproduced if below 0; (b) the
   penultimate rank ends small: final srank below 10% of the layer's 64 units
   (reproduced if the interval's top is below 6.4); (c) deeper ReLU nets do worse:
   final score of depth 4 and 8 minus depth 2, reproduced if below 0.
3. Bottleneck and learning rate (Figures 35, 36): (a) fewer bottleneck units lower the
   return: score with 2 units minus 64, below 0; (b) the task is solved at low rank: a
   seed with final score >= 0.9 and final penultimate srank <= 8 exists; (c) larger
   learning rates give lower ranks: final srank at 3e-3 minus 3e-4 (64 and 16 units),
   below 0. On catch only (the machine's time).
4. Sparsity and Hessian (Figures 37, 24, 25): (a) final penultimate sparsity ReLU
   minus ELU, above 0; (b) the fraction of the TD loss's Hessian eigenvalues near zero,
   ReLU minus ELU, above 0, and ReLU's above one half ("most"), at the last
   checkpoint, on the dataset's first 5,000 transitions (the paper: the whole dataset).
5. Phases (Section 4.1): analysis.phases' rule on every activation run's srank curve:
   how many reach Phase 2 and Phase 3.
6. The broad sweep: Spearman's rho between final srank and final score across every
   run of every study (a bootstrap interval over runs), next to the narrow sweep of
   the bottleneck study on catch at 3e-4; reproduced if the narrow rho's interval is
   above 0 while the broad one's contains 0.

Scores are bsuite's (Eval/Score, in [0, 1]); "final" is the mean of the last 3 iterations.
The studies run 100K gradient steps, a tenth of the paper's 1e6; the report says so.
"""
import argparse
import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy import stats  # pylint: disable=g-import-not-at-top

from analysis import figures  # pylint: disable=g-import-not-at-top
from analysis import phases as phases_lib  # pylint: disable=g-import-not-at-top
from analysis import seed_statistics as ss  # pylint: disable=g-import-not-at-top
from analysis import study_runs  # pylint: disable=g-import-not-at-top
from batch_rl import checkpointing  # pylint: disable=g-import-not-at-top
from batch_rl import hessian  # pylint: disable=g-import-not-at-top
from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
from batch_rl.runners import hessian_spectrum  # pylint: disable=g-import-not-at-top
from batch_rl.study import files as study_files  # pylint: disable=g-import-not-at-top

STUDIES = (("activations", "studies/bsuite_activations.toml"),
           ("depth", "studies/bsuite_depth.toml"),
           ("bottleneck", "studies/bsuite_bottleneck.toml"),
           ("hessian", "studies/bsuite_hessian.toml"))
GAMES = ("catch", "cartpole", "mountain_car")
SRANK, SCORE, RETURN = "Rank/srank", "Eval/Score", "Eval/AverageReturn"
LAST = 3
SMALL_FRACTION = 0.1   # claim 2b: "small" = below 10% of the layer's width
WIDTH = 64
SOLVED, LOW_RANK = 0.9, 8   # claim 3b
BOOTSTRAP = 2000


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default=os.path.join(REPO, "runs", "bsuite_lab"))
  p.add_argument("--docs", default=os.path.join(REPO, "docs"))
  p.add_argument("--no_launch", action="store_true", help="report only")
  p.add_argument("--executor", default="local")
  p.add_argument("--max_parallel", type=int, default=1)
  p.add_argument("--retry_failed", action="store_true", help="launch failed runs again")
  p.add_argument("--studies", default=",".join(n for n, _ in STUDIES),
                 help="comma-separated subset of the studies to launch")
  p.add_argument("--hessian_transitions", type=int, default=5000,
                 help="transitions of the Hessian's dataset (the first N; the whole "
                 "100K-transition dataset takes about 12 minutes per seed here)")
  return p.parse_args(argv)


# --- launching ----------------------------------------------------------------------

def launch(args):
  from batch_rl.study import launch as study_launch  # pylint: disable=g-import-not-at-top
  wanted = args.studies.split(",")
  study_launch.launch_in_order(
      [(name, os.path.join(REPO, path), os.path.join(args.out, name))
       for name, path in STUDIES if name in wanted],
      args.executor, args.max_parallel, retry_failed=args.retry_failed)
  if "hessian" in wanted:
    hessian_spectra(args)


def hessian_spectra(args):
  """The Hessian spectrum at the last checkpoint of every seed of the Hessian study, on
  the dataset's first --hessian_transitions transitions (skipped where it is already
  there)."""
  for seed_dir in sorted(glob.glob(os.path.join(args.out, "hessian", "*", "seed_*"))):
    iterations = checkpointing.list_iterations(os.path.join(seed_dir, "checkpoints"))
    if not iterations or os.path.exists(hessian_spectrum.npz_path(
        os.path.join(seed_dir, hessian_spectrum.OUT_DIR), iterations[-1])):
      continue
    command = [sys.executable, "-m", "batch_rl.runners.hessian_spectrum",
               f"--run_dir={seed_dir}", f"--iterations={iterations[-1]}"]
    if args.hessian_transitions:
      command.append(f"--max_transitions={args.hessian_transitions}")
    print("Hessian:", seed_dir, iterations[-1], flush=True)
    subprocess.run(command, check=True, cwd=REPO)


# --- reading runs ---------------------------------------------------------------------

def read_curves(run_dir) -> dict:
  """{tag: values by iteration}, the last value logged at each iteration."""
  out = {}
  for tag, by_step in summary_writer.read_scalars(run_dir).items():
    steps = sorted(by_step)
    out[tag] = np.array([by_step[s][-1] for s in steps], np.float64)
  return out


def study_runs(out, study) -> dict:
  """{run name: [curves of seed_0, seed_1, ...]} of the study's finished runs (every
  seed at the study's number of iterations)."""
  spec = study_files.read_json(os.path.join(out, study, "study.json")) or {}
  runs = {}
  for entry in spec.get("runs", []):
    name = entry["name"]
    seed_dirs = sorted(glob.glob(os.path.join(entry["run_dir"], "seed_*")),
                       key=lambda d: int(d.rsplit("_", 1)[1]))
    curves = [read_curves(d) for d in seed_dirs if summary_writer.event_files(d)]
    iterations = num_iterations(entry)
    if curves and all(len(c.get(SRANK, ())) >= iterations for c in curves):
      runs[name] = curves
  return runs


def num_iterations(entry) -> int:
  found = [b for b in entry.get("bindings", [])
           if b.replace(" ", "").startswith("FixedReplayRunner.num_iterations=")]
  return int(found[-1].split("=")[1]) if found else 1


def final(curve) -> float:
  return ss.final(curve, LAST)


def per_seed(runs, name, fn) -> np.ndarray:
  return np.array([fn(c) for c in runs[name]], np.float64)


claim_row = study_runs.claim_row


def paired(runs, a, b, fn, label, direction):
  """Claim on fn(run a) - fn(run b), seed by seed; None if either is missing."""
  if a not in runs or b not in runs:
    return {"claim": label, "missing": [n for n in (a, b) if n not in runs]}
  return claim_row(label, per_seed(runs, a, fn) - per_seed(runs, b, fn), direction)


# --- the claims -------------------------------------------------------------------------

def activation_claims(runs):
  rows = []
  for game in GAMES:
    for other in ("elu", "tanh"):
      rows.append(paired(runs, f"{game}/{other}", f"{game}/relu",
                         lambda c: final(c[SRANK]),
                         f"1. {game}: final srank, {other} - relu", +1))
  return rows


def layer_tags(curves) -> list:
  layers = sorted((t for t in curves if t.startswith("Rank/srank/Dense_")),
                  key=lambda t: int(t.rsplit("_", 1)[1]))
  return layers


def layer_spearman(curves) -> float:
  tags = layer_tags(curves)
  finals = [final(curves[t]) for t in tags]
  return float(stats.spearmanr(np.arange(len(finals)), finals)[0])


def depth_claims(runs):
  rows = []
  for game in GAMES:
    for depth in (4, 8):
      name = f"{game}/depth{depth}"
      if name in runs:
        rows.append(claim_row(f"2a. {game}, depth {depth}: Spearman(layer, final srank)",
                              per_seed(runs, name, layer_spearman), -1))
    for depth in (2, 4, 8):
      name = f"{game}/depth{depth}"
      if name in runs:
        values = per_seed(runs, name, lambda c: final(c[SRANK]))
        row = claim_row(f"2b. {game}, depth {depth}: final penultimate srank "
                        f"(small: < {SMALL_FRACTION * WIDTH:g})", values, -1)
        row["verdict"] = (ss.REPRODUCED if row["mean"] + row["half"] < SMALL_FRACTION * WIDTH
                          else ss.NOT_REPRODUCED)
        rows.append(row)
    for depth in (4, 8):
      rows.append(paired(runs, f"{game}/depth{depth}", f"{game}/depth2",
                         lambda c: final(c[SCORE]),
                         f"2c. {game}: final score, depth {depth} - depth 2", -1))
  return rows


def bottleneck_claims(runs):
  rows = []
  # The study runs catch only: its run names are b<units>/lr<rate>.
  rows.append(paired(runs, "b2/lr3e-4", "b64/lr3e-4", lambda c: final(c[SCORE]),
                     "3a. catch: final score, 2 - 64 bottleneck units", -1))
  solved_low = []
  for name, curves in runs.items():
    for k, c in enumerate(curves):
      if final(c[SCORE]) >= SOLVED and final(c[SRANK]) <= LOW_RANK:
        solved_low.append(f"{name}/seed_{k}")
  rows.append({"claim": f"3b. seeds with final score >= {SOLVED} at final srank <= "
                        f"{LOW_RANK}", "count": len(solved_low), "examples": solved_low[:4],
               "verdict": ss.REPRODUCED if solved_low else ss.NOT_REPRODUCED})
  for width in (64, 16):
    rows.append(paired(runs, f"b{width}/lr3e-3", f"b{width}/lr3e-4",
                       lambda c: final(c[SRANK]),
                       f"3c. catch, {width} units: final srank, lr 3e-3 - 3e-4", -1))
  return rows


def sparsity_claims(runs):
  rows = []
  for game in GAMES:
    rows.append(paired(runs, f"{game}/relu", f"{game}/elu",
                       lambda c: final(c["Features/sparsity/Dense_1"]),
                       f"4a. {game}: final penultimate sparsity, relu - elu", +1))
  return rows


def hessian_fractions(out) -> dict:
  """{activation: [fraction near zero at the last checkpoint, per seed]}."""
  found = {}
  for seed_dir in sorted(glob.glob(os.path.join(out, "hessian", "*", "seed_*"))):
    files = sorted(glob.glob(os.path.join(seed_dir, "hessian", "hessian_*.npz")),
                   key=lambda f: int(os.path.basename(f)[8:-4]))
    if files:
      with np.load(files[-1]) as z:
        fraction = hessian.spectrum_summary(z["eigenvalues"], float(z["tol"]))[
            "fraction_near_zero"]
      found.setdefault(os.path.basename(os.path.dirname(seed_dir)), []).append(fraction)
  return found


def hessian_claims(fractions):
  if not {"relu", "elu"} <= set(fractions) or len(fractions["relu"]) != len(fractions["elu"]):
    return [{"claim": "4b. Hessian eigenvalues near zero, relu - elu",
             "missing": sorted({"relu", "elu"} - set(fractions)) or ["seeds"]}]
  relu, elu = np.array(fractions["relu"]), np.array(fractions["elu"])
  rows = [claim_row("4b. catch, 1 x 64: Hessian eigenvalues near zero, relu - elu",
                    relu - elu, +1)]
  row = claim_row("4b. catch, 1 x 64: relu's fraction near zero - 0.5", relu - 0.5, +1)
  rows.append(row)
  return rows


def phase_rows(runs):
  rows = []
  for name, curves in sorted(runs.items()):
    found = [phases_lib.find_phases(np.arange(len(c[SRANK])), c[SRANK]) for c in curves]
    rows.append((name, sum(f.phase2_start is not None for f in found),
                 sum(f.phase3_start is not None for f in found), len(found)))
  return rows


def bootstrap_spearman(x, y, seed=0):
  x, y = np.asarray(x), np.asarray(y)
  rho = float(stats.spearmanr(x, y)[0])
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(BOOTSTRAP):
    k = rng.integers(0, len(x), len(x))
    if len(np.unique(x[k])) > 1 and len(np.unique(y[k])) > 1:
      draws.append(stats.spearmanr(x[k], y[k])[0])
  low, high = np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
  return rho, float(low), float(high), len(x)


def sweep_points(all_runs, keep=lambda study, name: True):
  points = []
  for study, runs in all_runs.items():
    for name, curves in runs.items():
      if keep(study, name):
        points += [(final(c[SRANK]), final(c[SCORE])) for c in curves if SCORE in c]
  return np.array(points).reshape(-1, 2)


def game_of(study, name) -> str:
  """The run's game: its first name component, or catch for the catch-only studies."""
  first = name.split("/")[0]
  return first if first in GAMES else "catch"


def sweep_claims(all_runs):
  broad = sweep_points(all_runs)
  narrow = sweep_points(all_runs, lambda s, n: s == "bottleneck" and n.endswith("/lr3e-4"))
  out = {}
  for label, pts in (("broad", broad), ("narrow", narrow)):
    out[label] = bootstrap_spearman(pts[:, 0], pts[:, 1]) if len(pts) > 2 else None
  # Added after the pooled figure was seen: pooled over games, the correlation mostly
  # compares games (catch: high rank, solved; cartpole: low rank, failed), so each
  # game's broad sweep is shown too. Not part of the verdict.
  for game in GAMES:
    pts = sweep_points(all_runs, lambda s, n, g=game: game_of(s, n) == g)
    if len(pts) > 2 and len(np.unique(pts[:, 0])) > 1 and len(np.unique(pts[:, 1])) > 1:
      out[f"broad, {game} only"] = bootstrap_spearman(pts[:, 0], pts[:, 1])
    elif len(pts):
      out[f"broad, {game} only"] = f"score {pts[0, 1]:.3g} in all {len(pts)} seed-runs"
  if out["broad"] and out["narrow"]:
    narrow_up = out["narrow"][1] > 0
    broad_zero = out["broad"][1] <= 0 <= out["broad"][2]
    out["verdict"] = ss.REPRODUCED if narrow_up and broad_zero else ss.NOT_REPRODUCED
  return out


# --- the report -------------------------------------------------------------------------

def format_row(row) -> str:
  if "missing" in row:
    return f"| {row['claim']} | - | - | not run yet ({', '.join(row['missing'])}) |"
  if "count" in row:
    return (f"| {row['claim']} | {row['count']} ({', '.join(row['examples'])}) | - | "
            f"{row['verdict']} |")
  seeds = ", ".join(f"{v:.3g}" for v in row["values"])
  return (f"| {row['claim']} | {seeds} | {ss.format_ci(row['mean'], row['half'])} | "
          f"{row['verdict']} |")


def settings_table(all_runs) -> list:
  lines = ["| study / run | seeds | final srank | final score | final return |",
           "| --- | --- | --- | --- | --- |"]
  for study, runs in all_runs.items():
    for name, curves in sorted(runs.items()):
      cells = []
      for tag in (SRANK, SCORE, RETURN):
        values = [final(c[tag]) for c in curves if tag in c]
        cells.append(ss.format_ci(*ss.mean_ci(values)) if values else "-")
      lines.append(f"| {study}/{name} | {len(curves)} | " + " | ".join(cells) + " |")
  return lines


def report(all_runs, fractions, wall) -> str:
  claims = (activation_claims(all_runs.get("activations", {}))
            + depth_claims(all_runs.get("depth", {}))
            + bottleneck_claims(all_runs.get("bottleneck", {}))
            + sparsity_claims(all_runs.get("activations", {}))
            + hessian_claims(fractions))
  sweep = sweep_claims(all_runs)
  lines = [
      "# The empirical study's bsuite lab",
      "",
      "Offline DQN on bsuite's catch, cartpole and mountain_car (Gulcehre et al. 2022,",
      "Sections 4-7, Appendix A.12-A.14), on datasets logged by an online DQN with",
      "random-action noise 0.1 (RL Unplugged's recipe, `batch_rl/datasets/bsuite_data.py`:",
      "100,000 transitions each). Every run trains 5 seeds vmapped in one program;",
      "**100K gradient steps, a tenth of the paper's 1e6**. Regenerate with",
      "`python experiments/bsuite_lab.py` (`--no_launch` to report only).",
      "",
      "## Claims",
      "",
      "Per-seed values, their mean with a 95% t-interval over seeds, and the verdict by",
      "the criterion the script fixes before any run (its docstring).",
      "",
      "| claim | per seed | mean ± 95% CI | verdict |",
      "| --- | --- | --- | --- |",
  ] + [format_row(r) for r in claims]
  lines += ["", "## 6. Rank and score across sweeps", ""]
  for label in ["narrow", "broad"] + [f"broad, {g} only" for g in GAMES]:
    found = sweep.get(label)
    if isinstance(found, str):
      lines.append(f"- {label} sweep: no correlation to compute ({found})")
    elif found:
      rho, low, high, n = found
      lines.append(f"- {label} sweep: Spearman rho(final srank, final score) = {rho:.3f} "
                   f"(95% bootstrap interval {low:.3f} to {high:.3f}, {n} seed-runs)")
  if "verdict" in sweep:
    lines.append(f"- verdict (narrow against the pooled broad sweep, as fixed before the "
                 f"runs): {sweep['verdict']} (the paper: the association holds in "
                 "restricted settings and disappears in the broad sweep)")
  lines.append("- the per-game rows were added after the pooled figure was seen: pooled "
               "over games, the correlation mostly compares games with each other.")
  lines += ["", "## 5. Phases of learning", "",
            "analysis.phases' rule on each seed's srank curve (activation study).", "",
            "| run | seeds in Phase 2 | seeds in Phase 3 | seeds |", "| --- | --- | --- | --- |"]
  lines += [f"| {n} | {p2} | {p3} | {k} |"
            for n, p2, p3, k in phase_rows(all_runs.get("activations", {}))]
  lines += ["", "## Runs", ""] + settings_table(all_runs)
  if wall:
    lines += ["", f"Wall time of the studies' runs on this machine: {wall}."]
  lines += ["", "![srank and score by activation, mean and spread over 5 seeds](bsuite_lab.png)",
            "", "![final srank per layer by depth; score against bottleneck width; rank against "
            "score over every seed-run]"
            "(bsuite_lab_depth_bottleneck.png)", ""]
  return "\n".join(lines) + "\n"


def plot(all_runs, path_dir) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  runs = all_runs.get("activations", {})
  fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), squeeze=False)
  for col, game in enumerate(GAMES):
    for act in ("relu", "elu", "tanh"):
      name = f"{game}/{act}"
      if name not in runs:
        continue
      for row, tag in enumerate((SRANK, SCORE)):
        curves = np.array([c[tag] for c in runs[name]])
        x = np.arange(curves.shape[1])
        mean, std = curves.mean(0), curves.std(0)
        axes[row][col].plot(x, mean, label=act)
        axes[row][col].fill_between(x, mean - std, mean + std, alpha=0.2)
    axes[0][col].set_title(game)
    axes[1][col].set_xlabel("iteration (5,000 gradient steps)")
  axes[0][0].set_ylabel("penultimate srank")
  axes[1][0].set_ylabel("bsuite score")
  axes[0][0].legend()
  figures.save(fig, path_dir, "bsuite_lab")
  plot_depth_and_bottleneck(all_runs, path_dir, plt)


def plot_depth_and_bottleneck(all_runs, path_dir, plt) -> None:
  """Final srank per layer of the depth study's nets, and the bottleneck study's final
  score and srank against the bottleneck's width."""
  depth, bottleneck = all_runs.get("depth", {}), all_runs.get("bottleneck", {})
  fig, axes = plt.subplots(1, 5, figsize=(20, 3.6), squeeze=False)
  for col, game in enumerate(GAMES):
    ax = axes[0][col]
    for d in (1, 2, 4, 8):
      name = f"{game}/depth{d}"
      if name not in depth:
        continue
      tags = layer_tags(depth[name][0])
      finals = np.array([[final(c[t]) for t in tags] for c in depth[name]])
      ax.errorbar(np.arange(1, len(tags) + 1), finals.mean(0), yerr=finals.std(0),
                  marker="o", label=f"{d} layers")
    ax.set_title(f"{game}: final srank per layer")
    ax.set_xlabel("hidden layer")
  axes[0][0].legend()
  ax = axes[0][3]
  for lr in ("3e-4", "3e-3"):
    widths = [w for w in (2, 4, 16, 64) if f"b{w}/lr{lr}" in bottleneck]
    if widths:
      scores = [np.mean([final(c[SCORE]) for c in bottleneck[f"b{w}/lr{lr}"]]) for w in widths]
      ax.plot(widths, scores, marker="o", label=f"score, lr {lr}")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("bottleneck units")
  ax.set_title("catch: final score")
  ax.legend()
  ax = axes[0][4]  # the broad sweep: every seed-run of every study
  for game in GAMES:
    pts = sweep_points(all_runs, lambda s, n, g=game: game_of(s, n) == g)
    if len(pts):
      ax.scatter(pts[:, 0], pts[:, 1], s=10, label=game)
  ax.set_xlabel("final penultimate srank")
  ax.set_ylabel("final score")
  ax.set_title("every run: rank against score")
  ax.legend()
  figures.save(fig, path_dir, "bsuite_lab_depth_bottleneck")


def main(argv):
  args = parse_args(argv)
  if not args.no_launch:
    launch(args)
  all_runs = {name: study_runs(args.out, name) for name, _ in STUDIES}
  all_runs = {k: v for k, v in all_runs.items() if v}
  text = report(all_runs, hessian_fractions(args.out), None)
  study_files.write_text(os.path.join(args.docs, "bsuite_lab.md"), text)
  plot(all_runs, args.docs)
  print(text)


if __name__ == "__main__":
  main(sys.argv[1:])

r"""Reproduces the IUP gridworld claims (a)-(g) and writes a figure and a table.

  .venv/bin/python experiments/gridworld_claims.py                      # full: K=500
  .venv/bin/python experiments/gridworld_claims.py --iterations=300 \
      --deep_linear_iterations=100                                        # reduced
  .venv/bin/python experiments/gridworld_claims.py --executor=slurm     # on a cluster

Claims (IUP, Kumar et al. 2021; section 9 of the gridworld spec):
  (a) offline: srank with T=200 ends below srank with T=10, and normalised return is worse;
  (b) supervised regression to Q* keeps srank above both;
  (c) the Lp penalty (0.001) prevents the T=200 collapse;
  (d) online: n=200 updates per env step ends with lower srank than n=10;
  (e) re-initialising the network every fitting iteration does not prevent the collapse;
  (f) oracle Q^pi targets do not collapse;
  (g) the deep linear network's srank (singular values and eigenvalues) falls.

The variants are the study studies/gridworld_claims.toml: a named axis `variant` whose
labels are the gridworld gin files (fqi_t10, fqi_t200, supervised, lp, reinit, oracle,
online_n10, online_n200, deep_linear), and one list of seeds bound to
`GridworldRunner.seeds`, so each variant is one train.py run of GridworldRunner that
trains every seed in one jit(vmap) program (same seeds, hence paired). The script's
settings are constants of that study: it reads the study file, rebinds in each label
`GridworldRunner.num_iterations` (--iterations; the deep linear label
--deep_linear_iterations, rounded down to a multiple of its `log_every` =
--deep_linear_iterations // --deep_linear_logs, which it binds too) and the lp label's
`LpRegularizer.method` (--lp_method), sets the seeds to range(--seeds), and writes the
result to --study_dir/study.toml. A generated copy rather than extra bindings on the
command line, because a study's settings are its file: the copy is what the study
directory's study.json records, what `python -m batch_rl.study status|launch` read,
and, with the default flags, its runs are those of studies/gridworld_claims.toml.

The copy is launched into --study_dir through the study launcher (batch_rl.study.launch)
on --executor: local runs --max_parallel runs at a time; slurm and ray submit them and
wait. The launcher skips finished runs and resumes interrupted ones, so rerunning the
script only trains what is missing. One local run at a time (the default) gives each run
every CPU, as the script's in-process runs had; with --max_parallel > 1 each run gets
fewer threads, and XLA's single-threaded matmuls can change the full-batch variants'
numbers in the last bits. --only excludes the other variants from the copy
([[exclude]] tables); the table and figure are built from every variant whose run in
--study_dir is done with exactly the settings of this call, launched now or by an
earlier call. A run directory that holds a run of other settings (another
--deep_linear_logs, say) is not overwritten: the script stops and names it; choose
another --study_dir. A change of --iterations alone resumes the runs with the new K
(training further, or, for a smaller K, reading the first K iterations of the longer
run: fitting iteration k does not depend on K).

Each run writes one TensorBoard event folder per seed (run_dir/seed_<k>/, step =
fitting iteration); the script reads the logged iterations below K of each seed into
[seeds, logs] float32 arrays, the dtype the runner logs. The "final" value of a run is
its mean over the last `--window` logged iterations; the table gives the mean over seeds
and a 95% t-interval, and each claim's paired difference with its 95% t-interval.
seeds/s is read from the runner's summary line in the log of the run's latest train.py
attempt that trained (seeds / the wall time of that attempt's fitting calls,
compilation included). Writes
gridworld_claims.png and .md into --out (docs/).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import sys
import time

# Before numpy / scipy / jax load OpenBLAS, and inherited by the local runs: jaxlib's
# LAPACK custom calls (the SVD of the srank diagnostics, Lp's SVD / eigh) run in scipy's
# OpenBLAS, whose worker threads compete with XLA's own on a small CPU
# (docs/gridworld.md, "Lp cost"). An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from analysis import seed_statistics  # pylint: disable=g-import-not-at-top
from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
from batch_rl.gridworld import env as env_lib
from batch_rl.study import files as study_files
from batch_rl.study import launch as study_launch
from batch_rl.study import run as run_lib
from batch_rl.study import spec
from batch_rl.study import status as study_status

try:
  import tomllib  # pylint: disable=g-import-not-at-top
except ImportError:  # Python 3.10
  import tomli as tomllib  # pylint: disable=g-import-not-at-top,import-error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_FILE = os.path.join(REPO, "studies", "gridworld_claims.toml")
AXIS = "variant"

SRANK = "Gridworld/srank_all_states"
RET = "Gridworld/NormalizedReturn"
QERR = "Gridworld/QError_mean"

# The study's labels, in table order, and the variants' names in the table and figure.
VARIANTS = (
    ("fqi_t10", "T=10"),
    ("fqi_t200", "T=200"),
    ("supervised", "supervised Q*"),
    ("lp", "T=200 + Lp"),
    ("reinit", "T=200 re-init"),
    ("oracle", "T=200 oracle Q^pi"),
    ("online_n10", "online n=10"),
    ("online_n200", "online n=200"),
    ("deep_linear", "deep linear"),
)
DEEP_LINEAR = "deep_linear"
LP = "lp"
_TRAINED = re.compile(r"Trained (\d+) seeds x \d+ fitting iterations in ([0-9.]+) s")
_T = re.compile(r"\bT=(\d+)")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclasses.dataclass
class Variant:
  """One variant's run as the report reads it.

  label: the study's label; name: its name in the table; iterations: K it was read to;
  gradient_steps: T (from the run's description); log_every: fitting iterations between
  two logged ones (from the logged steps).
  """
  label: str
  name: str
  iterations: int
  gradient_steps: int
  log_every: int

  @property
  def deep_linear(self) -> bool:  # it logs Rank/srank_eig
    return self.label == DEEP_LINEAR


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--iterations", type=int, default=500, help="K of the MLP variants")
  p.add_argument("--deep_linear_iterations", type=int, default=500)
  p.add_argument("--deep_linear_logs", type=int, default=10,
                 help="logged iterations of the deep linear run (each: SVD + eig of "
                      "a 1280x1280 matrix per seed)")
  p.add_argument("--window", type=int, default=50, help="final-value window (iterations)")
  p.add_argument("--out", default=os.path.join(REPO, "docs"),
                 help="directory of the table and figure")
  p.add_argument("--only", default="",
                 help="comma-separated variant names or study labels (debugging)")
  p.add_argument("--lp_method", default="gram", choices=("gram", "svd"),
                 help="LpRegularizer.method of 'T=200 + Lp' (same value and gradient; "
                      "'gram' is cheaper on CPU)")
  p.add_argument("--study_dir", default=os.path.join(REPO, "runs", "gridworld_claims"),
                 help="the study directory: the generated study.toml and the runs")
  p.add_argument("--cache_dir", dest="study_dir",
                 help="former name of --study_dir (the runs are what is reused)")
  p.add_argument("--executor", choices=sorted(study_launch.EXECUTORS), default="local")
  p.add_argument("--max_parallel", type=int, default=1,
                 help="local executor: runs at a time")
  args = p.parse_args(argv)
  names = {name: label for label, name in VARIANTS}
  labels = [label for label, _ in VARIANTS]
  only = [x.strip() for x in args.only.split(",") if x.strip()]
  unknown = [x for x in only if x not in names and x not in labels]
  if unknown:
    p.error(f"--only: unknown variants {unknown}; the variants are "
            f"{[name for _, name in VARIANTS]} (or their labels {labels}).")
  chosen = {names.get(x, x) for x in only}
  args.labels = [label for label in labels if not chosen or label in chosen]
  if min(args.seeds, args.iterations, args.deep_linear_iterations,
         args.deep_linear_logs, args.window) < 1:
    p.error("--seeds, --iterations, --deep_linear_iterations, --deep_linear_logs and "
            "--window must be >= 1.")
  return args


# ------------------------------------------------------------------ the study
def label_constants(args, label):
  """{gin parameter: value} that this call binds in `label`'s settings."""
  if label == DEEP_LINEAR:
    every = max(1, args.deep_linear_iterations // args.deep_linear_logs)
    return {"GridworldRunner.num_iterations": args.deep_linear_iterations // every * every,
            "GridworldRunner.log_every": every}
  out = {"GridworldRunner.num_iterations": args.iterations}
  if label == LP:
    out["LpRegularizer.method"] = args.lp_method
  return out


def _rebind(bindings, constants):
  """`bindings` with those of `constants`' parameters replaced, the others appended."""
  out, left = [], dict(constants)
  for binding in bindings:
    parameter = binding.split("=", 1)[0].strip()
    if parameter in left:
      binding = f"{parameter} = {spec.gin_literal(left.pop(parameter), parameter)}"
    out.append(binding)
  return out + [f"{k} = {spec.gin_literal(v, k)}" for k, v in left.items()]


def study_data(args, exclude=True):
  """The study of this call as TOML data: studies/gridworld_claims.toml with the
  settings of `args`; with `exclude`, the variants --only leaves out are excluded."""
  with open(STUDY_FILE, "rb") as f:
    data = tomllib.load(f)
  variants = data.get("axes", {}).get(AXIS)
  if not isinstance(variants, dict) or list(variants) != [l for l, _ in VARIANTS]:
    raise SystemExit(f"{STUDY_FILE}: its [axes.{AXIS}] labels "
                     f"{list(variants or [])} are not the script's "
                     f"{[l for l, _ in VARIANTS]}.")
  for label, setting in variants.items():
    setting["bindings"] = _rebind(setting.get("bindings", []),
                                  label_constants(args, label))
  data["seeds"] = {"binding": "GridworldRunner.seeds",
                   "values": [list(range(args.seeds))]}
  left_out = [{AXIS: label} for label, _ in VARIANTS if label not in args.labels]
  if exclude and left_out:
    data["exclude"] = data.get("exclude", []) + left_out
  return data


def _toml(value):
  """A TOML value (strings as JSON strings, which TOML reads alike)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float, str)):
    return json.dumps(value)
  if isinstance(value, list):
    return "[" + ", ".join(_toml(v) for v in value) + "]"
  if isinstance(value, dict):
    return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
  raise TypeError(f"no TOML form for {value!r}")


def _key(key):
  return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_text(data, header):
  """TOML text of a study's data (spec.py's keys), its axes in their order."""
  lines = [f"# {line}" for line in header] + [""]
  for key in ("name", "gin_files", "bindings"):
    if key in data:
      lines.append(f"{key} = {_toml(data[key])}")
  if data.get("axes"):
    lines.append("\n[axes]")
    for axis, values in data["axes"].items():
      if isinstance(values, dict):  # a named axis: one dotted key per label
        lines += [f"{_key(axis)}.{_key(k)} = {_toml(v)}" for k, v in values.items()]
      else:
        lines.append(f"{_key(axis)} = {_toml(values)}")
  for table in ("seeds", "names"):
    if table in data:
      lines.append(f"\n[{table}]")
      lines += [f"{_key(k)} = {_toml(v)}" for k, v in data[table].items()]
  for table in data.get("exclude", []):
    lines.append("\n[[exclude]]")
    lines += [f"{_key(k)} = {_toml(v)}" for k, v in table.items()]
  return "\n".join(lines) + "\n"


def launch(args, argv):
  """Writes this call's study to --study_dir/study.toml and launches it (finished runs
  are skipped); waits for its runs. Refuses, before writing anything, when a run
  directory holds a run of other settings."""
  path = os.path.join(args.study_dir, "study.toml")
  header = ["Written by experiments/gridworld_claims.py " + " ".join(argv),
            "from studies/gridworld_claims.toml: its settings are the script's flags."]
  text = toml_text(study_data(args), header)
  p = study_launch.plan(spec.parse(text, path), args.study_dir, allow_changes=True)
  refused = [n for n in p.changes.changed if p.actions[n] != study_launch.LAUNCH]
  if refused:
    raise SystemExit(
        f"--study_dir={args.study_dir} holds runs of other settings: {refused} (their "
        "study_run.json says how they were trained). Use another --study_dir, or move "
        "those run directories aside.")
  os.makedirs(args.study_dir, exist_ok=True)
  study_files.write_text(path, text)
  options = ({"max_parallel": args.max_parallel} if args.executor == "local" else
             {"wait": True})
  # Added runs (--only, --seeds) and runs that changed only in K are the expected
  # differences from an earlier call; other changes were refused above.
  result = study_launch.launch(path, args.study_dir, args.executor, allow_changes=True,
                               **options)
  failed = {k: v for k, v in result.summary.items() if k != run_lib.DONE}
  if failed:
    raise SystemExit(f"runs ended {failed}; see `python -m batch_rl.study status "
                     f"{args.study_dir}` and the runs' logs/.")


def finished_runs(args):
  """{label: Run} of the variants whose run in --study_dir is done with exactly the
  settings of this call."""
  study = spec.parse(toml_text(study_data(args, exclude=False), []),
                     os.path.join(args.study_dir, "study.toml"))
  out = {}
  for run in study.runs(args.study_dir):
    recorded = study_files.read_json(os.path.join(run.run_dir, run_lib.RUN_FILE)) or {}
    same = (tuple(recorded.get("gin_files", ())) == run.gin_files and
            tuple(recorded.get("bindings", ())) == run.bindings)
    state = study_status.run_status(run.name, run.run_dir, run.bindings,
                                    scalars=False).state
    if same and state == run_lib.DONE:
      out[dict(run.axes)[AXIS]] = run
  return out


# ------------------------------------------------------------------ reading the runs
def read_run(run, seeds, iterations):
  """{tag: [seeds, logs] float32} of the iterations below `iterations`, and the
  logged iterations' spacing."""
  per_seed = [summary_writer.read_scalars(os.path.join(run.run_dir, f"seed_{s}"))
              for s in seeds]
  steps = sorted(k for k in per_seed[0][SRANK] if k < iterations)
  metrics = {}
  for tag in per_seed[0]:
    if all(tag in sc and all(k in sc[tag] for k in steps) for sc in per_seed):
      metrics[tag] = np.array([[sc[tag][k][-1] for k in steps] for sc in per_seed],
                              np.float32)
  return metrics, steps[0] + 1


def seeds_per_s(run):
  """seeds / seconds of the runner's summary line ("Trained ...") in the log of the
  run's latest attempt that trained; NaN if none has one."""
  logs = glob.glob(os.path.join(run.run_dir, run_lib.LOG_DIR, "attempt_*.log"))
  for path in sorted(logs, key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]),
                     reverse=True):
    with open(path, encoding="utf-8", errors="replace") as f:
      found = _TRAINED.findall(f.read())
    if found:
      seeds, seconds = found[-1]
      return int(seeds) / max(float(seconds), 1e-9)
  return float("nan")


def gradient_steps(run, seed):
  """T, from the run's description (online runs: updates per env step x env steps)."""
  text = summary_writer.read_texts(os.path.join(run.run_dir, f"seed_{seed}"))
  found = _T.search(text.get("Config/data", ""))
  return int(found.group(1)) if found else ""


def ci95(x):
  return seed_statistics.mean_ci(x)


def final(metrics, key, window_logs):
  return np.mean(metrics[key][:, -window_logs:], axis=1)  # [seeds]


def first(metrics, key):
  return metrics[key][:, 0]


def main(argv=None):
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parse_args(argv)
  start = time.perf_counter()
  launch(args, argv)
  launched = time.perf_counter() - start
  seeds = list(range(args.seeds))
  runs = finished_runs(args)
  variants, results, timings = [], {}, {}
  for label, name in VARIANTS:
    run = runs.get(label)
    if run is None:
      continue
    iterations = label_constants(args, label)["GridworldRunner.num_iterations"]
    metrics, log_every = read_run(run, seeds, iterations)
    if metrics[SRANK].shape[1] != iterations // log_every:
      raise SystemExit(f"{run.run_dir}: {metrics[SRANK].shape[1]} logged iterations "
                       f"below {iterations}, expected {iterations // log_every}.")
    v = Variant(label, name, iterations, gradient_steps(run, seeds[0]), log_every)
    variants.append(v)
    results[name], timings[name] = metrics, {"seeds_per_s": seeds_per_s(run)}
    print(f"{name:20s} K={iterations} T={v.gradient_steps}: {run.name}, "
          f"{timings[name]['seeds_per_s']:.3f} seeds/s | final srank "
          f"{final(metrics, SRANK, max(1, args.window // log_every)).mean():.1f}",
          flush=True)
  report(args, env_lib.GridworldEnv(), variants, results, timings)
  print(f"Launch {launched:.0f} s, total {time.perf_counter() - start:.0f} s; runs in "
        f"{args.study_dir}.", flush=True)


def report(args, env, variants, results, timings):
  """Table (with the claims computable from `results`) and figure."""
  def win(name):
    return max(1, args.window // next(v for v in variants if v.name == name).log_every)

  def fin(name, key=SRANK):
    return final(results[name], key, win(name))

  rows = []
  for v in variants:
    r = results[v.name]
    row = {"variant": v.name, "K": v.iterations, "T": v.gradient_steps,
           "srank first": ci95(first(r, SRANK)), "srank final": ci95(fin(v.name)),
           "norm. return final": ci95(fin(v.name, RET)),
           "mean |Q-Q*| final": ci95(fin(v.name, QERR)),
           "seeds/s": timings[v.name]["seeds_per_s"]}
    if v.deep_linear:
      row["srank_eig first"] = ci95(first(r, "Rank/srank_eig"))
      row["srank_eig final"] = ci95(fin(v.name, "Rank/srank_eig"))
    rows.append(row)

  claims = []

  def claim(label, text, diff, ok_sign):
    """diff: paired per-seed differences; ok_sign: +1 if the claim says diff > 0."""
    m, h = ci95(diff)
    claims.append((label, text, m, h, seed_statistics.verdict(m, h, ok_sign)))

  have = set(results)
  if {"T=10", "T=200"} <= have:
    claim("(a)", "srank(T=10) - srank(T=200) > 0", fin("T=10") - fin("T=200"), +1)
    claim("(a)", "return(T=10) - return(T=200) > 0",
          fin("T=10", RET) - fin("T=200", RET), +1)
  if {"T=10", "T=200", "supervised Q*"} <= have:
    claim("(b)", "srank(supervised) - srank(T=10) > 0",
          fin("supervised Q*") - fin("T=10"), +1)
    claim("(b)", "srank(supervised) - srank(T=200) > 0",
          fin("supervised Q*") - fin("T=200"), +1)
  if {"T=200", "T=200 + Lp"} <= have:
    claim("(c)", "srank(T=200 + Lp) - srank(T=200) > 0",
          fin("T=200 + Lp") - fin("T=200"), +1)
    claim("(c)", "srank(T=200 + Lp) final - first >= 0 (no collapse)",
          fin("T=200 + Lp") - first(results["T=200 + Lp"], SRANK), +1)
  else:
    claims.append(("(c)", "srank(T=200 + Lp) - srank(T=200) > 0", float("nan"),
                   float("nan"), "NOT MEASURED in this run (no 'T=200 + Lp' result)"))
  if {"online n=10", "online n=200"} <= have:
    claim("(d)", "srank(online n=10) - srank(online n=200) > 0",
          fin("online n=10") - fin("online n=200"), +1)
  if "T=200 re-init" in have:
    claim("(e)", "srank(re-init) first - final > 0 (collapse persists)",
          first(results["T=200 re-init"], SRANK) - fin("T=200 re-init"), +1)
  if "T=200 oracle Q^pi" in have:
    claim("(f)", "srank(oracle) final - first >= 0 (no collapse)",
          fin("T=200 oracle Q^pi") - first(results["T=200 oracle Q^pi"], SRANK), +1)
    if "T=200" in have:
      claim("(f)", "srank(oracle) - srank(T=200) > 0",
            fin("T=200 oracle Q^pi") - fin("T=200"), +1)
  if "deep linear" in have:
    r = results["deep linear"]
    claim("(g)", "deep linear srank first - final > 0", first(r, SRANK) - fin("deep linear"),
          +1)
    claim("(g)", "deep linear srank_eig first - final > 0",
          first(r, "Rank/srank_eig") - fin("deep linear", "Rank/srank_eig"), +1)

  os.makedirs(args.out, exist_ok=True)
  write_table(os.path.join(args.out, "gridworld_claims.md"), rows, claims, args, env)
  plot(os.path.join(args.out, "gridworld_claims.png"), variants, results, args)
  for c in claims:
    print(f"{c[0]} {c[1]}: {c[2]:+.2f} +- {c[3]:.2f} -> {c[4]}", flush=True)


def _fmt(x):
  if isinstance(x, tuple):
    return f"{x[0]:.2f} ± {x[1]:.2f}"
  if isinstance(x, float):
    return f"{x:.3g}"
  return str(x)


def write_table(path, rows, claims, args, env):
  cols = ["variant", "K", "T", "srank first", "srank final", "norm. return final",
          "mean |Q-Q*| final", "srank_eig first", "srank_eig final", "seeds/s"]
  lines = [
      "# Gridworld claims (IUP): measured",
      "",
      f"Written by `experiments/gridworld_claims.py --seeds={args.seeds} "
      f"--iterations={args.iterations} --deep_linear_iterations="
      f"{args.deep_linear_iterations} --deep_linear_logs={args.deep_linear_logs} "
      f"--window={args.window}`. {env.describe()}.",
      f"Mean over {args.seeds} seeds ± 95% t-interval half-width. srank = srank_0.01 of "
      "the penultimate features of all 256 states (deep linear: Phi of the 1280 pairs); "
      f"'final' = mean over the last {args.window} iterations; 'first' = after iteration "
      "0 (deep linear: first logged iteration). seeds/s = seeds / wall time of the run's "
      "fitting calls in its latest train.py attempt (compilation included), "
      f"--executor={args.executor}"
      + (f" --max_parallel={args.max_parallel}" if args.executor == "local" else "") +
      f", OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}. "
      "'T=200 + Lp': loss = TD + 0.001 (sigma_max^2 - sigma_min^2) of each 128 x 64 "
      "minibatch feature matrix (LpRegularizer, regularizers.lp_penalty, "
      f"method='{args.lp_method}').",
      "",
      "| " + " | ".join(cols) + " |",
      "|" + "---|" * len(cols),
  ]
  for r in rows:
    lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
  lines += ["", "| claim | paired difference over seeds | mean ± 95% CI | verdict |",
            "|---|---|---|---|"]
  for label, text, m, h, verdict in claims:
    value = "—" if np.isnan(m) else f"{m:+.2f} ± {h:.2f}"
    lines.append(f"| {label} | {text} | {value} | {verdict} |")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def plot(path, variants, results, args):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(2, 3, figsize=(16, 9))
  panels = [
      (axes[0, 0], ["T=10", "T=200", "supervised Q*", "T=200 + Lp"], SRANK, "offline srank (a-c)"),
      (axes[0, 1], ["T=10", "T=200", "supervised Q*", "T=200 + Lp"], RET,
       "offline normalised return"),
      (axes[0, 2], ["T=10", "T=200", "T=200 + Lp", "supervised Q*"], QERR, "mean |Q - Q*|"),
      (axes[1, 0], ["T=200", "T=200 re-init", "T=200 oracle Q^pi"], SRANK,
       "re-init (e), oracle (f)"),
      (axes[1, 1], ["online n=10", "online n=200"], SRANK, "online srank (d)"),
  ]
  by_name = {v.name: v for v in variants}
  # One colour per variant in every panel.
  color = {v.name: f"C{i % 10}" for i, v in enumerate(variants)}
  for ax, names, key, title in panels:
    drawn = 0
    for n in names:
      if n not in results:
        continue
      v = by_name[n]
      y = results[n][key]
      x = (np.arange(y.shape[1]) + 1) * v.log_every - 1
      m = y.mean(0)
      ax.plot(x, m, label=n, color=color[n])
      drawn += 1
      if y.shape[0] > 1:
        h = stats.t.ppf(0.975, y.shape[0] - 1) * y.std(0, ddof=1) / np.sqrt(y.shape[0])
        ax.fill_between(x, m - h, m + h, alpha=0.2, color=color[n])
    ax.set_title(title)
    ax.set_xlabel("fitting iteration")
    if not drawn:
      ax.text(0.5, 0.5, "not run with these settings", ha="center", va="center",
              transform=ax.transAxes)
      continue
    if key == QERR:
      ax.set_yscale("log")
    ax.legend(fontsize=8)
  ax = axes[1, 2]
  if "deep linear" in results:
    v = by_name["deep linear"]
    for key, lab in ((SRANK, "srank_delta (sigma)"), ("Rank/srank_eig", "srank_delta,lambda")):
      y = results["deep linear"][key]
      x = (np.arange(y.shape[1]) + 1) * v.log_every - 1
      ax.plot(x, y.mean(0), marker="o", label=lab)
    ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, "not run with these settings", ha="center", va="center",
            transform=ax.transAxes)
  ax.set_title("deep linear network, dim |S||A| (g)")
  ax.set_xlabel("fitting iteration")
  fig.suptitle(f"IUP gridworld claims, {args.seeds} seeds, mean ± 95% CI")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  main()

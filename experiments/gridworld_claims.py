r"""Reproduces the IUP gridworld claims (a)-(g) and writes a figure and a table.

  .venv/bin/python experiments/gridworld_claims.py                      # full: K=500
  .venv/bin/python experiments/gridworld_claims.py --iterations=300 \
      --deep_linear_iterations=100                                        # reduced

Claims (IUP, Kumar et al. 2021; section 9 of the gridworld spec):
  (a) offline: srank with T=200 ends below srank with T=10, and normalised return is worse;
  (b) supervised regression to Q* keeps srank above both;
  (c) the Lp penalty (0.001) prevents the T=200 collapse;
  (d) online: n=200 updates per env step ends with lower srank than n=10;
  (e) re-initialising the network every fitting iteration does not prevent the collapse;
  (f) oracle Q^pi targets do not collapse;
  (g) the deep linear network's srank (singular values and eigenvalues) falls.

Every variant is one jit(vmap) program over the seeds (same seeds, hence paired). The
"final" value of a run is its mean over the last `--window` logged iterations; the
table gives the mean over seeds and a 95% t-interval, and each claim's paired
difference with its 95% t-interval. Writes docs/gridworld_claims.png and .md.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import time

# Before numpy / scipy / jax load OpenBLAS: jaxlib's LAPACK custom calls (the SVD of the
# srank diagnostics, Lp's SVD / eigh) run in scipy's OpenBLAS, whose worker threads
# compete with XLA's own on a small CPU (docs/gridworld.md, "Lp cost"). An explicit
# setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import optax
from scipy import stats

from batch_rl.agents import regularizer_terms  # pylint: disable=g-import-not-at-top
from batch_rl.gridworld import data
from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks

SRANK = "Gridworld/srank_all_states"
RET = "Gridworld/NormalizedReturn"
QERR = "Gridworld/QError_mean"


@dataclasses.dataclass
class Variant:
  name: str
  cfg: fqi.FQIConfig
  iterations: int
  deep_linear: bool = False
  learning_rate: float = 5e-3


def run_variant(v: Variant, env, arrays, seeds):
  """Runs one variant for all seeds in one compiled call; returns (metrics, timing)."""
  if v.deep_linear:
    model = networks.deep_linear_model(env.features, env.num_actions)
  else:
    model = networks.mlp_model(env.features, env.num_actions)
  opt = optax.adam(v.learning_rate, eps=1e-8)
  v_init, v_run = fqi.make_vmapped(v.cfg, model, opt)
  num_logs = v.iterations // v.cfg.log_every
  t0 = time.perf_counter()
  state = v_init(fqi.seed_keys(seeds), arrays)
  compiled = v_run.lower(state, arrays, num_logs).compile()
  t1 = time.perf_counter()
  _, metrics = compiled(state, arrays)
  metrics = fqi.to_numpy(metrics)
  t2 = time.perf_counter()
  timing = {"compile_s": t1 - t0, "run_s": t2 - t1,
            "seeds_per_s": len(seeds) / (t2 - t1)}
  return metrics, timing


def ci95(x):
  x = np.asarray(x, np.float64)
  m = float(np.mean(x))
  if len(x) < 2:
    return m, float("nan")
  half = float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x)))
  return m, half


def final(metrics, key, window_logs):
  return np.mean(metrics[key][:, -window_logs:], axis=1)  # [seeds]


def first(metrics, key):
  return metrics[key][:, 0]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--iterations", type=int, default=500, help="K of the MLP variants")
  p.add_argument("--deep_linear_iterations", type=int, default=500)
  p.add_argument("--deep_linear_logs", type=int, default=10,
                 help="logged iterations of the deep linear run (each: SVD + eig of "
                      "a 1280x1280 matrix per seed)")
  p.add_argument("--window", type=int, default=50, help="final-value window (iterations)")
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs"))
  p.add_argument("--only", default="", help="comma-separated variant names (debugging)")
  p.add_argument("--lp_method", default="gram", choices=("gram", "svd"),
                 help="LpRegularizer.method of 'T=200 + Lp' (same value and gradient; "
                      "'gram' is cheaper on CPU)")
  p.add_argument("--cache_dir", default="",
                 help="if set, each variant's raw metrics are saved there as .npz and "
                      "reused by a later call with the same settings (the report is "
                      "then rebuilt from every cached variant)")
  args = p.parse_args(argv)
  seeds = list(range(args.seeds))
  env = env_lib.GridworldEnv()
  arrays = data.env_arrays(env)
  K, KD = args.iterations, args.deep_linear_iterations
  base = fqi.FQIConfig()
  dl_every = max(1, KD // args.deep_linear_logs)
  variants = [
      Variant("T=10", dataclasses.replace(base, gradient_steps=10), K),
      Variant("T=200", dataclasses.replace(base, gradient_steps=200), K),
      Variant("supervised Q*", dataclasses.replace(
          base, gradient_steps=20, target=fqi.Target.Q_STAR, full_batch=True), K),
      Variant("T=200 + Lp", dataclasses.replace(base, gradient_steps=200, regularizers=(
          regularizer_terms.LpRegularizer(coefficient=1e-3, method=args.lp_method),)), K),
      Variant("T=200 re-init", dataclasses.replace(base, gradient_steps=200,
                                                   reinitialize=True), K),
      Variant("T=200 oracle Q^pi", dataclasses.replace(base, gradient_steps=200,
                                                       target=fqi.Target.ORACLE), K),
      Variant("online n=10", dataclasses.replace(base, gradient_steps=10,
                                                 env_steps_per_iteration=1), K),
      Variant("online n=200", dataclasses.replace(base, gradient_steps=200,
                                                  env_steps_per_iteration=1), K),
      Variant("deep linear", dataclasses.replace(base, gradient_steps=10, full_batch=True,
                                                 log_every=dl_every), KD,
              deep_linear=True, learning_rate=1e-3),
  ]
  results, timings = {}, {}
  all_variants = list(variants)
  if args.only:
    keep = set(args.only.split(","))
    variants = [v for v in variants if v.name in keep]
  if args.cache_dir:
    os.makedirs(args.cache_dir, exist_ok=True)
    for v in all_variants:  # results of earlier calls with the same settings
      cached = _load(args.cache_dir, v, seeds)
      if cached is not None:
        results[v.name], timings[v.name] = cached
  for v in variants:
    if v.name in results:
      print(f"{v.name:20s} cached in {args.cache_dir}", flush=True)
      continue
    metrics, timing = run_variant(v, env, arrays, seeds)
    if args.cache_dir:
      _save(args.cache_dir, v, seeds, metrics, timing)
    results[v.name], timings[v.name] = metrics, timing
    print(f"{v.name:20s} K={v.iterations} T={v.cfg.gradient_steps}: compile "
          f"{timing['compile_s']:.1f} s, run {timing['run_s']:.1f} s, "
          f"{timing['seeds_per_s']:.3f} seeds/s | final srank "
          f"{final(metrics, SRANK, max(1, args.window // v.cfg.log_every)).mean():.1f}",
          flush=True)
    # Written after every variant, so an interrupted run still leaves its results.
    report(args, env, [u for u in all_variants if u.name in results], results, timings)
  report(args, env, [u for u in all_variants if u.name in results], results, timings)


def _cache_path(cache_dir, v: Variant, seeds):
  # Terms hash and print by identity: the key describes them by their settings instead.
  cfg = dataclasses.replace(v.cfg, regularizers=())
  tag = repr((v.name, cfg, fqi.describe_regularizers(v.cfg.regularizers), v.iterations,
              v.deep_linear, v.learning_rate, list(seeds)))
  h = hashlib.sha1(tag.encode()).hexdigest()[:12]
  safe = "".join(c if c.isalnum() else "_" for c in v.name)
  return os.path.join(cache_dir, f"{safe}_{h}.npz")


def _save(cache_dir, v, seeds, metrics, timing):
  np.savez(_cache_path(cache_dir, v, seeds),
           **{"m:" + k: x for k, x in metrics.items()},
           **{"t:" + k: np.float64(x) for k, x in timing.items()})


def _load(cache_dir, v, seeds):
  path = _cache_path(cache_dir, v, seeds)
  if not os.path.exists(path):
    return None
  with np.load(path) as z:
    metrics = {k[2:]: z[k] for k in z.files if k.startswith("m:")}
    timing = {k[2:]: float(z[k]) for k in z.files if k.startswith("t:")}
  return metrics, timing


def report(args, env, variants, results, timings):
  """Table (with the claims computable from `results`) and figure."""
  seeds = list(range(args.seeds))
  del seeds

  def win(name):
    return max(1, args.window // next(v for v in variants if v.name == name).cfg.log_every)

  def fin(name, key=SRANK):
    return final(results[name], key, win(name))

  rows = []
  for v in variants:
    r = results[v.name]
    row = {"variant": v.name, "K": v.iterations, "T": v.cfg.gradient_steps,
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
    if ok_sign * m > 0 and ok_sign * m - h > 0:
      verdict = "reproduced (95% CI excludes 0)"
    elif ok_sign * m > 0:
      verdict = "same direction, CI includes 0"
    else:
      verdict = "NOT reproduced"
    claims.append((label, text, m, h, verdict))

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
      "0 (deep linear: first logged iteration). seeds/s = seeds / run time of the one "
      "vmapped call (compilation excluded) on the shared 2-core CPU "
      f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}). "
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
      x = (np.arange(y.shape[1]) + 1) * v.cfg.log_every - 1
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
      x = (np.arange(y.shape[1]) + 1) * v.cfg.log_every - 1
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

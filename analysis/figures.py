"""The figures, shared by the notebooks and `python -m analysis.report`.

Every function takes tables (from `loading`, `scores`, `treatment_effects`, `phases`)
and returns a matplotlib Figure; `save` writes it as PNG. Numbers are computed in those
modules, not here.
"""
import os
from typing import Optional, Sequence

import matplotlib

if not os.environ.get("MPLBACKEND") and matplotlib.get_backend().lower() not in (
    "module://matplotlib_inline.backend_inline", "inline"):
  matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import pandas as pd
from scipy import stats

from analysis import phases as phases_lib
from analysis import policy_selection as selection_lib

PANEL = (3.6, 2.8)
TITLES = {
    "Eval/AverageReturn": "evaluation return",
    "Rank/srank": "srank (delta = 0.01)",
    "Features/dead_units": "dead units (fraction)",
    "Features/dot_next": "phi(s)^T phi(s') (DR3)",
    "Rank/sigma_max": "sigma_max of Phi",
    "Rank/sigma_min": "sigma_min of Phi",
}


def save(fig, out_dir: str, name: str) -> str:
  """Writes `fig` to out_dir/name.png (whole or not at all) and closes it; returns the
  path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.png")
  fig.savefig(path + ".tmp.png", dpi=110, bbox_inches="tight")
  os.replace(path + ".tmp.png", path)
  plt.close(fig)
  return path


def _grid(rows: int, cols: int, sharex: bool = True):
  fig, axes = plt.subplots(rows, cols, figsize=(PANEL[0] * cols, PANEL[1] * rows),
                           squeeze=False, sharex=sharex)
  return fig, axes


def mean_and_spread(data: pd.DataFrame, by: str, spread: str = "std") -> pd.DataFrame:
  """Per (by, iteration): mean over runs, and lower/upper of the shaded band.

  spread: "std" (mean +- standard deviation over seeds), "se" (+- standard error) or
  "minmax".
  """
  g = data.groupby([by, "iteration"], observed=True)["value"]
  out = g.agg(["mean", "std", "min", "max", "count"]).reset_index()
  out["std"] = out["std"].fillna(0.0)
  if spread == "std":
    width = out["std"]
  elif spread == "se":
    width = out["std"] / np.sqrt(out["count"])
  elif spread == "minmax":
    out["lower"], out["upper"] = out["min"], out["max"]
    return out
  else:
    raise ValueError(f"spread must be 'std', 'se' or 'minmax', got {spread!r}.")
  out["lower"], out["upper"] = out["mean"] - width, out["mean"] + width
  return out


def _draw_band(ax, curve: pd.DataFrame, label: str, color=None):
  x = curve["iteration"].to_numpy() + 1
  line, = ax.plot(x, curve["mean"], label=label, color=color, lw=1.5)
  ax.fill_between(x, curve["lower"], curve["upper"], color=line.get_color(), alpha=0.2, lw=0)
  return line


def curves_per_game(scalars: pd.DataFrame, tags: Sequence[str], by: str = "agent",
                    spread: str = "std", log_tags: Sequence[str] = ()):
  """One row per tag, one panel per game; a line per `by` value, mean +- spread over seeds."""
  games = sorted(scalars["game"].astype(str).unique())
  fig, axes = _grid(len(tags), len(games))
  colors = _colors(scalars[by].astype(str).unique())
  for row, tag in enumerate(tags):
    for col, game in enumerate(games):
      ax = axes[row, col]
      data = scalars[(scalars["tag"] == tag) & (scalars["game"].astype(str) == game)]
      curve = mean_and_spread(data.assign(**{by: data[by].astype(str)}), by, spread)
      for name, group in curve.groupby(by, observed=True):
        _draw_band(ax, group, name, colors[name])
      if tag in log_tags:
        ax.set_yscale("log")
      ax.set_title(f"{game}: {TITLES.get(tag, tag)}", fontsize=9)
      ax.grid(alpha=0.3)
      if row == len(tags) - 1:
        ax.set_xlabel("iteration")
  _legend(fig, axes)
  fig.tight_layout()
  return fig


def _colors(names) -> dict:
  cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  return {n: cycle[i % len(cycle)] for i, n in enumerate(sorted(names))}


def _legend(fig, axes) -> None:
  handles, labels = {}, []
  for ax in axes.ravel():
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in handles:
        handles[l] = h
        labels.append(l)
  if handles:
    fig.legend([handles[l] for l in labels], labels, loc="upper center",
               ncol=min(len(labels), 4), fontsize=8, bbox_to_anchor=(0.5, 1.0 + 0.04))


def relative_improvement_bars(relative: pd.Series, summary: dict, variant: str, base: str):
  """Sorted bars of (variant - base) / |base| per game (IUP Figure 7)."""
  values = relative.dropna().sort_values()
  fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(values) + 2), 3.4))
  colors = ["tab:green" if v > 0 else "tab:red" for v in values]
  ax.bar(range(len(values)), 100 * values.to_numpy(), color=colors)
  ax.set_xticks(range(len(values)))
  ax.set_xticklabels(values.index, rotation=60, ha="right", fontsize=8)
  ax.axhline(0, color="black", lw=0.8)
  ax.axhline(100 * summary["median"], color="gray", ls="--", lw=1,
             label=f"median {100 * summary['median']:.1f}%")
  ax.set_ylabel("relative improvement (%)")
  ax.set_title(f"{variant} over {base}: improved on {summary['improved']}/{summary['games']} "
               "games", fontsize=10)
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  return fig


def aggregate_intervals(table: pd.DataFrame, xlabel: str):
  """rliable's interval plot of `scores.aggregate` output."""
  from rliable import plot_utils  # pylint: disable=g-import-not-at-top
  metrics = list(dict.fromkeys(table["metric"]))
  algorithms = list(dict.fromkeys(table["algorithm"]))
  points, intervals = {}, {}
  for algorithm in algorithms:
    rows = table[table["algorithm"] == algorithm].set_index("metric").loc[metrics]
    points[algorithm] = rows["estimate"].to_numpy()
    intervals[algorithm] = np.stack([rows["lower"].to_numpy(), rows["upper"].to_numpy()])
  fig, _ = plot_utils.plot_interval_estimates(points, intervals, metric_names=metrics,
                                              algorithms=algorithms, xlabel=xlabel,
                                              row_height=0.45,
                                              xlabel_y_coordinate=-0.2 - 0.4 / len(algorithms))
  return fig


def performance_profile(taus, profiles: dict, cis: dict, xlabel: str):
  from rliable import plot_utils  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                       xlabel=xlabel + r" ($\tau$)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  return fig


def correlations(data: pd.DataFrame, x: str, y: str, by: Optional[str]) -> pd.DataFrame:
  """Pearson and Spearman correlation of x and y, overall and per value of `by`."""
  groups = [("all", data)] + ([(str(k), g) for k, g in data.groupby(by, observed=True)]
                              if by else [])
  rows = []
  for name, g in groups:
    g = g.dropna(subset=[x, y])
    ok = len(g) > 2 and g[x].nunique() > 1 and g[y].nunique() > 1
    rows.append({"setting": name, "n": len(g),
                 "pearson_r": stats.pearsonr(g[x], g[y])[0] if ok else np.nan,
                 "spearman_rho": stats.spearmanr(g[x], g[y])[0] if ok else np.nan})
  return pd.DataFrame(rows)


def rank_vs_performance(data: pd.DataFrame, x: str = "srank", y: str = "score",
                        by: Optional[str] = None):
  """Scatter of srank against return, colored by `by`, with Pearson r per setting."""
  table = correlations(data, x, y, by)
  r = dict(zip(table["setting"], table["pearson_r"]))
  fig, ax = plt.subplots(figsize=(5.0, 3.8))
  groups = [(str(k), g) for k, g in data.groupby(by, observed=True)] if by else [("all", data)]
  for name, g in groups:
    ax.scatter(g[x], g[y], s=18, alpha=0.8,
               label=f"{name} (r = {r.get(name, np.nan):.2f}, n = {len(g)})")
  ax.set_xlabel(x)
  ax.set_ylabel(y)
  ax.set_title(f"{y} vs {x}; all runs r = {r['all']:.2f}"
               + (f", colored by {by}" if by else ""), fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


PHASE_TAGS = ("Rank/srank", "Features/dead_units", "Eval/AverageReturn")
PHASE_COLORS = {1: "#dddddd", 2: "#cfe8cf", 3: "#f4cccc"}


def phase_curves(scalars: pd.DataFrame, groups: Sequence[tuple],
                 rule: phases_lib.PhaseRule = phases_lib.PhaseRule(),
                 tags: Sequence[str] = PHASE_TAGS):
  """srank, dead units and return of each (game, agent), seed means, phases shaded.

  The rule runs on the seed-mean srank curve of each (game, agent) in `groups`.
  Returns (figure, table of phase boundaries).
  """
  fig, axes = _grid(len(tags), len(groups))
  rows = []
  for col, (game, agent) in enumerate(groups):
    data = scalars[(scalars["game"].astype(str) == game) & (scalars["agent"].astype(str) == agent)]
    srank = data[data["tag"] == "Rank/srank"].groupby("iteration")["value"].mean()
    found = phases_lib.find_phases(srank.index.to_numpy(), srank.to_numpy(), rule) if len(
        srank) else None
    rows.append({"game": game, "agent": agent, "iterations": len(srank),
                 "phase2_start": found.phase2_start if found else None,
                 "phase3_start": found.phase3_start if found else None})
    for row, tag in enumerate(tags):
      ax = axes[row, col]
      curve = mean_and_spread(data[data["tag"] == tag].assign(g="x"), "g")
      if len(curve):
        _draw_band(ax, curve, tag)
      if found is not None:
        _shade_phases(ax, srank.index.to_numpy(), found)
      if tag == "Rank/srank" and found is not None:
        ax.plot(srank.index + 1, found.smoothed, color="black", lw=0.8, ls=":",
                label="smoothed (rule input)")
      ax.set_title(f"{game} / {agent}: {TITLES.get(tag, tag)}", fontsize=8)
      ax.grid(alpha=0.3)
      if row == len(tags) - 1:
        ax.set_xlabel("iteration")
  fig.tight_layout()
  return fig, pd.DataFrame(rows)


def _shade_phases(ax, iterations: np.ndarray, found: phases_lib.Phases) -> None:
  x = iterations + 1
  bounds = [x[0] - 0.5]
  labels = [1]
  for phase, start in ((2, found.phase2_start), (3, found.phase3_start)):
    if start is not None:
      bounds.append(start + 1 - 0.5)
      labels.append(phase)
  bounds.append(x[-1] + 0.5)
  for phase, lo, hi in zip(labels, bounds[:-1], bounds[1:]):
    ax.axvspan(lo, hi, color=PHASE_COLORS[phase], alpha=0.6, lw=0, zorder=0)
    ax.text((lo + hi) / 2, 0.97, f"P{phase}", transform=ax.get_xaxis_transform(),
            ha="center", va="top", fontsize=7, color="dimgray")


def feature_diagnostics(scalars: pd.DataFrame, by: str = "agent", spread: str = "std"):
  """DR3 / Lp diagnostics per game: phi(s)^T phi(s'), sigma_max, sigma_min, their ratio."""
  wanted = [t for t in ("Features/dot_next", "Rank/sigma_max", "Rank/sigma_min")
            if t in set(scalars["tag"].astype(str))]
  data = scalars[scalars["tag"].isin(wanted)]
  ratio = _ratio(scalars, "Rank/sigma_max", "Rank/sigma_min", "sigma_max / sigma_min")
  data = pd.concat([data.assign(tag=data["tag"].astype(str)), ratio], ignore_index=True)
  tags = wanted + (["sigma_max / sigma_min"] if len(ratio) else [])
  return curves_per_game(data, tags, by=by, spread=spread,
                         log_tags=("Rank/sigma_max", "Rank/sigma_min", "sigma_max / sigma_min"))


def _ratio(scalars: pd.DataFrame, num: str, den: str, name: str) -> pd.DataFrame:
  labels = [c for c in scalars.columns if c not in ("tag", "value")]
  a = scalars[scalars["tag"] == num].set_index(labels)["value"]
  b = scalars[scalars["tag"] == den].set_index(labels)["value"]
  joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
  out = (joined["a"] / joined["b"].where(joined["b"] > 0)).rename("value").reset_index()
  return out.assign(tag=name).dropna(subset=["value"])


def _setting_labels(table: pd.DataFrame, fixed: Sequence[str]) -> pd.Series:
  """game, then " / "-joined values of the other columns not in `fixed` that vary (e.g.
  the agent in a per-agent sweep)."""
  extra = [c for c in table.columns if c not in fixed and c != "game"
           and table[c].astype(str).nunique() > 1]
  labels = table["game"].astype(str)
  for column in extra:
    labels = labels + " / " + table[column].astype(str)
  return labels


def _grouped_bars(table: pd.DataFrame, value: str, error: Optional[str], fixed: Sequence[str],
                  ylabel: str, reference: float, ylim=None):
  """A panel per iteration; per game (x), a bar per criterion (color), +- `error`."""
  iterations = sorted(table["iteration"].unique())
  criteria = list(dict.fromkeys(table["criterion"]))
  labels_all = list(dict.fromkeys(_setting_labels(table, fixed)))
  width = 0.8 / max(len(criteria), 1)
  fig, axes = plt.subplots(len(iterations), 1, squeeze=False, figsize=(
      max(5.0, 0.22 * len(labels_all) * len(criteria) + 2.5), 2.9 * len(iterations)))
  colors = _colors(criteria)
  for ax, iteration in zip(axes[:, 0], iterations):
    data = table[table["iteration"] == iteration]
    labels = _setting_labels(data, fixed)
    x = {name: i for i, name in enumerate(labels_all)}
    for j, criterion in enumerate(criteria):
      rows = data[data["criterion"] == criterion]
      where = np.array([x[l] for l in labels[rows.index]]) + (j - (len(criteria) - 1) / 2) * width
      yerr = None if error is None else np.nan_to_num(rows[error].to_numpy(float))
      ax.bar(where, rows[value].to_numpy(float), width, yerr=yerr, capsize=2,
             color=colors[criterion], label=criterion, error_kw={"lw": 0.8})
    ax.axhline(reference, color="gray", lw=0.8, ls=":")
    ax.set_xticks(range(len(labels_all)))
    ax.set_xticklabels(labels_all, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(f"iteration {iteration}", fontsize=9)
    if ylim is not None:
      ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
  _legend(fig, axes)
  fig.tight_layout()
  return fig


def policy_selection_regret(summary: pd.DataFrame, online: bool = False):
  """Mean simple regret per game and criterion, +- SE over seeds (Gulcehre et al.
  Figure 19; 1 = the best candidate chosen, 0 = the worst), a panel per iteration.

  summary: `policy_selection.regret_summary`. The online choice (regret 1 by
  construction) is the dotted line unless `online`.
  """
  data = summary if online else summary[summary["criterion"] != selection_lib.ONLINE]
  return _grouped_bars(data, "regret_mean", "regret_se",
                       ("criterion", "iteration", "regret_mean", "regret_se", "regret_n"),
                       "simple regret (1 = best)", 1.0, ylim=(0, 1.1))


def policy_selection_improvement(improvement: pd.DataFrame):
  """Improvement (%) of each criterion's choice over the online choice per game
  (Gulcehre et al. Figure 20), a panel per iteration.

  improvement: `policy_selection.improvement_over_online`.
  """
  return _grouped_bars(improvement, "improvement_pct", None,
                       ("criterion", "iteration", "return_criterion", "return_online",
                        "improvement_pct"), "improvement over online (%)", 0.0)

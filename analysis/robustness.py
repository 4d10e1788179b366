"""Robustness to evaluation-time input perturbations (Gulcehre et al. 2022, Section 11).

The metric, as the paper's text defines it (Section 11, "Robustness metric"; lines 202-203 of
the plain-text copy in ../shared/papers/003_6637c3700987c49c.txt): "We define the
robustness metric based on three variables: i) the noise level [epsilon], ii) the
noise distribution [P], and iii) the score obtained by agent when evaluated in the
environment with noise level [epsilon]: [S(epsilon)] for which [S(0)] represents the
average score achieved by the agent without any perturbation applied on it. Then we
can define [R] as follows: (4)". The symbols and equation (4) itself are lost in that
copy (bracketed here); the text keeps the ingredients, and says that IceHockey's
scores "can be negative, thus we shifted the scores ... to make sure that they are
non-negative" (line 206), which is what a ratio to S(0) needs. What is computed here:

    R_P(epsilon) = (E_{x ~ P(epsilon)}[S(x)] + c) / (S(0) + c)

the expected score under noise of level epsilon drawn from P (the mean return of the
perturbed evaluation, `Eval/Perturbed/<kind>/<level>`), relative to the unperturbed
score of the same checkpoint (`Eval/AverageReturn` at the same step), with c the
paper's score shift (0 unless the scores can be negative). R = 1: unaffected; R = 0:
the score is gone. It is computed per run (each seed against its own S(0)), then
averaged over seeds with a t-interval; where S(0) + c <= 0 it is undefined (NaN).

    table = robustness.run_table(robustness.read_scalars("runs/x/seed_0/perturbed"))
    summary = robustness.summarise({"DQN": [table0, table1], "BC": [...]})
    fig = robustness.curves(summary)
"""
import math
import re
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis import figures

UNPERTURBED_TAG = "Eval/AverageReturn"
UNPERTURBED_EPISODES_TAG = "Eval/NumEpisodes"
_TAG = re.compile(r"^Eval/Perturbed/(?P<kind>[^/]+)/(?P<level>[^/]+)$")
EPISODES_TAG = "Eval/PerturbedEpisodes/{kind}/{level}"


def robustness(score, unperturbed, shift: float = 0.0):
  """R = (score + shift) / (unperturbed + shift), elementwise; NaN where the shifted
  unperturbed score is not positive (the ratio then says nothing)."""
  score = np.asarray(score, dtype=float)
  base = np.asarray(unperturbed, dtype=float) + shift
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(base > 0, (score + shift) / np.where(base > 0, base, 1.0), np.nan)


def parse_tag(tag: str) -> Optional[tuple[str, float, str]]:
  """(kind, level, level as written) of an `Eval/Perturbed/<kind>/<level>` tag, else None."""
  match = _TAG.match(tag)
  if match is None:
    return None
  try:
    return match["kind"], float(match["level"]), match["level"]
  except ValueError:
    return None


def read_scalars(events_dir: str) -> pd.DataFrame:
  """(iteration, tag, value) of the event files directly in `events_dir` (a run, or its
  `perturbed/` folder), a step logged twice keeping its last value."""
  from analysis import loading  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  return loading.read_run(events_dir).scalars


def run_table(scalars: pd.DataFrame, iteration: Optional[int] = None,
              shift: float = 0.0) -> pd.DataFrame:
  """One run's perturbed evaluations: a row per (iteration, kind, level) with its
  score, episodes, the unperturbed score of that iteration and R.

  Level 0 of every kind is the unperturbed score itself (R = 1) where it was not
  evaluated as a level. `iteration` None keeps every iteration that has perturbed
  evaluations; an int keeps that one.

  Args:
    scalars: (iteration, tag, value), as `read_scalars` returns.
    iteration: which step, or None.
    shift: the score shift c of the metric.
  """
  values = {(int(i), t): float(v) for i, t, v in
            scalars[["iteration", "tag", "value"]].itertuples(index=False)}
  rows = []
  for (step, tag), score in values.items():
    parsed = parse_tag(tag)
    if parsed is None or (iteration is not None and step != iteration):
      continue
    kind, level, written = parsed
    rows.append(dict(iteration=step, kind=kind, level=level, score=score,
                     episodes=values.get((step, EPISODES_TAG.format(kind=kind, level=written)),
                                         math.nan),
                     unperturbed=values.get((step, UNPERTURBED_TAG), math.nan)))
  table = pd.DataFrame(rows, columns=["iteration", "kind", "level", "score", "episodes",
                                      "unperturbed"])
  zeros = []
  for (step, kind), group in table.groupby(["iteration", "kind"]):
    if not (group["level"] == 0).any() and (step, UNPERTURBED_TAG) in values:
      zeros.append(dict(iteration=step, kind=kind, level=0.0,
                        score=values[(step, UNPERTURBED_TAG)],
                        episodes=values.get((step, UNPERTURBED_EPISODES_TAG), math.nan),
                        unperturbed=values[(step, UNPERTURBED_TAG)]))
  if zeros:
    table = pd.concat([table, pd.DataFrame(zeros)], ignore_index=True)
  table["robustness"] = robustness(table["score"], table["unperturbed"], shift)
  return table.sort_values(["iteration", "kind", "level"], ignore_index=True)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
  """(mean, lower, upper, n) with Student's t-interval over the finite values; the
  bounds are NaN for fewer than two values."""
  x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
  n = len(x)
  if n == 0:
    return math.nan, math.nan, math.nan, 0
  mean = float(x.mean())
  if n < 2:
    return mean, math.nan, math.nan, n
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
  return mean, mean - half, mean + half, n


def difference_ci(a: Sequence[float], b: Sequence[float],
                  confidence: float = 0.95) -> tuple[float, float, float]:
  """mean(a) - mean(b) with Welch's t-interval (independent groups, unequal variances):
  (difference, lower, upper), bounds NaN unless both have two finite values or more."""
  a = np.asarray([v for v in a if np.isfinite(v)], dtype=float)
  b = np.asarray([v for v in b if np.isfinite(v)], dtype=float)
  if not len(a) or not len(b):
    return math.nan, math.nan, math.nan
  diff = float(a.mean() - b.mean())
  if len(a) < 2 or len(b) < 2:
    return diff, math.nan, math.nan
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:
    return diff, diff, diff
  dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
  return diff, diff - half, diff + half


def mean_robustness(table: pd.DataFrame) -> dict[str, float]:
  """{kind: mean of R over the levels > 0} of one run's table at one iteration: a
  single number per kind (the normalised area under its robustness curve on the
  evaluated levels)."""
  perturbed = table[table["level"] > 0]
  return {kind: float(group["robustness"].mean())
          for kind, group in perturbed.groupby("kind")}


def summarise(tables: Mapping[str, Sequence[pd.DataFrame]],
              confidence: float = 0.95) -> pd.DataFrame:
  """Per (agent, kind, level): n runs, score and R as mean with a t-interval over runs.

  tables: {agent: one `run_table` per run (seed), each at one iteration}.
  """
  rows = []
  for agent, runs in tables.items():
    data = pd.concat([t.assign(run=i) for i, t in enumerate(runs)], ignore_index=True)
    for (kind, level), group in data.groupby(["kind", "level"]):
      score = mean_ci(group["score"], confidence)
      robust = mean_ci(group["robustness"], confidence)
      rows.append(dict(agent=agent, kind=kind, level=level, n=score[3],
                       score_mean=score[0], score_lower=score[1], score_upper=score[2],
                       robustness_mean=robust[0], robustness_lower=robust[1],
                       robustness_upper=robust[2]))
  return pd.DataFrame(rows)


def curves(summary: pd.DataFrame, kinds: Optional[Sequence[str]] = None,
           xlabels: Optional[Mapping[str, str]] = None):
  """The paper's Figures 21-22: per kind (column), the score (top) and R (bottom)
  against the noise level, a line per agent, mean and t-interval band over seeds."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  kinds = list(kinds or sorted(summary["kind"].unique()))
  agents = list(dict.fromkeys(summary["agent"]))
  fig, axes = plt.subplots(2, len(kinds), squeeze=False, sharex="col",
                           figsize=(figures.PANEL[0] * len(kinds), figures.PANEL[1] * 2))
  cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for col, kind in enumerate(kinds):
    for row, (value, label) in enumerate((("score", "evaluation return"),
                                          ("robustness", "robustness R = S(eps) / S(0)"))):
      ax = axes[row, col]
      for i, agent in enumerate(agents):
        data = summary[(summary["agent"] == agent) & (summary["kind"] == kind)].sort_values(
            "level")
        if data.empty:
          continue
        x = data["level"].to_numpy()
        ax.plot(x, data[f"{value}_mean"], marker="o", ms=3, lw=1.5, color=cycle[i % len(cycle)],
                label=f"{agent} (n={int(data['n'].max())})")
        ax.fill_between(x, data[f"{value}_lower"], data[f"{value}_upper"],
                        color=cycle[i % len(cycle)], alpha=0.2, lw=0)
      if value == "robustness":
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_xlabel((xlabels or {}).get(kind, f"{kind} level"))
      ax.set_title(f"{kind}: {label}", fontsize=9)
      ax.grid(alpha=0.3)
  handles, labels = axes[0, 0].get_legend_handles_labels()
  if handles:
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8,
               bbox_to_anchor=(0.5, 1.04))
  fig.tight_layout()
  return fig

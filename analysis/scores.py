"""Scores per run, human normalization, relative improvement and rliable aggregates.

Pure functions of tables and arrays; the figures draw what they return.

* `run_scores`: one score per run from its evaluation curve. "best" is the IUP
  protocol (Kumar et al. 2021, Appendix: "compared using the best evaluation score
  (averaged over 5 runs) achieved during training"): each run's best iteration, then
  the mean over seeds. "final" is the mean of the last `last` iterations.
* `relative_improvement`: (score_variant - score_base) / |score_base| per game (IUP
  Figure 7).
* `aggregate`: IQM, median, mean and optimality gap with stratified bootstrap
  confidence intervals (rliable, Agarwal et al. 2021) over a [runs x games] matrix.
"""
import contextlib
import os
import re
import warnings
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

RETURN_TAG = "Eval/AverageReturn"
SCORES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                           "atari_scores.csv")
METRICS = ("Median", "IQM", "Mean", "Optimality Gap")


def game_key(name: str) -> str:
  """"MsPacman", "ms_pacman", "Ms Pacman" -> "mspacman" (the reference table's key)."""
  return re.sub(r"[^a-z0-9]", "", str(name).lower())


def reference_scores(path: str = SCORES_FILE) -> pd.DataFrame:
  """Random and human scores per Atari game (index: game_key), from data/atari_scores.csv."""
  return pd.read_csv(path, comment="#").set_index("game")


def human_normalized(score, game: str, reference: Optional[pd.DataFrame] = None):
  """(score - random) / (human - random) for an Atari game.

  Raises:
    KeyError: the game has no reference scores (the message names it).
  """
  reference = reference_scores() if reference is None else reference
  key = game_key(game)
  if key not in reference.index:
    raise KeyError(f"no random/human reference score for Atari game {game!r} in "
                   f"{SCORES_FILE} (it has {len(reference)} games).")
  random, human = reference.loc[key, ["random", "human"]]
  return (np.asarray(score, dtype=float) - random) / (human - random)


def run_scores(scalars: pd.DataFrame, tag: str = RETURN_TAG, how: str = "best",
               last: int = 1) -> pd.DataFrame:
  """One score per run from the tidy table (`Sweep.scalars`).

  Args:
    scalars: tidy table with run labels, iteration, tag, value.
    tag: the curve to score (default the evaluation return).
    how: "best" (the run's best iteration, the IUP protocol) or "final" (mean of the
      run's last `last` iterations).
    last: iterations averaged by "final".

  Returns:
    One row per run: the label columns of `scalars` and `score`.
  """
  if how not in ("best", "final"):
    raise ValueError(f"how must be 'best' or 'final', got {how!r}.")
  data = scalars[scalars["tag"] == tag]
  if data.empty:
    raise LookupError(f"no run logged {tag!r}.")
  labels = [c for c in data.columns if c not in ("iteration", "tag", "value")]
  data = data.sort_values("iteration")
  grouped = data.groupby(labels, observed=True, dropna=False, sort=False)["value"]
  score = grouped.max() if how == "best" else grouped.apply(lambda v: v.iloc[-last:].mean())
  return score.rename("score").reset_index()


def per_game(scores: pd.DataFrame, by: str = "agent") -> pd.DataFrame:
  """Mean score over seeds: index game, one column per value of `by`."""
  return scores.pivot_table(index="game", columns=by, values="score", aggfunc="mean",
                            observed=True)


def best_of_mean_curve(scalars: pd.DataFrame, tag: str = RETURN_TAG,
                       by: str = "agent") -> pd.DataFrame:
  """The other reading of "best score averaged over runs": max over iterations of the
  seed-mean curve. Index game, one column per value of `by`."""
  data = scalars[scalars["tag"] == tag]
  curve = data.groupby(["game", by, "iteration"], observed=True)["value"].mean()
  return curve.groupby(["game", by], observed=True).max().unstack(by)


def relative_improvement(variant: pd.Series, base: pd.Series) -> pd.Series:
  """(variant - base) / |base| per game, over the games both have, sorted ascending.

  A game whose base score is 0 gets NaN (the ratio is undefined there).
  """
  games = variant.index.intersection(base.index)
  v, b = variant[games].astype(float), base[games].astype(float)
  ratio = (v - b) / b.abs().where(b != 0)
  return ratio.sort_values()


def improvement_summary(relative: pd.Series) -> dict:
  """Median relative improvement and the number of games improved (> 0)."""
  finite = relative.dropna()
  return {"median": float(finite.median()) if len(finite) else float("nan"),
          "improved": int((finite > 0).sum()), "games": int(len(finite))}


def score_matrices(scores: pd.DataFrame, by: str = "agent", normalize: str = "auto",
                   reference: Optional[pd.DataFrame] = None):
  """{agent: [num_seeds x num_games] array} for rliable, games in a shared order.

  Args:
    scores: `run_scores` output.
    by: the column naming the algorithms compared.
    normalize: "human" (Atari human-normalized), "raw", or "auto" (human when every
      run is an Atari game with reference scores, raw otherwise).

  Returns:
    (score_dict, games, normalization used ("human" or "raw"), notes): each matrix
    has one row per seed index; when an (algorithm, game) has fewer seeds than others,
    the extra seeds elsewhere are dropped so the matrices are rectangular, as rliable
    needs, and a note says so.
  """
  notes = []
  reference = reference_scores() if reference is None else reference
  if normalize == "auto":
    atari = set(scores.get("domain", pd.Series(["atari"] * len(scores)))) == {"atari"}
    known = all(game_key(g) in reference.index for g in scores["game"].unique())
    normalize = "human" if atari and known else "raw"
    if not (atari and known):
      notes.append("raw scores: " + ("not every run is an Atari game" if not atari else
                                     "some games have no reference scores") +
                   "; human normalization needs Atari games listed in " + SCORES_FILE)
  scores = scores.copy()
  if normalize == "human":
    scores["score"] = [float(human_normalized(s, g, reference))
                       for s, g in zip(scores["score"], scores["game"])]
  elif normalize != "raw":
    raise ValueError(f"normalize must be 'auto', 'human' or 'raw', got {normalize!r}.")
  games = sorted(scores["game"].unique())
  counts = scores.groupby([by, "game"], observed=True).size()
  num_seeds = int(counts.min())
  algorithms = sorted(scores[by].unique())
  missing = [(a, g) for a in algorithms for g in games if (a, g) not in counts.index]
  if missing:
    raise LookupError(f"no runs for (algorithm, game) {missing[:5]}: rliable needs every "
                      "algorithm on every game; select a common set of games.")
  if counts.max() > num_seeds:
    notes.append(f"using {num_seeds} seed(s) per (algorithm, game): the smallest count "
                 f"(counts range {int(counts.min())}-{int(counts.max())}).")
  score_dict = {}
  for algorithm in algorithms:
    columns = []
    for game in games:
      runs = scores[(scores[by] == algorithm) & (scores["game"] == game)]
      runs = runs.sort_values("seed") if "seed" in runs else runs
      columns.append(runs["score"].to_numpy()[:num_seeds])
    score_dict[str(algorithm)] = np.stack(columns, axis=1)
  return score_dict, games, normalize, notes


def metric_functions(gamma: float = 1.0) -> dict:
  """rliable's aggregate metrics by name; optimality gap below `gamma`."""
  from rliable import metrics  # pylint: disable=g-import-not-at-top
  return {"Median": metrics.aggregate_median, "IQM": metrics.aggregate_iqm,
          "Mean": metrics.aggregate_mean,
          "Optimality Gap": lambda x: metrics.aggregate_optimality_gap(x, gamma)}


def aggregate(score_dict: dict, metric_names: Sequence[str] = METRICS, reps: int = 2000,
              confidence: float = 0.95, seed: int = 0, gamma: float = 1.0) -> pd.DataFrame:
  """Point estimates and stratified-bootstrap CIs (rliable.get_interval_estimates).

  Returns:
    One row per (algorithm, metric): estimate, lower, upper.
  """
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  functions = metric_functions(gamma)
  func = lambda x: np.array([functions[m](x) for m in metric_names])
  # rliable's StratifiedBootstrap draws from the global np.random (its random_state
  # only reaches arch), so the global state is seeded here and restored after.
  with _global_seed(seed), warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=FutureWarning, module="arch")
    points, intervals = rly.get_interval_estimates(
        score_dict, func, reps=reps, confidence_interval_size=confidence,
        random_state=np.random.RandomState(seed))
  rows = []
  for algorithm in score_dict:
    for i, metric in enumerate(metric_names):
      rows.append({"algorithm": algorithm, "metric": metric,
                   "estimate": float(points[algorithm][i]),
                   "lower": float(intervals[algorithm][0, i]),
                   "upper": float(intervals[algorithm][1, i])})
  return pd.DataFrame(rows)


def performance_profiles(score_dict: dict, taus: Optional[Iterable[float]] = None,
                         reps: int = 2000, seed: int = 0):
  """(taus, profiles, confidence bands) of rliable.create_performance_profile."""
  from rliable import library as rly  # pylint: disable=g-import-not-at-top
  if taus is None:
    values = np.concatenate([s.ravel() for s in score_dict.values()])
    taus = np.linspace(min(0.0, values.min()), values.max(), 81)
  taus = np.asarray(list(taus), dtype=float)
  with _global_seed(seed):  # create_performance_profile takes no random_state
    profiles, cis = rly.create_performance_profile(score_dict, taus, reps=reps)
  return taus, profiles, cis


@contextlib.contextmanager
def _global_seed(seed: int):
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)

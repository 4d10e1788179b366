"""Offline policy selection (Gulcehre et al. 2022, Section 10, Figures 19 and 20).

The candidates are runs that differ in one setting (the paper: twelve log-spaced
learning rates, our column `create_optimizer.learning_rate`), grouped so that the runs
of one group share everything else: the game, the seed and every other label of the
tidy table. At a training iteration t, an offline criterion computed from the logs
picks one candidate per group; the online choice is the candidate with the highest
evaluation return at t. The criteria (`CRITERIA`, a table of name, tags, direction):

    srank         Rank/srank                       highest
    dead_units    Features/dead_units              lowest
    q_value       Value/QData                      highest  (mean Q(s, a_data))
    td_loss       Train/TDLoss, else Train/Loss    lowest
    q_mc_gap      |Value/QMinusMCReturn|           lowest

Train/TDLoss is logged only when regularisers are on (then Train/Loss is TD loss plus
penalties); without regularisers Train/Loss is the TD loss itself, so each run uses
the first of the tags it logged. Value/QMinusMCReturn is mean Q(s, a_data) minus the
data's discounted return-to-go (positive = overestimation); the criterion takes its
absolute value.

Numbers, per group and iteration, with R the candidates' evaluation returns at t:

* Simple regret, normalised as the paper describes (1 = the best candidate was chosen,
  0 = the worst): regret = (R_selected - R_min) / (R_max - R_min). This is one minus
  Konyushkova et al. (2021)'s normalised simple regret (R_max - R_selected) / (R_max -
  R_min). It is NaN when R_max == R_min (every candidate returned the same: nothing to
  gain or lose), and those groups are left out of the means and named in `problems`.
  Ties in the criterion (srank is an integer, and often tied) are broken uniformly at
  random in expectation: R_selected is the mean return of the tied candidates.
  Candidates whose criterion value is NaN are never chosen.
* Summaries: per game, the mean regret over seeds and its standard error std(ddof=1) /
  sqrt(n); "all games": each seed's mean over games, then the mean and SE over seeds
  (the paper's "standard error across five seeds").
* Rank correlation between the criterion and the return across a group's candidates,
  Spearman's rho and Kendall's tau-b (scipy.stats), of the criterion oriented by its
  direction (the value for "highest", minus the value for "lowest"): +1 = the criterion
  orders the candidates exactly as their returns do, -1 = exactly reversed. NaN with
  fewer than two candidates or when either side is constant.
* Improvement over online selection (Figure 20), per game: with M the median over
  seeds (`stat`) of the chosen candidates' returns,
  improvement_pct = 100 (M_criterion - M_online) / |M_online|, NaN when M_online == 0.
  It is at most 0 when the online choice maximises the same return it is scored on.

Bad input raises `SelectionError` (a ValueError) naming the run, tag, iteration or
group at fault; a criterion tag that runs lack raises `MissingTagError` (also a
LookupError) unless `skip_missing=True`, which leaves that criterion out and says why
in `problems`.
"""
import dataclasses
import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis import loading
from analysis import scores as scores_lib

RETURN_TAG = scores_lib.RETURN_TAG
ALL_GAMES = "all games"
_NOT_LABELS = ("iteration", "tag", "value")


class SelectionError(ValueError):
  """The runs cannot be selected among as asked (the message says which and why)."""


class MissingTagError(SelectionError, LookupError):
  """Some candidate runs never logged a tag that a criterion or the regret needs."""


@dataclasses.dataclass(frozen=True)
class Criterion:
  """An offline selection rule: pick the candidate with the highest or lowest value.

  tags: alternatives; each run uses the first of them it logged.
  direction: "max" or "min".
  absolute: select on |value| (e.g. the gap between Q and the Monte-Carlo return).
  """
  name: str
  tags: tuple
  direction: str
  absolute: bool = False

  def __post_init__(self):
    if self.direction not in ("max", "min"):
      raise ValueError(f"criterion {self.name!r}: direction must be 'max' or 'min', got "
                       f"{self.direction!r}.")


CRITERIA = (
    Criterion("srank", ("Rank/srank",), "max"),
    Criterion("dead_units", ("Features/dead_units",), "min"),
    Criterion("q_value", ("Value/QData",), "max"),
    Criterion("td_loss", ("Train/TDLoss", "Train/Loss"), "min"),
    Criterion("q_mc_gap", ("Value/QMinusMCReturn",), "min", absolute=True),
)
ONLINE = "online"  # the criterion name of the online choice (highest return)


@dataclasses.dataclass
class Candidates:
  """The candidates' values at the chosen iterations.

  table: one row per (run, iteration): the group columns, `column`, run, iteration,
    `return`, and one column per kept criterion (absolute value taken where asked).
  tags: {criterion name: the tags its runs used}.
  """
  table: pd.DataFrame
  column: str
  group_by: list
  criteria: tuple
  tags: dict
  problems: list


def _few(items, n: int = 5) -> str:
  items = [str(i) for i in items]
  return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def label_columns(scalars: pd.DataFrame) -> list:
  """The tidy table's per-run label columns: run, game, ..., the hyperparameters."""
  return [c for c in scalars.columns if c not in _NOT_LABELS]


def run_table(scalars: pd.DataFrame) -> pd.DataFrame:
  """One row per run with its labels (categoricals made plain strings)."""
  runs = scalars[label_columns(scalars)].drop_duplicates("run").reset_index(drop=True)
  for c in ("run", "game", "domain", "agent"):
    if c in runs.columns:
      runs[c] = runs[c].astype(str)
  return runs


def varying_columns(scalars: pd.DataFrame) -> list:
  """Hyperparameter columns, then `agent`, that take >= 2 values among one game's runs."""
  runs = run_table(scalars)
  hparams = [c for c in runs.columns if c not in loading.RUN_COLUMNS]
  out = []
  for column in hparams + ["agent"]:
    if column in runs.columns and (
        runs.groupby("game")[column].agg(lambda v: v.astype(str).nunique()) >= 2).any():
      out.append(column)
  return out


def detect_column(scalars: pd.DataFrame) -> str:
  """The column the candidates differ in: the one hyperparameter varying within a game.

  When no hyperparameter varies but the agent does (DQN vs DQN + Lp), the candidates are
  the agents.

  Raises:
    SelectionError: several hyperparameters vary (name one), or nothing does.
  """
  varying = varying_columns(scalars)
  hparams = [c for c in varying if c != "agent"]
  if len(hparams) == 1:
    return hparams[0]
  if len(hparams) > 1:
    raise SelectionError(
        f"offline policy selection: {len(hparams)} hyperparameters vary within a game "
        f"({hparams}), so which runs compete is ambiguous; name the column to select "
        "among (column=..., or the report's --selection_column), the others then group "
        "the runs.")
  if "agent" in varying:
    return "agent"
  runs = run_table(scalars)
  raise SelectionError(
      "offline policy selection: no hyperparameter and no agent takes two values among "
      f"the runs of one game, so there is nothing to select among ({len(runs)} run(s): "
      f"{_few(runs['run'])}). It needs a sweep, e.g. runs that differ in "
      "create_optimizer.learning_rate.")


def group_columns(scalars: pd.DataFrame, column: str) -> list:
  """Columns whose values a group of competing runs shares: every label but run, domain
  (implied by the game) and `column`."""
  return [c for c in label_columns(scalars) if c not in ("run", "domain", column)]


def default_iterations(scalars: pd.DataFrame, return_tag: str = RETURN_TAG) -> list:
  """Two iterations every run logged `return_tag` at: the last, and the one a tenth of
  the way (the paper contrasts 2M with 20M gradient steps).

  With k common iterations i_1 < ... < i_k: [i_ceil(k/10), i_k] (one if they coincide).

  Raises:
    MissingTagError: no run logged `return_tag`.
    SelectionError: the runs share no iteration with a return.
  """
  data = scalars[scalars["tag"].astype(str) == return_tag]
  if data.empty:
    raise MissingTagError(f"offline policy selection: no run logged {return_tag!r}, which "
                          "the regret and the online choice need.")
  per_run = data.groupby(data["run"].astype(str))["iteration"].agg(set)
  missing = sorted(set(run_table(scalars)["run"]) - set(per_run.index))
  if missing:
    raise MissingTagError(f"offline policy selection: run(s) {_few(missing)} never logged "
                          f"{return_tag!r}, which the regret and the online choice need.")
  common = sorted(set.intersection(*per_run.tolist()))
  if not common:
    raise SelectionError(f"offline policy selection: the runs share no iteration at which "
                         f"all of them logged {return_tag!r} (last iterations: "
                         f"{_few(f'{r} {max(s)}' for r, s in per_run.items())}).")
  return sorted({common[math.ceil(len(common) / 10) - 1], common[-1]})


def values_at(scalars: pd.DataFrame, tag_of_run: dict, iterations: Sequence[int],
              what: str = "") -> pd.Series:
  """The value each run logged for its tag at each iteration, indexed (run, iteration).

  Args:
    tag_of_run: {run: tag}; the runs, in this order, make the index.
    what: names the quantity in the error.

  Raises:
    SelectionError: a run has no value for its tag at one of the iterations.
  """
  names, tags = scalars["run"].astype(str), scalars["tag"].astype(str)
  wanted = scalars["iteration"].isin(list(iterations)) & tags.isin(set(tag_of_run.values()))
  values = scalars[wanted].assign(run=names[wanted], tag=tags[wanted]).groupby(
      ["run", "iteration", "tag"])["value"].last()
  index = pd.MultiIndex.from_product([list(tag_of_run), list(iterations)],
                                     names=["run", "iteration"])
  keys = pd.MultiIndex.from_tuples([(r, it, tag_of_run[r]) for r, it in index])
  absent = [key for key, ok in zip(keys, keys.isin(values.index)) if not ok]
  if absent:
    run, it, tag = absent[0]
    at = sorted(scalars.loc[(names == run) & (tags == tag), "iteration"].astype(int))
    raise SelectionError(
        f"offline policy selection: {what + ': ' if what else ''}run {run} has no {tag!r} "
        f"at iteration {it} (it logged it at {len(at)} iteration(s): {_few(at, 4)})"
        + (f"; {len(absent) - 1} more (run, iteration) pair(s) lack it" if len(absent) > 1
           else "") + ".")
  return pd.Series(values.reindex(keys).to_numpy(float), index=index)


def _require_two_candidates(runs: pd.DataFrame, group_by: list, column: str) -> None:
  groups = (runs.groupby(group_by, dropna=False, sort=True)["run"].agg(list) if group_by
            else pd.Series({(): list(runs["run"])}))
  single = groups[groups.map(len) < 2]
  if len(single):
    described = [f"{dict(zip(group_by, k if isinstance(k, tuple) else (k,)))}: run {r[0]}"
                 for k, r in single.items()]
    raise SelectionError(
        f"offline policy selection: {len(single)} group(s) of runs sharing "
        f"{group_by} have a single candidate, so there is nothing to select among "
        f"({_few(described, 3)}). The candidates of a group are runs that differ only in "
        f"{column!r}; every group needs two or more.")


def _require_reached(scalars: pd.DataFrame, runs: Sequence[str],
                     iterations: Sequence[int]) -> None:
  last = scalars.groupby(scalars["run"].astype(str))["iteration"].max()
  for it in iterations:
    short = [r for r in runs if last.get(r, -1) < it]
    if short:
      raise SelectionError(
          f"offline policy selection: run(s) {_few(short)} did not reach iteration {it} "
          f"(last logged: {_few(int(last.get(r, -1)) for r in short)}); select at "
          f"iterations every candidate reached (up to {int(last.min())}).")


def candidate_table(scalars: pd.DataFrame, column: str, iterations: Iterable[int],
                    criteria: Sequence[Criterion] = CRITERIA, return_tag: str = RETURN_TAG,
                    skip_missing: bool = False) -> Candidates:
  """The return and every criterion's value of each candidate run at each iteration.

  Args:
    scalars: the tidy table (`Sweep.scalars`), holding only the runs that compete.
    column: the label the candidates differ in (`detect_column`).
    iterations: training iterations to select at.
    criteria: the rules to evaluate.
    return_tag: the online measure.
    skip_missing: leave out, with a sentence in `problems`, a criterion whose tags some
      run never logged or lacks at an iteration (default: raise).

  Raises:
    SelectionError: `column` is not a label, a group has a single candidate, a run did
      not reach an iteration, or lacks (or logged NaN for) the return at one, or
      (skip_missing=False) a criterion's tag at one.
    MissingTagError: a run never logged the return, or (skip_missing=False) any tag of
      a criterion.
  """
  labels = label_columns(scalars)
  if column not in labels or column == "run":
    raise SelectionError(f"offline policy selection: {column!r} is not a label column of "
                         f"the table (labels: {labels}).")
  iterations = sorted({int(i) for i in iterations})
  if not iterations:
    raise SelectionError("offline policy selection: no iteration to select at.")
  runs = run_table(scalars)
  group_by = group_columns(scalars, column)
  _require_two_candidates(runs, group_by, column)
  _require_reached(scalars, list(runs["run"]), iterations)

  tags_logged = scalars.groupby(scalars["run"].astype(str))["tag"].agg(
      lambda t: set(t.astype(str)))
  missing = [r for r in runs["run"] if return_tag not in tags_logged.get(r, set())]
  if missing:
    raise MissingTagError(f"offline policy selection: run(s) {_few(missing)} never logged "
                          f"{return_tag!r}, which the regret and the online choice need.")
  returns = values_at(scalars, {r: return_tag for r in runs["run"]}, iterations, "the return")
  if returns.isna().any():
    run, it = returns.index[returns.isna()][0]
    raise SelectionError(f"offline policy selection: run {run} logged NaN {return_tag!r} "
                         f"at iteration {it}; its regret is undefined.")

  table = runs.set_index("run").reindex(returns.index.get_level_values("run")).reset_index()
  table["iteration"] = returns.index.get_level_values("iteration")
  table["return"] = returns.to_numpy()
  kept, used, problems = [], {}, []
  for criterion in criteria:
    if criterion.name in table.columns:
      raise SelectionError(f"offline policy selection: criterion name {criterion.name!r} "
                           "clashes with a column of the table.")
    chosen = {r: next((t for t in criterion.tags if t in tags_logged.get(r, set())), None)
              for r in runs["run"]}
    lacking = [r for r, t in chosen.items() if t is None]
    try:
      if lacking:
        raise MissingTagError(
            f"offline policy selection: criterion {criterion.name!r} needs "
            f"{' or '.join(map(repr, criterion.tags))}, which run(s) {_few(lacking)} never "
            "logged.")
      values = values_at(scalars, chosen, iterations, f"criterion {criterion.name!r}")
    except SelectionError as e:
      if not skip_missing:
        raise
      problems.append(f"{e} Criterion {criterion.name!r} left out.".replace(
          "offline policy selection: ", ""))
      continue
    values = values.to_numpy()
    table[criterion.name] = np.abs(values) if criterion.absolute else values
    kept.append(criterion)
    used[criterion.name] = sorted(set(chosen.values()))
  ordered = group_by + [column, "run", "iteration", "return"] + [c.name for c in kept]
  return Candidates(table=table[ordered], column=column, group_by=group_by,
                    criteria=tuple(kept), tags=used, problems=problems)


# ---------------------------------------------------------------------- the numbers
def simple_regret(selected, worst, best):
  """(R_selected - R_min) / (R_max - R_min): 1 = the best candidate chosen, 0 = the worst.

  Elementwise; NaN where R_max == R_min (no candidate is better than another).
  """
  selected, worst, best = np.broadcast_arrays(*(np.asarray(a, float)
                                                for a in (selected, worst, best)))
  span = best - worst
  out = np.full(span.shape, np.nan)
  np.divide(selected - worst, span, out=out, where=span > 0)
  return float(out) if out.ndim == 0 else out


def choose(values, direction: str) -> np.ndarray:
  """Indices of the candidates with the highest ("max") or lowest ("min") value, all of
  them if several tie exactly; NaN values are never chosen (none chosen if all are)."""
  values = np.asarray(values, float)
  if np.isnan(values).all():
    return np.array([], int)
  best = np.nanmax(values) if direction == "max" else np.nanmin(values)
  return np.flatnonzero(values == best)


def _oriented(values, criterion: Criterion) -> np.ndarray:
  values = np.asarray(values, float)
  return values if criterion.direction == "max" else -values


def selections(candidates: Candidates, online: bool = True) -> pd.DataFrame:
  """What each criterion (and, with `online`, the highest return) picks per group and
  iteration, and its simple regret.

  Returns:
    One row per (group, iteration, criterion): the group columns, iteration, criterion,
    selected (the `column` value(s) chosen, ", "-joined when tied), selected_run,
    n_tied, criterion_value, return_selected (mean over the tied), return_min,
    return_max, n_candidates, regret.
  """
  rules = ([(ONLINE, "return", Criterion(ONLINE, (RETURN_TAG,), "max"))] if online else [])
  rules += [(c.name, c.name, c) for c in candidates.criteria]
  rows = []
  keys = candidates.group_by + ["iteration"]
  for key, group in candidates.table.groupby(keys, dropna=False, sort=True):
    key = key if isinstance(key, tuple) else (key,)
    returns = group["return"].to_numpy(float)
    for name, field, rule in rules:
      score = group[field].to_numpy(float)
      picked = choose(score, rule.direction)
      chosen = group.iloc[picked]
      selected = float(returns[picked].mean()) if len(picked) else np.nan
      rows.append({**dict(zip(keys, key)), "criterion": name,
                   "selected": ", ".join(map(str, chosen[candidates.column])) or None,
                   "selected_run": chosen["run"].iloc[0] if len(picked) else None,
                   "n_tied": len(picked),
                   "criterion_value": score[picked[0]] if len(picked) else np.nan,
                   "return_selected": selected, "return_min": returns.min(),
                   "return_max": returns.max(), "n_candidates": len(group),
                   "regret": simple_regret(selected, returns.min(), returns.max())})
  return pd.DataFrame(rows)


def rank_correlations(candidates: Candidates) -> pd.DataFrame:
  """Spearman's rho and Kendall's tau-b of each oriented criterion with the return.

  Returns:
    One row per (group, iteration, criterion): n (candidates with a finite value),
    spearman, kendall.
  """
  rows = []
  keys = candidates.group_by + ["iteration"]
  for key, group in candidates.table.groupby(keys, dropna=False, sort=True):
    key = key if isinstance(key, tuple) else (key,)
    returns = group["return"].to_numpy(float)
    for criterion in candidates.criteria:
      score = _oriented(group[criterion.name], criterion)
      ok = np.isfinite(score) & np.isfinite(returns)
      x, y = score[ok], returns[ok]
      defined = len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0
      rows.append({**dict(zip(keys, key)), "criterion": criterion.name, "n": len(x),
                   "spearman": float(stats.spearmanr(x, y).statistic) if defined else np.nan,
                   "kendall": float(stats.kendalltau(x, y).statistic) if defined else np.nan})
  return pd.DataFrame(rows)


_FIXED = ("iteration", "criterion", "selected", "selected_run", "n_tied", "criterion_value",
          "return_selected", "return_min", "return_max", "n_candidates", "regret", "n",
          "spearman", "kendall")


def _settings(table: pd.DataFrame) -> list:
  """Group columns other than game and seed (e.g. the agent in a per-agent sweep)."""
  return [c for c in table.columns if c not in _FIXED + ("game", "seed")]


def _mean_se(table: pd.DataFrame, value: str, keys: list) -> pd.DataFrame:
  def se(v):
    v = v.dropna()
    return v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
  out = table.groupby(keys, dropna=False, sort=False)[value].agg(["mean", se, "count"])
  return out.set_axis([f"{value}_mean", f"{value}_se", f"{value}_n"], axis=1).reset_index()


def _summarise(table: pd.DataFrame, values: Sequence[str]) -> pd.DataFrame:
  keys = ["criterion", "iteration"] + _settings(table)
  parts = []
  for value in values:
    per_game = _mean_se(table, value, keys + ["game"])
    per_seed = table.groupby(keys + ["seed"], dropna=False, sort=False)[value].mean()
    overall = _mean_se(per_seed.reset_index(), value, keys).assign(game=ALL_GAMES)
    parts.append(pd.concat([per_game, overall], ignore_index=True).set_index(keys + ["game"]))
  return _in_order(pd.concat(parts, axis=1).reset_index(), table["criterion"])


def _in_order(table: pd.DataFrame, criteria: pd.Series) -> pd.DataFrame:
  """Sorted by iteration, game ("all games" last), then criteria in their given order."""
  order = {c: i for i, c in enumerate(dict.fromkeys(criteria))}

  def key(column: pd.Series) -> pd.Series:
    if column.name == "criterion":
      return column.map(order)
    if column.name == "game":
      return column.astype(str).where(column.astype(str) != ALL_GAMES, "\uffff")
    return column
  return table.sort_values(["iteration", "game", "criterion"], kind="stable",
                           key=key).reset_index(drop=True)


def regret_summary(selected: pd.DataFrame) -> pd.DataFrame:
  """Mean simple regret and its SE over seeds, per (criterion, iteration, game), plus
  game "all games" (each seed's mean over games, then mean and SE over seeds).

  Columns: criterion, iteration, <settings>, game, regret_mean, regret_se, regret_n
  (seeds with a defined regret).
  """
  return _summarise(selected, ["regret"])


def correlation_summary(correlations: pd.DataFrame) -> pd.DataFrame:
  """Mean Spearman and Kendall correlations and their SE over seeds, as `regret_summary`."""
  return _summarise(correlations, ["spearman", "kendall"])


def improvement_over_online(selected: pd.DataFrame, stat: str = "median") -> pd.DataFrame:
  """Figure 20: 100 (M_criterion - M_online) / |M_online| per game, M = `stat` over seeds
  of the chosen candidates' returns; NaN when M_online == 0.

  Columns: criterion, iteration, <settings>, game, return_criterion, return_online,
  improvement_pct.
  """
  if ONLINE not in set(selected["criterion"]):
    raise SelectionError("offline policy selection: the improvement over online selection "
                         "needs the online choice (selections(..., online=True)).")
  keys = ["iteration"] + _settings(selected) + ["game"]
  agg = selected.groupby(keys + ["criterion"], dropna=False, sort=False)[
      "return_selected"].agg(stat).rename("return_criterion").reset_index()
  online = agg[agg["criterion"] == ONLINE].drop(columns="criterion").rename(
      columns={"return_criterion": "return_online"})
  out = agg[agg["criterion"] != ONLINE].merge(online, on=keys, how="left")
  base = out["return_online"].to_numpy(float)
  diff = out["return_criterion"].to_numpy(float) - base
  pct = np.full(len(out), np.nan)
  np.divide(100 * diff, np.abs(base), out=pct, where=base != 0)
  out["improvement_pct"] = pct
  return _in_order(out[["criterion"] + keys + ["return_criterion", "return_online",
                                               "improvement_pct"]], selected["criterion"])


# ---------------------------------------------------------------------- all at once
@dataclasses.dataclass
class PolicySelection:
  """Every table of one sweep's offline policy selection (`evaluate`)."""
  column: str
  iterations: list
  candidates: Candidates
  selections: pd.DataFrame
  regret: pd.DataFrame
  correlations: pd.DataFrame
  correlation_summary: pd.DataFrame
  improvement: pd.DataFrame
  problems: list


def evaluate(scalars: pd.DataFrame, column: Optional[str] = None,
             iterations: Optional[Iterable[int]] = None,
             criteria: Sequence[Criterion] = CRITERIA, return_tag: str = RETURN_TAG,
             skip_missing: bool = True, stat: str = "median") -> PolicySelection:
  """Selections, regret, rank correlations and improvement over online selection.

  Args:
    scalars: the tidy table of the competing runs (`Sweep.scalars`).
    column: the label the candidates differ in (default `detect_column`).
    iterations: where to select (default `default_iterations`).
    criteria, return_tag: as `candidate_table`.
    skip_missing: a criterion whose tags runs lack is left out with a problem stated
      (the default here, so that one missing diagnostic does not stop the rest).
    stat: the over-seeds statistic of `improvement_over_online`.
  """
  column = detect_column(scalars) if column is None else column
  problems = []
  if iterations is None:
    iterations = default_iterations(scalars, return_tag)
    last = scalars.groupby(scalars["run"].astype(str))["iteration"].max()
    if last.nunique() > 1:
      problems.append(f"runs stop at different iterations ({int(last.min())} to "
                      f"{int(last.max())}); selection is at iterations every run reached "
                      f"({iterations}).")
  candidates = candidate_table(scalars, column, iterations, criteria, return_tag,
                               skip_missing=skip_missing)
  problems += candidates.problems
  if not candidates.criteria:
    raise MissingTagError("offline policy selection: no criterion can be computed: "
                          + " ".join(candidates.problems))
  selected = selections(candidates)
  undefined = selected[selected["criterion"] == ONLINE]
  undefined = undefined[undefined["regret"].isna()]
  if len(undefined):
    problems.append(
        f"{len(undefined)} (group, iteration) pair(s) have candidates that all returned "
        "the same, so their regret is undefined (NaN) and left out of the means: "
        + _few([f"{g} seed {s} iteration {i}" for g, s, i in
                undefined[["game", "seed", "iteration"]].to_numpy()], 3) + ".")
  none = selected[(selected["n_tied"] == 0)]
  for name, rows in none.groupby("criterion", sort=False):
    problems.append(f"criterion {name!r} has no finite value among the candidates of "
                    f"{len(rows)} (group, iteration) pair(s); no choice, regret NaN there.")
  correlations = rank_correlations(candidates)
  return PolicySelection(
      column=column, iterations=list(iterations), candidates=candidates,
      selections=selected, regret=regret_summary(selected), correlations=correlations,
      correlation_summary=correlation_summary(correlations)
      if len(correlations) else correlations,
      improvement=improvement_over_online(selected, stat=stat), problems=problems)


def regret_markdown(summary: pd.DataFrame, column: str = "") -> str:
  """`regret_summary` as markdown: per iteration, a row per game, a column per criterion,
  cells "mean ± SE (n)"."""
  lines = ["# Offline policy selection", "",
           "Simple regret (R_selected - R_min) / (R_max - R_min) over the candidates"
           + (f" (runs differing in `{column}`)" if column else "")
           + " of each game and seed: 1 = the best candidate chosen, 0 = the worst. "
           "Mean ± standard error over seeds (n seeds).", ""]
  criteria = list(dict.fromkeys(summary["criterion"]))
  settings = [c for c in _settings(summary.drop(columns=["regret_mean", "regret_se",
                                                         "regret_n"]))
              if summary[c].astype(str).nunique() > 1]
  for iteration, block in summary.groupby("iteration", sort=True):
    lines += [f"## Iteration {iteration}", "",
              "| " + " | ".join(settings + ["game"] + criteria) + " |",
              "|" + " --- |" * (len(settings) + 1 + len(criteria))]
    for key, rows in block.groupby(settings + ["game"], sort=False, dropna=False):
      key = key if isinstance(key, tuple) else (key,)
      cells = rows.set_index("criterion")
      lines.append("| " + " | ".join([str(k) for k in key] + [
          _regret_cell(cells.loc[c]) if c in cells.index else "" for c in criteria]) + " |")
    lines.append("")
  return "\n".join(lines)


def _regret_cell(row: pd.Series) -> str:
  n = int(row["regret_n"])
  if np.isfinite(row["regret_se"]):
    return f"{row['regret_mean']:.2f} ± {row['regret_se']:.2f} ({n})"
  return f"{row['regret_mean']:.2f} ({n})"

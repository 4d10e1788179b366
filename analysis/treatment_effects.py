"""Average treatment effects of the empirical study (Gulcehre et al. 2022, Section 5).

Table 1, `rank_conditioning_ate`: the effect on (normalized) return of "setting" srank
high. srank cannot be intervened on, so the paper conditions on it: within a group of
runs (all, or those of one setting such as the activation function), the treated are
the observations with srank above the group's q-quantile, the control those at or
below it, and
    ATE_q = mean(return | srank > Q_q) - mean(return | srank <= Q_q),
with standard error sqrt(var_t / n_t + var_c / n_c) and the one-sided Welch t-test
p-value of H1: ATE > 0 (a p-value near 1 means the effect is negative; the paper's
table reads the same way). As the paper stresses, this is an association: srank is
confounded by the hyperparameters.

Table 3, `intervention_effects`: the effect of each intervention (a hyperparameter
changed from its control value) on srank, ATE = mean(srank | treatment value) -
mean(srank | control value), with SE as above and a two-sided Welch p-value. The other
hyperparameters are averaged over as the sweep sampled them (a full factorial or
random sweep makes this the effect averaged over them); `others="control"` instead
keeps only runs whose other factors are at their control values.
"""
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats


def _effect(treated: np.ndarray, control: np.ndarray, alternative: str) -> dict:
  treated, control = np.asarray(treated, float), np.asarray(control, float)
  row = {"n_treated": len(treated), "n_control": len(control), "ATE": np.nan,
         "SE": np.nan, "p_value": np.nan}
  if len(treated) == 0 or len(control) == 0:
    return row
  row["ATE"] = treated.mean() - control.mean()
  if len(treated) > 1 and len(control) > 1:
    row["SE"] = np.sqrt(treated.var(ddof=1) / len(treated) +
                        control.var(ddof=1) / len(control))
    if row["SE"] > 0:
      row["p_value"] = stats.ttest_ind(treated, control, equal_var=False,
                                       alternative=alternative).pvalue
  return row


def rank_conditioning_ate(data: pd.DataFrame, rank: str = "srank", outcome: str = "score",
                          quantiles: Sequence[float] = (0.25, 0.5, 0.75, 0.95),
                          group_by: Optional[str] = None) -> pd.DataFrame:
  """Table 1: effect on `outcome` of srank above its q-quantile, per group.

  Args:
    data: one row per observation (a run's final values, or one per run and iteration).
    rank, outcome: column names.
    quantiles: the q of the thresholds.
    group_by: optional column; rows "Combined" (all data) then one per value.

  Returns:
    One row per (group, quantile): threshold, n_treated, n_control, ATE, SE, p_value.
  """
  missing = [c for c in (rank, outcome) + ((group_by,) if group_by else ())
             if c not in data.columns]
  if missing:
    raise KeyError(f"columns {missing} not in the table (it has {list(data.columns)}).")
  data = data.dropna(subset=[rank, outcome])
  groups = [("Combined", data)]
  if group_by:
    groups += [(str(v), g) for v, g in data.groupby(group_by, observed=True, sort=True)]
  rows = []
  for name, group in groups:
    for q in quantiles:
      threshold = float(np.quantile(group[rank].to_numpy(float), q))
      treated = group.loc[group[rank] > threshold, outcome].to_numpy()
      control = group.loc[group[rank] <= threshold, outcome].to_numpy()
      rows.append({"group": name, "quantile": q, "threshold": threshold,
                   **_effect(treated, control, "greater")})
  return pd.DataFrame(rows)


def intervention_effects(data: pd.DataFrame, control: Mapping[str, object],
                         outcome: str = "srank",
                         treatments: Optional[Mapping[str, Iterable[object]]] = None,
                         others: str = "marginal") -> pd.DataFrame:
  """Table 3: effect on `outcome` of moving each factor from its control value.

  Args:
    data: one row per run with the factor columns and `outcome`.
    control: {factor column: control value}.
    outcome: the column the effect is measured on (srank by default).
    treatments: {factor: treatment values}; default every other value in the data.
    others: "marginal" (average over the other factors as sampled) or "control"
      (only runs whose other factors sit at their control values).

  Returns:
    One row per (factor, treatment): control, treatment, n_treated, n_control, ATE,
    SE, p_value (two-sided Welch).
  """
  if others not in ("marginal", "control"):
    raise ValueError(f"others must be 'marginal' or 'control', got {others!r}.")
  missing = [c for c in list(control) + [outcome] if c not in data.columns]
  if missing:
    raise KeyError(f"columns {missing} not in the table (it has {list(data.columns)}).")
  data = data.dropna(subset=[outcome])
  rows = []
  for factor, control_value in control.items():
    subset = data
    if others == "control":
      for other, value in control.items():
        if other != factor:
          subset = subset[subset[other] == value]
    values = (list(treatments[factor]) if treatments and factor in treatments else
              [v for v in pd.unique(subset[factor]) if v != control_value])
    base = subset.loc[subset[factor] == control_value, outcome].to_numpy()
    for value in values:
      treated = subset.loc[subset[factor] == value, outcome].to_numpy()
      rows.append({"factor": factor, "control": control_value, "treatment": value,
                   **_effect(treated, base, "two-sided")})
  return pd.DataFrame(rows)


def final_values(scalars: pd.DataFrame, tags: Mapping[str, str], last: int = 1,
                 per_iteration: bool = False) -> pd.DataFrame:
  """One row per run (or per run and iteration) with a column per tag.

  Args:
    scalars: `Sweep.scalars`.
    tags: {column name: tag}, e.g. {"srank": "Rank/srank", "score": "Eval/AverageReturn"}.
    last: final value = mean over the run's last `last` iterations.
    per_iteration: keep every iteration instead.
  """
  labels = [c for c in scalars.columns if c not in ("iteration", "tag", "value")]
  columns = []
  for name, tag in tags.items():
    data = scalars[scalars["tag"] == tag].sort_values("iteration")
    if data.empty:
      raise LookupError(f"no run logged {tag!r}.")
    if per_iteration:
      series = data.set_index(labels + ["iteration"])["value"]
    else:
      series = data.groupby(labels, observed=True, dropna=False, sort=False)["value"].apply(
          lambda v: v.iloc[-last:].mean())
    columns.append(series.rename(name))
  return pd.concat(columns, axis=1, join="inner").reset_index()

"""Statistics over seeds for stating a claim: t-intervals, verdicts, peaks and falls.

A claim compares per-seed numbers, usually paired (the same seed of two settings shares
its initialisation and data subsample), so its evidence is the mean of the per-seed
differences with a Student-t 95% confidence interval over seeds:

    mean +- t_{0.975, n-1} * std(d, ddof=1) / sqrt(n).

`verdict` turns that interval into one of three words, with the claim's predicted sign:
"reproduced" (the interval lies on the predicted side of 0), "reversed" (it lies on the
other side) or "not reproduced" (it contains 0, or there are fewer than two seeds).

Curves: `peak` is the iteration where a curve's centred moving average (the same
smoothing as analysis.phases) is largest, and `fall` how far the curve's final value
(mean of its last iterations) lies below that peak, as a fraction of the peak.
"""
from typing import Sequence

import numpy as np
from scipy import stats

from analysis import phases

REPRODUCED, REVERSED, NOT_REPRODUCED = "reproduced", "reversed", "not reproduced"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
  """(mean, half-width of the Student-t interval); the half-width is NaN below 2 values."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or len(x) == 0:
    raise ValueError(f"mean_ci needs a non-empty 1-D sequence, got shape {x.shape}.")
  mean = float(np.mean(x))
  if len(x) < 2:
    return mean, float("nan")
  t = stats.t.ppf(0.5 + confidence / 2, len(x) - 1)
  return mean, float(t * np.std(x, ddof=1) / np.sqrt(len(x)))


def verdict(mean: float, half_width: float, direction: int) -> str:
  """The claim's verdict from its interval; direction +1: the claim predicts mean > 0."""
  if direction not in (1, -1):
    raise ValueError(f"direction must be +1 or -1, got {direction!r}.")
  if not np.isfinite(half_width) or not np.isfinite(mean):
    return NOT_REPRODUCED
  low, high = direction * mean - half_width, direction * mean + half_width
  if low > 0:
    return REPRODUCED
  if high < 0:
    return REVERSED
  return NOT_REPRODUCED


def format_ci(mean: float, half_width: float, digits: int = 3) -> str:
  """'m ± h' with `digits` significant digits ('m' alone when h is NaN)."""
  if not np.isfinite(half_width):
    return f"{mean:.{digits}g}"
  return f"{mean:.{digits}g} ± {half_width:.{digits}g}"


def peak(iterations: Sequence[float], values: Sequence[float],
         window: int = 3) -> tuple[float, float]:
  """(iteration, smoothed value) where the `window`-wide moving average is largest.

  The first of equal maxima is taken.
  """
  it, smoothed = _smoothed(iterations, values, window)
  k = int(np.argmax(smoothed))
  return float(it[k]), float(smoothed[k])


def final(values: Sequence[float], last: int = 3) -> float:
  """Mean of the last `last` values (of a curve sorted by iteration)."""
  x = np.asarray(values, np.float64)
  if len(x) == 0:
    raise ValueError("final of an empty curve.")
  return float(np.mean(x[-last:]))


def fall(iterations: Sequence[float], values: Sequence[float], window: int = 3,
         last: int = 3) -> float:
  """(smoothed peak - final) / smoothed peak: 0 if the curve ends at its peak, 0.5 if it
  ends at half of it; NaN if the peak is not positive."""
  _, top = peak(iterations, values, window)
  order = np.argsort(np.asarray(iterations, np.float64), kind="stable")
  end = final(np.asarray(values, np.float64)[order], last)
  return float((top - end) / top) if top > 0 else float("nan")


def _smoothed(iterations, values, window):
  it = np.asarray(iterations, np.float64)
  x = np.asarray(values, np.float64)
  if it.shape != x.shape or x.ndim != 1 or len(x) == 0:
    raise ValueError(f"need two 1-D arrays of one length, got {it.shape} and {x.shape}.")
  order = np.argsort(it, kind="stable")
  return it[order], phases.smooth(x[order], window)

"""The three phases of learning of offline DQN (Gulcehre et al. 2022, Section 4), as a rule.

The paper describes the phases from the effective rank (srank) curve:
  Phase 1 (simple behaviours): srank collapses early ("self-pruning"), then slowly rises;
  Phase 2 (complex behaviours): srank increases and then usually flattens;
  Phase 3 (underfitting): srank collapses to a small value again, with many dead ReLU
    units, and the return often collapses too. Not every run reaches it (and a run that
    never learns complex behaviours stays in Phase 1).

It gives no numeric rule; this module's rule, on the srank curve alone (the paper:
"effective rank [is] sufficient to identify three phases"), is:

  1. Smooth: s = centred moving average of srank over `window` iterations (default
     max(1, n // 20), shrinking at the ends).
  2. Early minimum: m = argmin of s over the first `early_fraction` (0.5) of the run.
  3. Peak: p = argmax of s from m on.
  4. Phase 2 exists iff the rise is large: s[p] - s[m] >= `min_rise` (0.2) * s[p].
     Phase 2 then starts at the first iteration t >= m with
     s[t] >= s[m] + 0.5 * (s[p] - s[m])  (half-way up the rise).
  5. Phase 3 starts at the first iteration t > p with s[t] <= (1 - `collapse`) * s[p]
     (default collapse = 0.5: srank fell below half its peak), provided Phase 2 exists.

Returned boundaries are iteration numbers (the curve's x values). The dead-unit
fraction and the return are drawn beside srank in the figure for the reader to judge;
they do not enter the rule.
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PhaseRule:
  window: Optional[int] = None   # moving-average width; None: max(1, n // 20)
  early_fraction: float = 0.5    # where the early minimum is looked for
  min_rise: float = 0.2          # rise after the minimum, as a fraction of the peak
  collapse: float = 0.5          # Phase 3: srank below (1 - collapse) * peak


@dataclasses.dataclass(frozen=True)
class Phases:
  phase2_start: Optional[float]  # iteration, None if the run never leaves Phase 1
  phase3_start: Optional[float]  # iteration, None if no Phase 3
  minimum_at: float              # iteration of the early minimum of smoothed srank
  peak_at: float                 # iteration of the peak after it
  smoothed: np.ndarray

  def phase_of(self, iterations: Sequence[float]) -> np.ndarray:
    """1, 2 or 3 for each iteration."""
    it = np.asarray(iterations, dtype=float)
    phase = np.ones(it.shape, dtype=int)
    if self.phase2_start is not None:
      phase[it >= self.phase2_start] = 2
    if self.phase3_start is not None:
      phase[it >= self.phase3_start] = 3
    return phase


def smooth(values: Sequence[float], window: int) -> np.ndarray:
  """Centred moving average; the window shrinks at the ends (no padding)."""
  x = np.asarray(values, dtype=float)
  if window <= 1:
    return x.copy()
  csum = np.concatenate([[0.0], np.cumsum(x)])
  half_lo, half_hi = (window - 1) // 2, window // 2
  idx = np.arange(len(x))
  lo, hi = np.maximum(idx - half_lo, 0), np.minimum(idx + half_hi + 1, len(x))
  return (csum[hi] - csum[lo]) / (hi - lo)


def find_phases(iterations: Sequence[float], srank: Sequence[float],
                rule: PhaseRule = PhaseRule()) -> Phases:
  """Applies the module's rule to one srank curve (sorted by iteration)."""
  it = np.asarray(iterations, dtype=float)
  x = np.asarray(srank, dtype=float)
  if it.shape != x.shape or x.ndim != 1 or len(x) == 0:
    raise ValueError(f"need two 1-D arrays of one length, got {it.shape} and {x.shape}.")
  ok = np.isfinite(x)
  it, x = it[ok], x[ok]
  if len(x) == 0:
    raise ValueError("the srank curve has no finite values.")
  order = np.argsort(it, kind="stable")
  it, x = it[order], x[order]
  n = len(x)
  s = smooth(x, rule.window if rule.window is not None else max(1, n // 20))
  early = max(1, int(np.ceil(rule.early_fraction * n)))
  m = int(np.argmin(s[:early]))
  p = m + int(np.argmax(s[m:]))
  rise = s[p] - s[m]
  phase2 = phase3 = None
  if s[p] > 0 and rise >= rule.min_rise * s[p]:
    half = s[m] + 0.5 * rise
    phase2 = float(it[m + int(np.argmax(s[m:] >= half))])
    after = np.flatnonzero(s[p + 1:] <= (1 - rule.collapse) * s[p])
    if len(after):
      phase3 = float(it[p + 1 + after[0]])
  return Phases(phase2, phase3, float(it[m]), float(it[p]), s)

"""Fast CI version of the IUP gridworld claims (a) and (b); (c) is left out (cost, see below).

Full runs: experiments/gridworld_claims.py (docs/gridworld_claims.md).

16x16 grid16smoothobs, the spec's offline setting (10,000 uniform-policy transitions,
Adam 5e-3, batch 128), but only K = `ITERATIONS` fitting iterations and `SEEDS` seeds;
"final" = mean srank (all 256 states) over the last `WINDOW` iterations. The thresholds
come from the seed spread measured by running this file as a script:

  .venv/bin/python tests/test_gridworld_claims_fast.py --seeds=8

The measurement is recorded in the comment above the thresholds. Each assertion compares
a 3-seed mean with a threshold about 3 standard errors of a 3-seed mean away from the
measured mean, on the side the claim predicts; where the claim's effect is not detectable
at this scale, the assertion is the weaker statement the measurement supports (said so).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time

# One OpenBLAS thread (jaxlib's LAPACK calls: srank's SVD, Lp's eigh); effective when this
# module is the first to load OpenBLAS (e.g. `pytest tests/test_gridworld_claims_fast.py`).
# OpenBLAS's own threads compete with XLA's on a small CPU (docs/gridworld.md, "Lp cost").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
import optax
import pytest

from batch_rl.agents import regularizer_terms  # pylint: disable=g-import-not-at-top
from batch_rl.gridworld import data
from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks

ITERATIONS = 10
WINDOW = 5
ITERATIONS_OF = {}
SEEDS = (0, 1, 2)
SRANK = "Gridworld/srank_all_states"
RET = "Gridworld/NormalizedReturn"

BASE = fqi.FQIConfig()
VARIANTS = {
    "T=10": dataclasses.replace(BASE, gradient_steps=10),
    "T=200": dataclasses.replace(BASE, gradient_steps=200),
    "supervised": dataclasses.replace(BASE, gradient_steps=20, target=fqi.Target.Q_STAR,
                                      full_batch=True),
    "T=200 + Lp": dataclasses.replace(BASE, gradient_steps=200, regularizers=(
        regularizer_terms.LpRegularizer(1e-3, method="gram"),)),
}


@functools.lru_cache(maxsize=None)
def _env():
  env = env_lib.GridworldEnv()
  return env, data.env_arrays(env)


def run_variant(name: str, seeds, iterations: int | None = None,
                window: int | None = None) -> dict[str, np.ndarray]:
  """{srank_first, srank_final, return_final}: [seeds] arrays for one variant."""
  iterations = iterations or ITERATIONS_OF.get(name, ITERATIONS)
  window = window or min(WINDOW, iterations)
  env, arrays = _env()
  model = networks.mlp_model(env.features, env.num_actions)
  # The cheap variants are compile-bound: compile them fast (slower code, same maths).
  fast = VARIANTS[name].gradient_steps <= 20
  v_init, v_run = fqi.make_vmapped(VARIANTS[name], model, optax.adam(5e-3, eps=1e-8),
                                   fast_compile=fast)
  _, m = v_run(v_init(fqi.seed_keys(seeds), arrays), arrays, iterations)
  m = fqi.to_numpy(m)
  return {"srank_first": m[SRANK][:, 0],
          "srank_final": m[SRANK][:, -window:].mean(1),
          "return_final": m[RET][:, -window:].mean(1)}


# Measured seed spread, 8 seeds (0..7), K = 10, window 5 (command in the module docstring;
# shared, loaded 2-core CPU, 2026-11-22). Per-seed paired differences: mean, sd, and the
# standard error of a 3-seed mean (se3 = sd / sqrt 3):
#   srank(T=10) - srank(T=200), first iteration:   +8.38, sd 2.00, se3 1.15   <- detectable
#   srank(T=10) - srank(T=200), final window:      +2.08, sd 3.55, se3 2.05   <- not at K=10
#   return(T=10) - return(T=200), final window:    -0.11, sd 0.08, se3 0.05   <- REVERSED
#   srank(supervised) - srank(T=200), final:       +1.28, sd 3.27, se3 1.89   <- not at K=10
#   srank(supervised) final - first:               +0.45, sd 0.72, se3 0.42
#   srank(T=200) final - first:                    -5.58, sd 3.42, se3 1.97
#   (supervised drift) - (T=200 drift):            +6.03, sd 3.60, se3 2.08   <- detectable
#   normalised return final: T=10 0.67 sd 0.05, T=200 0.78 sd 0.06 (min over seeds 0.60)
# At K = 10 the T=200 collapse has not yet produced divergence, so the return half of (a)
# (worse return, seen at K = 100 in docs/gridworld_claims.md) is NOT testable here and is
# not asserted; nor is "supervised above both" at the end (it needs K >= 100). What is
# asserted is the part measurable at this scale, each threshold about 3 se3 from the
# measured mean on the claim's side:
#   (a) srank after the first fitting iteration is lower with T=200 (threshold 8.38 - 3 x
#       1.15 = 4.9), and at the end T=200 is not above T=10 (2.08 - 3 x 2.05 = -4.1);
#   (b) supervised regression does not lose srank (0.45 - 3 x 0.42 = -0.8) and its srank
#       drifts up relative to T=200's (6.03 - 3 x 2.08 = -0.2 -> 0, i.e. ~2.9 se3);
#   sanity, not a claim: both FQI runs learn (normalised return > 0.5; measured >= 0.60).
A_FIRST_MIN = 4.9
A_FINAL_MIN = -4.1
RETURN_MIN = 0.5
B_SUP_DRIFT_MIN = -0.8
B_DRIFT_VS_T200_MIN = 0.0


@pytest.fixture(scope="module")
def results():
  return {name: run_variant(name, SEEDS) for name in ("T=10", "T=200", "supervised")}


def test_a_more_gradient_steps_lower_srank(results):
  t10, t200 = results["T=10"], results["T=200"]
  assert np.mean(t10["srank_first"] - t200["srank_first"]) > A_FIRST_MIN
  assert np.mean(t10["srank_final"] - t200["srank_final"]) > A_FINAL_MIN
  # Not the claim (reversed at this K, see above): both runs learn something.
  assert np.mean(t10["return_final"]) > RETURN_MIN
  assert np.mean(t200["return_final"]) > RETURN_MIN


def test_b_supervised_keeps_srank(results):
  sup, t200 = results["supervised"], results["T=200"]
  sup_drift = sup["srank_final"] - sup["srank_first"]
  t200_drift = t200["srank_final"] - t200["srank_first"]
  assert np.mean(sup_drift) > B_SUP_DRIFT_MIN
  assert np.mean(sup_drift - t200_drift) > B_DRIFT_VS_T200_MIN


# (c) is NOT in this CI test, because of its cost, not its signal: it is one more compiled
# T = 200 program, about a minute more for this file on a small CPU (docs/gridworld.md,
# "Lp cost"). The effect IS detectable at K = 10 (measured with
# `--seeds=8 --only="T=200,T=200 + Lp"`, 2026-11-22, per-seed paired differences):
#   srank(T=200 + Lp) - srank(T=200), final window: +6.97, sd 2.77, se3 1.60
#     (per seed 8.2 7.0 3.8 1.6 9.0 8.8 8.8 8.6) -> a threshold of 6.97 - 3 x 1.60 = 2.2
#   srank(T=200 + Lp) final - first:               +1.02, sd 3.96, se3 2.29 (not detectable)
# so `np.mean(lp["srank_final"] - t200["srank_final"]) > 2.2` (3 seeds) is the assertion
# to add where a run of ~1 minute more is affordable. Per-seed values are not bit-stable
# across seed-batch sizes or compile options (3-seed run, seeds 0-2: 36.4 33.8 44.0
# vs 38.8 34.8 40.6 in the 8-seed run): rounding differences grow over 2,000 steps.
# The Lp code path (loss = TD + 0.001 Lp, the tag) is tested in test_gridworld_fqi.py and
# test_gridworld_train.py.


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--seeds", type=int, default=8)
  p.add_argument("--iterations", type=int, default=0)
  p.add_argument("--only", default="")
  args = p.parse_args()
  seeds = tuple(range(args.seeds))
  out = {}
  for name in (args.only.split(",") if args.only else VARIANTS):
    t = time.perf_counter()
    out[name] = run_variant(name, seeds, args.iterations or None)
    print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    for k, v in out[name].items():
      print(f"  {k}: {np.round(v, 2).tolist()} mean {v.mean():.2f} sd {v.std(ddof=1):.2f}")
  if args.only:
    return
  pairs = {
      "T10-T200 srank": out["T=10"]["srank_final"] - out["T=200"]["srank_final"],
      "T10-T200 return": out["T=10"]["return_final"] - out["T=200"]["return_final"],
      "sup-T200 srank": out["supervised"]["srank_final"] - out["T=200"]["srank_final"],
      "sup-T10 srank": out["supervised"]["srank_final"] - out["T=10"]["srank_final"],
      "sup final-first": out["supervised"]["srank_final"] - out["supervised"]["srank_first"],
      "T200 final-first": out["T=200"]["srank_final"] - out["T=200"]["srank_first"],
      "Lp-T200 srank": out["T=200 + Lp"]["srank_final"] - out["T=200"]["srank_final"],
  }
  for k, d in pairs.items():
    print(f"{k}: {np.round(d, 2).tolist()} mean {d.mean():+.2f} sd {d.std(ddof=1):.2f} "
          f"se(3 seeds) {d.std(ddof=1) / np.sqrt(3):.2f}")


if __name__ == "__main__":
  main()

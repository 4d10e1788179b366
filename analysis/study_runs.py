"""A launched study's finished runs as curves per seed, and claim rows over seeds: what
the experiments scripts read and tabulate.

    runs = study_runs.seed_curves("runs/continuous_control/offline")
    runs["cql"][0]["Rank/srank"]      # (iterations, values) of seed_0 of run "cql"

A study directory holds `study.json` (the launcher's record: each run's name, run
directory and bindings); a run that trained several seeds in one program holds
seed_<k>/ run directories, a solo run its events directly.
"""
import glob
import os
import re
from typing import Sequence

import numpy as np

from analysis import seed_statistics as ss
from batch_rl import summary_writer
from batch_rl.study import files as study_files

_NUM_ITERATIONS = re.compile(r"^\s*\w+Runner\.num_iterations\s*=\s*(\d+)\s*$")


def read_curves(run_dir: str) -> dict:
  """{tag: (iterations, values)}, the last value logged at each iteration."""
  out = {}
  for tag, by_step in summary_writer.read_scalars(run_dir).items():
    steps = sorted(by_step)
    out[tag] = (np.array(steps, np.float64),
                np.array([by_step[s][-1] for s in steps], np.float64))
  return out


def num_iterations(entry: dict) -> int:
  """The run's `<Runner>.num_iterations` from its study bindings (the last one), or 1."""
  found = [m.group(1) for b in entry.get("bindings", [])
           if (m := _NUM_ITERATIONS.match(b))]
  return int(found[-1]) if found else 1


def seed_dirs(run_dir: str) -> list[str]:
  """The run's seed_<k> directories in seed order, or the run directory itself."""
  found = sorted(glob.glob(os.path.join(run_dir, "seed_*")),
                 key=lambda d: int(d.rsplit("_", 1)[1]))
  return found or [run_dir]


def seed_curves(study_dir: str, tag: str = "Rank/srank") -> dict:
  """{run name: [curves of each seed]} of the study's runs whose every seed logged
  `tag` at all of the run's iterations (unfinished runs are left out)."""
  spec = study_files.read_json(os.path.join(study_dir, "study.json")) or {}
  runs = {}
  for entry in spec.get("runs", []):
    dirs = [d for d in seed_dirs(entry["run_dir"]) if summary_writer.event_files(d)]
    curves = [read_curves(d) for d in dirs]
    wanted = num_iterations(entry)
    if curves and all(len(c.get(tag, ((), ()))[1]) >= wanted for c in curves):
      runs[entry["name"]] = curves
  return runs


def wall_seconds(study_dir: str, name: str) -> float:
  """Seconds from start to end of a study's run (its study_status.json), NaN if unknown."""
  import datetime  # pylint: disable=g-import-not-at-top
  spec = study_files.read_json(os.path.join(study_dir, "study.json")) or {}
  for entry in spec.get("runs", []):
    if entry["name"] == name:
      status = study_files.read_json(os.path.join(entry["run_dir"], "study_status.json"))
      if status and status.get("started") and status.get("ended"):
        parse = lambda t: datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ")
        return (parse(status["ended"]) - parse(status["started"])).total_seconds()
  return float("nan")


def claim_row(label: str, values: Sequence[float], direction: int) -> dict:
  """The claim on `values` (one per seed): mean, 95% t-interval, verdict (direction
  +1: the claim predicts a positive mean)."""
  values = np.asarray(values, np.float64)
  mean, half = ss.mean_ci(values)
  return {"claim": label, "values": values, "mean": mean, "half": half,
          "verdict": ss.verdict(mean, half, direction)}


def missing_row(label: str, missing: Sequence[str]) -> dict:
  return {"claim": label, "missing": list(missing)}


def format_claim_row(row: dict) -> str:
  """| claim | per-seed values | mean ± CI | verdict | (or 'not run yet')."""
  if "missing" in row:
    return f"| {row['claim']} | - | - | not run yet ({', '.join(row['missing'])}) |"
  seeds = ", ".join(f"{v:.3g}" for v in row["values"])
  return (f"| {row['claim']} | {seeds} | {ss.format_ci(row['mean'], row['half'])} | "
          f"{row['verdict']} |")

"""A directory tree of runs -> one tidy table, cached.

    sweep = loading.load_sweep("runs/my_sweep")
    sweep.scalars   # run, game, domain, agent, seed, <hyperparameters>, iteration, tag, value
    sweep.runs      # one row per run: labels, hyperparameters, last iteration, complete
    sweep.problems  # what is missing or odd, one sentence each (also logged as warnings)

A run is a folder holding TensorBoard event files (`events.out.tfevents.*`), as written by
`batch_rl.offline.FixedReplayRunner` into its `base_dir`. The event files are read
with tbparse (on tensorboard's own event reader); the run's labels come from its gin
config, `config.gin` beside the events or else the `Config/gin` text summary.

The hyperparameter columns are the gin bindings whose values differ between runs of the
same agent (bindings that differ only between agents are what the agent label says;
paths and the run's own labels are left out, see `gin_config.NOT_HYPERPARAMETERS`).

Cache: the parsed runs are pickled in `$BATCH_RL_CACHE/analysis/<hash of logdir>.pkl`
(default ~/.cache/batch_rl). A run is read again only when the names, sizes or
modification times of its event files or its config.gin change, so reopening a sweep
reads only the runs still in progress. Runs still in progress or cut off are loaded
with the iterations they have; `runs.complete` says which reached `num_iterations`.
"""
import dataclasses
import hashlib
import logging
import os
import pickle
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pandas as pd

from analysis import gin_config

log = logging.getLogger("analysis")

EVENTS_PREFIX = "events.out.tfevents."
CONFIG_FILE = "config.gin"
CONFIG_TAG = "Config/gin"
RUN_COLUMNS = ("run", "game", "domain", "agent", "seed")
_CACHE_VERSION = 1


class LogdirError(ValueError):
  """The log directory does not exist or holds no runs."""


@dataclasses.dataclass
class RunData:
  """One run as read from disk (cached)."""
  scalars: pd.DataFrame          # iteration, tag, value
  config: Optional[dict]         # gin bindings, values made hashable; None if no config
  config_source: Optional[str]   # "config.gin", "Config/gin" or None
  problems: list


@dataclasses.dataclass
class Sweep:
  """Every run under a log directory."""
  logdir: str
  scalars: pd.DataFrame
  runs: pd.DataFrame
  hyperparameters: list
  problems: list

  @property
  def tags(self) -> list:
    return sorted(self.scalars["tag"].unique())

  def runs_missing(self, tag: str) -> list:
    """Runs that never logged `tag`."""
    have = set(self.scalars.loc[self.scalars["tag"] == tag, "run"])
    return [r for r in self.runs["run"] if r not in have]

  def require(self, tags: Iterable[str], what: str) -> list:
    """The tags of `tags` that some run has; warns about the rest, naming the runs.

    Raises:
      LookupError: no run logged any of `tags`.
    """
    tags = list(tags)
    present = [t for t in tags if t in set(self.tags)]
    if not present:
      raise LookupError(f"{what}: no run under {self.logdir} logged any of {tags} "
                        f"(tags there: {self.tags}).")
    for tag in present:
      missing = self.runs_missing(tag)
      if missing:
        self._warn(f"{what}: {len(missing)} run(s) lack {tag!r}: {_few(missing)}; drawn "
                   "without them.")
    for tag in set(tags) - set(present):
      self._warn(f"{what}: no run logged {tag!r}; left out.")
    return present

  def select(self, agents: Optional[Iterable[str]] = None, games=None, **hparams) -> "Sweep":
    """The runs of the given agents / games / hyperparameter values."""
    keep = pd.Series(True, index=self.runs.index)
    if agents is not None:
      keep &= self.runs["agent"].isin(list(agents))
    if games is not None:
      keep &= self.runs["game"].isin(list(games))
    for key, value in hparams.items():
      keep &= self.runs[key] == value
    runs = self.runs[keep]
    return dataclasses.replace(self, runs=runs,
                               scalars=self.scalars[self.scalars["run"].isin(runs["run"])])

  def wide(self, tags: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per (run, iteration), one column per tag, with the run's labels."""
    data = self.scalars if tags is None else self.scalars[self.scalars["tag"].isin(list(tags))]
    index = [c for c in data.columns if c not in ("tag", "value")]
    table = data.pivot_table(index=index, columns="tag", values="value", observed=True,
                             dropna=False).reset_index()
    table.columns.name = None
    return table.dropna(subset=[c for c in table.columns if c not in index], how="all")

  def _warn(self, message: str) -> None:
    if message not in self.problems:
      self.problems.append(message)
      log.warning(message)


def _few(items, n: int = 5) -> str:
  items = list(items)
  return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


# ---------------------------------------------------------------------- reading
def find_runs(logdir: str) -> list:
  """Folders under `logdir` (itself included) holding event files, relative, sorted."""
  if not os.path.isdir(logdir):
    raise LogdirError(f"{logdir}: no such directory.")
  runs = []
  for root, dirs, files in os.walk(logdir):
    # checkpoints/ holds no events; perturbed/ and hessian/ hold post-hoc results on the
    # run above them (batch_rl.runners.evaluate_perturbed, read by analysis.robustness;
    # batch_rl.runners.hessian_spectrum).
    dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                     and d not in ("checkpoints", "perturbed", "hessian"))
    if any(_is_event_file(f) for f in files):
      runs.append(os.path.relpath(root, logdir))
  if not runs:
    raise LogdirError(
        f"{logdir}: no TensorBoard event files ({EVENTS_PREFIX}*) under it. Pass the "
        "--base_dir of a run, or a folder holding runs' base_dirs.")
  return sorted(runs)


def _is_event_file(name: str) -> bool:
  return name.startswith(EVENTS_PREFIX) and not name.endswith(".tmp")


def signature(run_dir: str) -> tuple:
  """(name, size, mtime_ns) of the files a run's table is read from."""
  sig = []
  for name in sorted(os.listdir(run_dir)):
    if _is_event_file(name) or name == CONFIG_FILE:
      st = os.stat(os.path.join(run_dir, name))
      sig.append((name, st.st_size, st.st_mtime_ns))
  return tuple(sig)


def read_run(run_dir: str) -> RunData:
  """Reads one run's scalars and gin config (no labels, no cache)."""
  from tbparse import SummaryReader  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  problems = []
  files = sorted(f for f in os.listdir(run_dir) if _is_event_file(f))
  frames, texts = [], []
  for name in files:  # one file at a time: tbparse would merge subfolders (other runs)
    reader = SummaryReader(os.path.join(run_dir, name), pivot=False)
    frames.append(reader.tensors)
    frames.append(reader.scalars)  # tf.summary (TF2) writes tensors; older writers scalars
    texts.append(reader.text)
  scalars = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(
      len(f) for f in frames) else pd.DataFrame({"step": [], "tag": [], "value": []})
  scalars = scalars.rename(columns={"step": "iteration"})[["iteration", "tag", "value"]]
  # A step logged twice (a resumed run's duplicate) keeps its last value.
  scalars = scalars.drop_duplicates(["tag", "iteration"], keep="last")
  scalars = scalars.astype({"iteration": np.int64, "value": np.float64})
  scalars = scalars.sort_values(["tag", "iteration"], ignore_index=True)
  if scalars.empty:
    problems.append(f"run {run_dir}: its event files hold no scalars yet.")

  config, source = None, None
  config_path = os.path.join(run_dir, CONFIG_FILE)
  text = None
  if os.path.isfile(config_path):
    with open(config_path) as f:
      text, source = f.read(), CONFIG_FILE
  else:
    text_frame = pd.concat(texts, ignore_index=True) if texts else pd.DataFrame()
    if len(text_frame) and CONFIG_TAG in set(text_frame["tag"]):
      text = text_frame.loc[text_frame["tag"] == CONFIG_TAG, "value"].iloc[0]
      source = CONFIG_TAG
  if text is None:
    problems.append(f"run {run_dir}: no {CONFIG_FILE} and no {CONFIG_TAG!r} text summary; "
                    "its game, agent and seed are unknown.")
  else:
    try:
      config = {k: gin_config.hashable(v) for k, v in gin_config.parse(text).items()}
      config[gin_config.AGENT_KEY + ":label"] = gin_config.agent_label(
          gin_config.parse(text))
    except ValueError as e:
      problems.append(f"run {run_dir}: its {source} could not be read ({e}); its game, "
                      "agent and seed are unknown.")
      config, source = None, None
  return RunData(scalars, config, source, problems)


# ---------------------------------------------------------------------- cache
def default_cache_path(logdir: str) -> str:
  root = os.environ.get("BATCH_RL_CACHE", os.path.join(os.path.expanduser("~"), ".cache",
                                                       "batch_rl"))
  key = hashlib.sha1(os.path.realpath(logdir).encode()).hexdigest()[:16]
  return os.path.join(root, "analysis", f"{key}.pkl")


def _load_cache(path: str) -> dict:
  try:
    with open(path, "rb") as f:
      cache = pickle.load(f)
    return cache if cache.get("version") == _CACHE_VERSION else {}
  except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
    return {}


def _save_cache(path: str, cache: dict) -> None:
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "wb") as f:
      pickle.dump(cache, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)
  except OSError as e:
    log.warning("Could not write the analysis cache %s (%s); the next load reads the event "
                "files again.", path, e)


# ---------------------------------------------------------------------- the table
def load_sweep(logdir: str, cache: bool = True, cache_path: Optional[str] = None,
               agent_label: Optional[Callable[[str, Optional[dict]], str]] = None) -> Sweep:
  """Loads every run under `logdir` into one tidy table.

  Args:
    logdir: a run's base_dir or a folder of them (any depth).
    cache: reuse and update the pickle cache (False: read everything, write nothing).
    cache_path: where the cache lives (default `default_cache_path(logdir)`).
    agent_label: (run, config) -> agent label, replacing the default
      (`gin_config.agent_label`: "DQNAgent", "DQNAgent+LpRegularizer", ...).

  Raises:
    LogdirError: `logdir` does not exist or holds no event files.
  """
  run_names = find_runs(logdir)
  cache_path = cache_path or default_cache_path(logdir)
  stored = _load_cache(cache_path) if cache else {}
  entries = stored.get("runs", {})
  sigs = {name: signature(os.path.join(logdir, name)) for name in run_names}
  sweep_key = (tuple(sorted(sigs.items())), agent_label is None)
  if cache and stored.get("sweep_key") == sweep_key and "sweep" in stored:
    sweep = stored["sweep"]
    for message in sweep.problems:
      log.warning(message)
    return dataclasses.replace(sweep, logdir=logdir, problems=list(sweep.problems))

  changed = False
  for name in run_names:
    entry = entries.get(name)
    if entry is None or entry[0] != sigs[name]:
      entries[name] = (sigs[name], read_run(os.path.join(logdir, name)))
      changed = True
  entries = {name: entries[name] for name in run_names}
  sweep = _assemble(logdir, {name: e[1] for name, e in entries.items()}, agent_label)
  if cache and (changed or stored.get("sweep_key") != sweep_key):
    _save_cache(cache_path, {"version": _CACHE_VERSION, "runs": entries,
                             "sweep_key": sweep_key, "sweep": sweep})
  for message in sweep.problems:
    log.warning(message)
  return sweep


def _assemble(logdir: str, runs: dict, agent_label) -> Sweep:
  problems = [p for data in runs.values() for p in data.problems]
  rows = []
  for name, data in runs.items():
    config = data.config or {}
    label = (agent_label(name, data.config) if agent_label else
             config.get(gin_config.AGENT_KEY + ":label"))
    seed = config.get(gin_config.SEED_KEY, 0 if data.config is not None else None)
    last = int(data.scalars["iteration"].max()) if len(data.scalars) else -1
    planned = config.get(gin_config.NUM_ITERATIONS_KEY,
                         200 if data.config is not None else None)  # the Runner's default
    rows.append({
        "run": name,
        "game": str(config.get(gin_config.GAME_KEY, "Pong" if data.config is not None
                               else "unknown")),
        "domain": str(config.get(gin_config.DOMAIN_KEY, "atari" if data.config is not None
                                 else "unknown")),
        "agent": label or "unknown",
        "seed": seed,
        "last_iteration": last,
        "num_iterations": planned,
        "complete": planned is not None and last + 1 >= planned,
        "config_source": data.config_source,
    })
  table = pd.DataFrame(rows)
  table["seed"] = table["seed"].astype("Int64")
  hparams = _varying_bindings(runs, table)
  for key in hparams:
    table[key] = [(runs[n].config or {}).get(key) for n in table["run"]]
  incomplete = table.loc[~table["complete"] & table["num_iterations"].notna(), "run"]
  if len(incomplete):
    problems.append(f"{len(incomplete)} run(s) have fewer iterations than their "
                    f"num_iterations (in progress or cut off): {_few(incomplete)}.")

  frames = [data.scalars.assign(run=name) for name, data in runs.items() if len(data.scalars)]
  if frames:
    scalars = pd.concat(frames, ignore_index=True)
  else:
    scalars = pd.DataFrame({"iteration": pd.Series([], dtype=np.int64), "tag": [],
                            "value": pd.Series([], dtype=np.float64), "run": []})
  labels = table[list(RUN_COLUMNS) + hparams]
  scalars = scalars.merge(labels, on="run", how="left")
  scalars = scalars[list(RUN_COLUMNS) + hparams + ["iteration", "tag", "value"]]
  for column in ("run", "game", "domain", "agent", "tag"):
    scalars[column] = scalars[column].astype("category")
  if not len(scalars):
    problems.append(f"{logdir}: none of its {len(runs)} run(s) has logged a scalar yet.")
  return Sweep(logdir=logdir, scalars=scalars, runs=table, hyperparameters=hparams,
               problems=problems)


def _varying_bindings(runs: dict, table: pd.DataFrame) -> list:
  """Bindings that take more than one value (or are absent in some) among runs of one agent."""
  by_agent: dict = {}  # agent -> [configs]
  for name, agent in zip(table["run"], table["agent"]):
    if runs[name].config is not None:
      by_agent.setdefault(agent, []).append(runs[name].config)
  keys = sorted({k for configs in by_agent.values() for c in configs for k in c})
  varying = []
  for key in keys:
    if key in gin_config.NOT_HYPERPARAMETERS or key.endswith(":label"):
      continue
    for configs in by_agent.values():
      values = {_key(c.get(key, _ABSENT)) for c in configs}
      if len(values) > 1:
        varying.append(key)
        break
  return varying


_ABSENT = "<absent>"


def _key(value: Any) -> Any:
  return ("float", value) if isinstance(value, float) and np.isnan(value) else value

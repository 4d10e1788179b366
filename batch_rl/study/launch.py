"""Launching a study: which runs to start, recorded before an executor starts them.

`launch(study_file, study_dir, executor)`:
  1. loads and checks the study file, every run's gin config included (spec.load);
  2. checks that study_dir can be written;
  3. compares the runs with those study_dir/study.json recorded at the first launch:
     runs added, removed, or changed (other gin files or bindings). Any difference is
     refused unless `allow_changes`; then added runs are launched, and runs that
     changed only in how long they train (num_iterations) resume with the new value,
     while a changed run whose directory already holds a train.py run is still
     refused (train.py would stop it: one directory holds one run) and keeps its
     recorded definition until it is renamed in the study file or its directory is
     moved aside;
  4. selects the runs: done ones are skipped (status "done", or checkpoints through
     num_iterations), failed ones unless `retry_failed`, running ones always;
     pending, interrupted and stale ones are launched;
  5. writes study.json (the study file's text and the expanded runs) and each
     selected run's study_run.json, then hands the selected runs to the executor.
Steps 1-4 write nothing; every problem there is a ConfigError.

Executors: a module with `launch(runs: list[run.Run], study_dir: str, **options)`
returning {state: count} of the runs it saw finish (an executor that only submits may
return {}). `local` is batch_rl.study.executors.local; `slurm` and `ray` are
imported from batch_rl.study.executors.slurm and .ray_tasks when asked for. Options
that the executor's `launch` does not take are refused before anything is written.
"""
import dataclasses
import importlib
import importlib.util
import inspect
import os
import time
from typing import Any, Callable, Optional, Sequence

from batch_rl import validation
from batch_rl.study import archive as archive_lib
from batch_rl.study import files
from batch_rl.study import run as run_lib
from batch_rl.study import spec
from batch_rl.study import status as status_lib
from batch_rl.validation import ConfigError

EXECUTORS = {
    "local": "batch_rl.study.executors.local",
    "slurm": "batch_rl.study.executors.slurm",
    "ray": "batch_rl.study.executors.ray_tasks",
}
# What happens to a run at this launch.
LAUNCH = "launch"


@dataclasses.dataclass
class Changes:
  """How the study file's runs differ from those recorded in study.json."""
  added: list[str] = dataclasses.field(default_factory=list)
  removed: list[str] = dataclasses.field(default_factory=list)
  resumable: list[str] = dataclasses.field(default_factory=list)   # how long they train
  changed: list[str] = dataclasses.field(default_factory=list)     # other settings

  def __bool__(self) -> bool:
    return bool(self.added or self.removed or self.resumable or self.changed)

  def describe(self) -> str:
    parts = []
    for label, names in (("added", self.added), ("removed", self.removed),
                         ("changed in num_iterations/num_workers only", self.resumable),
                         ("changed", self.changed)):
      if names:
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8
                                        else "")
        parts.append(f"{len(names)} {label} ({shown})")
    return "; ".join(parts)


@dataclasses.dataclass
class Plan:
  """What a launch would do: every run of the study with its action ("launch" or why
  it is skipped), the runs to launch, and the differences from study.json."""
  study: spec.Study
  study_dir: str
  runs: list[run_lib.Run]
  actions: dict[str, str]
  changes: Changes
  record: list[run_lib.Run]   # the runs study.json will hold after this launch

  @property
  def selected(self) -> list[run_lib.Run]:
    return [r for r in self.runs if self.actions[r.name] == LAUNCH]


def _parameter(binding: str) -> str:
  return binding.split("=", 1)[0].strip()


def _only_resumable(old: run_lib.Run, new: run_lib.Run) -> bool:
  """Whether the runs differ only in bindings a rerun of train.py may change
  (runners/run_dir.RESUMABLE_CHANGES: num_iterations, num_workers)."""
  from batch_rl.runners import run_dir  # pylint: disable=g-import-not-at-top  (JAX)
  if old.gin_files != new.gin_files:
    return False
  keep = lambda bindings: [b for b in bindings if _parameter(b).rsplit(".", 1)[-1]
                           not in run_dir.RESUMABLE_CHANGES]
  return keep(old.bindings) == keep(new.bindings)


def _holds_run(run_dir: str) -> bool:
  """Whether train.py has written its run record in run_dir."""
  return any(os.path.exists(os.path.join(run_dir, name))
             for name in ("bindings.gin", "config.gin", "checkpoints"))


def read_record(study_dir: str) -> Optional[dict]:
  return files.read_json(os.path.join(study_dir, run_lib.STUDY_FILE))


def _recorded_runs(record: Optional[dict], study_dir: str) -> dict[str, run_lib.Run]:
  out = {}
  for r in (record or {}).get("runs", []):
    out[r["name"]] = run_lib.Run(
        name=r["name"], run_dir=os.path.join(os.path.abspath(study_dir),
                                             *r["name"].split("/")),
        gin_files=tuple(r["gin_files"]), bindings=tuple(r["bindings"]),
        axes=tuple(tuple(a) for a in r.get("axes", ())))
  return out


def check_study_dir(study_dir: str) -> None:
  """ConfigError unless study_dir could be created and written (nothing is created)."""
  validation.check_writable_dir(study_dir, "--study_dir",
                                "the directory the study's runs go to")


def plan(study: spec.Study, study_dir: str, retry_failed: bool = False,
         allow_changes: bool = False) -> Plan:
  """Decides what launching `study` into study_dir does; writes nothing."""
  runs = study.runs(study_dir)
  recorded = _recorded_runs(read_record(study_dir), study_dir)
  changes = Changes()
  current = {r.name for r in runs}
  if recorded:
    changes.removed = [name for name in recorded if name not in current]
  actions, record = {}, []
  for run in runs:
    old = recorded.get(run.name)
    if recorded and old is None:
      changes.added.append(run.name)
    elif old is not None and (old.gin_files, old.bindings) != (run.gin_files, run.bindings):
      if _only_resumable(old, run):
        changes.resumable.append(run.name)
      elif _holds_run(run.run_dir):
        changes.changed.append(run.name)
        actions[run.name] = ("refused: changed since the first launch, and its directory "
                             "holds the earlier run")
        record.append(old)
        continue
      else:
        changes.changed.append(run.name)
    record.append(run)
    actions[run.name] = _action(run, retry_failed, run.name in changes.resumable)
  if changes and not allow_changes:
    raise ConfigError(
        f"Study file {study.path} no longer matches the study in --study_dir={study_dir} "
        f"(recorded in {run_lib.STUDY_FILE} at its first launch): {changes.describe()}. "
        "Launch into a new --study_dir, or pass --allow_changes to launch the added runs "
        "(changed runs whose directories hold a run are left as they are).")
  return Plan(study=study, study_dir=study_dir, runs=runs, actions=actions,
              changes=changes, record=record)


def _action(run: run_lib.Run, retry_failed: bool, resumes: bool) -> str:
  s = status_lib.run_status(run.name, run.run_dir, run.bindings, scalars=False)
  if resumes:
    return LAUNCH
  if s.state == run_lib.DONE or (s.total and s.iteration >= s.total):
    return "skip: done"
  if s.state == run_lib.FAILED and not retry_failed:
    return "skip: failed (--retry_failed launches it again)"
  if s.state == run_lib.RUNNING:
    return f"skip: running (host {s.host}, pid {s.pid})"
  if s.state == run_lib.QUEUED:
    from batch_rl.study.executors import slurm  # pylint: disable=g-import-not-at-top
    listed = slurm.queued_in_slurm(s.job_id)
    if listed or listed is None:
      return (f"skip: queued in SLURM as job {s.job_id}" if listed else
              f"skip: queued as job {s.job_id} (squeue does not answer: cannot tell if "
              "it still waits)")
  return LAUNCH


def executor_launch(name: str) -> Callable[..., Any]:
  """The `launch` function of the executor called `name`; ConfigError if it is
  unknown or not installed."""
  module_name = EXECUTORS.get(name)
  if module_name is None:
    raise ConfigError(f"--executor={name} is not an executor; choose one of "
                      f"{sorted(EXECUTORS)}.")
  try:
    found = importlib.util.find_spec(module_name)
  except ModuleNotFoundError:
    found = None
  if found is None:
    raise ConfigError(f"--executor={name}: its module {module_name} is not in this "
                      "checkout; use another executor.")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"--executor={name}: {module_name} cannot be imported ({e}); "
                      "install what it needs or use another executor.") from None
  function = getattr(module, "launch", None)
  if not callable(function):
    raise ConfigError(f"--executor={name}: {module_name} has no launch(runs, study_dir, "
                      "**options) function.")
  return function


def check_options(name: str, function: Callable[..., Any], options: dict) -> None:
  """ConfigError naming the flags that executor `name` does not take."""
  try:
    parameters = inspect.signature(function).parameters
  except (TypeError, ValueError):
    return
  if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
    return
  unknown = sorted(set(options) - set(parameters))
  if unknown:
    flags = ", ".join(f"--{k}" for k in unknown)
    takes = sorted(k for k, p in parameters.items() if k not in ("runs", "study_dir")
                   and p.kind != inspect.Parameter.VAR_POSITIONAL)
    raise ConfigError(f"--executor={name} does not take {flags} (its launch function "
                      f"takes {', '.join(takes) or 'no options'}).")


def write_record(p: Plan) -> None:
  """study.json (study file, its text, the runs) and each selected run's
  study_run.json."""
  os.makedirs(p.study_dir, exist_ok=True)
  files.write_json(os.path.join(p.study_dir, run_lib.STUDY_FILE), {
      "name": p.study.name,
      "study_file": os.path.abspath(p.study.path),
      "text": p.study.text,
      "runs": [dataclasses.asdict(r) for r in p.record],
  })
  for run in p.selected:
    files.write_text(os.path.join(run.run_dir, run_lib.RUN_FILE), run.to_json() + "\n")


@dataclasses.dataclass
class Result:
  plan: Plan
  summary: dict   # what the executor returned: {state: count}


def launch(study_file: str, study_dir: str, executor: str, retry_failed: bool = False,
           allow_changes: bool = False, **executor_options) -> Result:
  """Loads, checks and launches the study (see the module docstring)."""
  study = spec.load(study_file)
  check_study_dir(study_dir)
  function = executor_launch(executor)
  check_options(executor, function, executor_options)
  p = plan(study, study_dir, retry_failed, allow_changes)
  write_record(p)
  if not p.selected:
    return Result(plan=p, summary={})
  summary = function(p.selected, study_dir, **executor_options)
  return Result(plan=p, summary=dict(summary or {}))


def script_options(executor: str, max_parallel: int = 1) -> dict:
  """The executor options an experiments script launches with: `max_parallel` runs at a
  time on this machine, or, on a cluster, waiting until the runs end."""
  return {"max_parallel": max_parallel} if executor == "local" else {"wait": True}


def launch_in_order(studies: Sequence[tuple[str, str, str]], executor: str,
                    max_parallel: int = 1, retry_failed: bool = False,
                    archive_dir: Optional[str] = None,
                    archive_checkpoints: Sequence[str] = ()) -> None:
  """Launches (name, study file, study directory) one study after another, printing a
  line per study, as the experiments scripts do before they report.

  With `archive_dir`, each study's archive (archive.py), archive_dir/<name>, is first
  restored into its study directory, so the runs it holds are skipped, and the finished
  runs are archived back into it when the study's launch returns or is interrupted
  (`archive_checkpoints`: the run-name patterns whose newest checkpoint is kept).

  Raises:
    SystemExit naming the study, and its status command, whose runs did not all end
    done; the later studies are not launched.
  """
  options = script_options(executor, max_parallel)
  start = time.perf_counter()
  for i, (name, path, study_dir) in enumerate(studies):
    t0 = time.perf_counter()
    archived = None if archive_dir is None else os.path.join(archive_dir, name)
    if archived is not None and os.path.isdir(archived):
      restored = archive_lib.archive(archived, study_dir)
      print(f"study {name}: {len(restored.copied)} finished run(s) restored from {archived}",
            flush=True)
    try:
      result = launch(path, study_dir, executor, retry_failed=retry_failed, **options)
    finally:
      if archived is not None and read_record(study_dir) is not None:
        print(f"study {name}: " + archive_lib.describe(
            archive_lib.archive(study_dir, archived, archive_checkpoints), archived),
              flush=True)
    failed = {k: v for k, v in result.summary.items() if k != "done"}
    if failed:
      raise SystemExit(f"{name}: runs ended {failed}; see `python -m batch_rl.study "
                       f"status {study_dir}`.")
    print(f"[{i + 1}/{len(studies)}] study {name}: {time.perf_counter() - t0:.0f} s "
          f"(elapsed {(time.perf_counter() - start) / 60:.1f} min)", flush=True)

"""Where each run of a study stands, read from the files of its run directory alone.

    python -m batch_rl.study status STUDY_DIR

A run's state is its study_status.json's (written by `job.run_one`), or `pending` if
there is none (`done` when its checkpoints already reach num_iterations: a run made
outside the launcher). A run whose status says `running` is `stale` when the process
that keeps it is gone: on this host, when neither its pid nor train.py's is alive;
elsewhere (another node of a cluster), when nothing in the run directory was written
for `stale_after` seconds. Progress is the completed iterations (checkpoints
ckpt_<iteration>.msgpack, as checkpointing.py names them for every runner) of
num_iterations (from config.gin, else the run's bindings); srank and return are the
last `Rank/srank` and `Eval/AverageReturn` in the newest event file of the run
directory or, for the gridworld (one events folder per seed, seed_<k>/), the mean over
its seeds. Nothing here imports JAX or TensorFlow: 200 runs take about a second.
"""
import dataclasses
import glob
import os
import re
import socket
import time
from typing import Optional, Sequence

from batch_rl.study import events
from batch_rl.study import files
from batch_rl.study import run as run_lib

STALE = "stale"
STATES = (run_lib.PENDING, run_lib.QUEUED, run_lib.RUNNING, STALE, run_lib.INTERRUPTED, run_lib.FAILED,
          run_lib.DONE)
# A run on another host with nothing written for this long is taken to be dead.
STALE_AFTER_S = 3600.0
SRANK_TAG = "Rank/srank"
RETURN_TAG = "Eval/AverageReturn"
_SEED_DIR = re.compile(r"^seed_-?\d+$")
# Member directories of a vmapped run: seed_<k>/, or lr_<rate>/seed_<k>/.
_MEMBER_GLOBS = ("seed_*", os.path.join("lr_*", "seed_*"))
_CHECKPOINT = re.compile(r"^ckpt_(\d+)\.msgpack$")
_RUNNER = re.compile(r"^\s*create_runner\.runner_fn\s*=\s*@([\w.]+)", re.M)
_NUM_ITERATIONS = re.compile(r"^\s*([\w.]+)\.num_iterations\s*=\s*(\d+)\s*$", re.M)
_EVENTS = "events.out.tfevents.*"


@dataclasses.dataclass
class RunStatus:
  """One run as its files describe it. `age`: seconds since anything of it was
  written (None if nothing was)."""
  name: str
  run_dir: str
  state: str
  attempt: Optional[int] = None
  iteration: int = 0
  total: Optional[int] = None
  srank: Optional[float] = None
  average_return: Optional[float] = None
  seeds: int = 0
  age: Optional[float] = None
  error: Optional[str] = None
  log: Optional[str] = None
  host: Optional[str] = None
  pid: Optional[int] = None
  job_id: Optional[str] = None


def completed_iterations(run_dir: str) -> int:
  """1 + the newest checkpoint's iteration; 0 without one. A run of vmapped seeds
  (`num_seeds`, one seed_<k>/ run directory per seed and no checkpoints/ of its own)
  has completed what all its seeds have."""
  try:
    names = os.listdir(os.path.join(run_dir, "checkpoints"))
  except OSError:
    seed_dirs = _seed_dirs(run_dir)
    return min(map(completed_iterations, seed_dirs)) if seed_dirs else 0
  found = [int(m.group(1)) for m in map(_CHECKPOINT.match, names) if m]
  return max(found) + 1 if found else 0


def _seed_dirs(run_dir: str) -> list[str]:
  """The member run directories (seed_<k>/, lr_<rate>/seed_<k>/) of a vmapped run."""
  return [d for d in _member_dirs(run_dir)
          if _SEED_DIR.match(os.path.basename(d))
          and os.path.isdir(os.path.join(d, "checkpoints"))]


def _member_dirs(run_dir: str) -> list[str]:
  return sorted(d for pattern in _MEMBER_GLOBS
                for d in glob.glob(os.path.join(run_dir, pattern)))


def num_iterations(run_dir: str, bindings: Sequence[str] = ()) -> Optional[int]:
  """The runner's num_iterations in run_dir/config.gin, else in `bindings`."""
  try:
    with open(os.path.join(run_dir, "config.gin"), encoding="utf-8") as f:
      text = f.read()
  except OSError:
    text = ""
  runner = _RUNNER.search(text)
  found = {m.group(1).rsplit(".", 1)[-1]: int(m.group(2))
           for m in _NUM_ITERATIONS.finditer(text)}
  if runner and runner.group(1).rsplit(".", 1)[-1] in found:
    return found[runner.group(1).rsplit(".", 1)[-1]]
  if len(found) == 1:
    return next(iter(found.values()))
  for binding in reversed(bindings):
    m = _NUM_ITERATIONS.match(binding)
    if m:
      return int(m.group(2))
  return None


def _last_values(run_dir: str) -> tuple[Optional[float], Optional[float], int]:
  """(srank, return, folders read): the newest values in each events folder of the
  run (run_dir itself, or its members' seed_<k>/ or lr_<rate>/seed_<k>/), averaged over folders."""
  folders = [run_dir] if glob.glob(os.path.join(run_dir, _EVENTS)) else sorted(
      _member_dirs(run_dir))
  per_tag: dict[str, list[float]] = {SRANK_TAG: [], RETURN_TAG: []}
  read = 0
  for folder in folders:
    paths = sorted(p for p in glob.glob(os.path.join(folder, _EVENTS))
                   if not p.endswith(".tmp"))
    found: dict[str, tuple[int, float]] = {}
    for path in reversed(paths):  # the newest file first; older ones for what it lacks
      for tag, value in events.last_scalars(path, [t for t in per_tag
                                                   if t not in found]).items():
        found[tag] = value
      if len(found) == len(per_tag):
        break
    read += bool(paths)
    for tag, (_, value) in found.items():
      per_tag[tag].append(value)
  mean = lambda values: sum(values) / len(values) if values else None
  return mean(per_tag[SRANK_TAG]), mean(per_tag[RETURN_TAG]), read


def _last_write(run_dir: str, log: Optional[str]) -> Optional[float]:
  paths = [os.path.join(run_dir, run_lib.STATUS_FILE), os.path.join(run_dir, "checkpoints")]
  paths += glob.glob(os.path.join(run_dir, _EVENTS))
  paths += [p for d in _member_dirs(run_dir) for p in glob.glob(os.path.join(d, _EVENTS))]
  if log:
    paths.append(log)
  times = []
  for path in paths:
    try:
      times.append(os.stat(path).st_mtime)
    except OSError:
      pass
  return max(times) if times else None


def _alive(pid: Optional[int]) -> bool:
  if not pid:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def run_status(name: str, run_dir: str, bindings: Sequence[str] = (),
               now: Optional[float] = None, stale_after: float = STALE_AFTER_S,
               scalars: bool = True) -> RunStatus:
  """The RunStatus of one run directory (`scalars` False skips the event files)."""
  now = time.time() if now is None else now
  status = files.read_json(os.path.join(run_dir, run_lib.STATUS_FILE)) or {}
  out = RunStatus(name=name, run_dir=run_dir, state=status.get("state", run_lib.PENDING),
                  attempt=status.get("attempt"), error=status.get("error"),
                  log=status.get("log"), host=status.get("host"), pid=status.get("pid"),
                  job_id=status.get("job_id"))
  out.iteration = completed_iterations(run_dir)
  out.total = num_iterations(run_dir, bindings)
  written = _last_write(run_dir, out.log)
  out.age = None if written is None else max(0.0, now - written)
  if not status and out.total and out.iteration >= out.total:
    out.state = run_lib.DONE
  if out.state == run_lib.RUNNING:
    if out.host == socket.gethostname():
      gone = not (_alive(out.pid) or _alive(status.get("train_pid")))
    else:
      gone = out.age is None or out.age > stale_after
    if gone:
      out.state = STALE
  if scalars:
    out.srank, out.average_return, out.seeds = _last_values(run_dir)
  return out


def recorded_runs(study_dir: str) -> list[tuple[str, Sequence[str]]]:
  """(name, bindings) of the study's runs: those study.json records, else every
  directory under study_dir holding a study_run.json."""
  record = files.read_json(os.path.join(study_dir, run_lib.STUDY_FILE))
  if record and isinstance(record.get("runs"), list):
    return [(r["name"], tuple(r.get("bindings", ()))) for r in record["runs"]]
  out = []
  for root, dirs, names in os.walk(study_dir):
    dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", run_lib.LOG_DIR))
    if run_lib.RUN_FILE in names:
      run = files.read_json(os.path.join(root, run_lib.RUN_FILE)) or {}
      out.append((os.path.relpath(root, study_dir), tuple(run.get("bindings", ()))))
      dirs[:] = []
  return out


def collect(study_dir: str, stale_after: float = STALE_AFTER_S,
            scalars: bool = True) -> list[RunStatus]:
  """The RunStatus of every run of the study in study_dir, in the study's order."""
  now = time.time()
  return [run_status(name, os.path.join(study_dir, *name.split("/")), bindings, now,
                     stale_after, scalars)
          for name, bindings in recorded_runs(study_dir)]


def format_age(seconds: Optional[float]) -> str:
  if seconds is None:
    return "-"
  for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
    if seconds >= size:
      return f"{seconds / size:.0f}{unit} ago"
  return f"{seconds:.0f}s ago"


def _number(value: Optional[float]) -> str:
  return "-" if value is None else f"{value:.4g}"


def summary_line(statuses: Sequence[RunStatus]) -> str:
  """'12 runs: 8 done, 2 running, 1 failed, 1 pending'."""
  counts = {state: 0 for state in STATES}
  for s in statuses:
    counts[s.state] = counts.get(s.state, 0) + 1
  parts = [f"{n} {state}" for state, n in sorted(
      counts.items(), key=lambda kv: STATES.index(kv[0]) if kv[0] in STATES else 99)
           if n]
  return f"{len(statuses)} run{'s' if len(statuses) != 1 else ''}: " + (
      ", ".join(parts) if parts else "none")


def format_table(statuses: Sequence[RunStatus]) -> str:
  """One line per run (name, state, iterations, srank, return, last write), failed
  runs followed by their error and log, then the summary line."""
  header = ("run", "state", "iteration", "srank", "return", "written")
  rows = []
  for s in statuses:
    total = "?" if s.total is None else str(s.total)
    rows.append((s.name, s.state, f"{s.iteration}/{total}", _number(s.srank),
                 _number(s.average_return), format_age(s.age)))
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
  out = [line(header)]
  for s, row in zip(statuses, rows):
    out.append(line(row))
    if s.state in (run_lib.FAILED, STALE, run_lib.INTERRUPTED) and (s.error or s.log):
      if s.error:
        out.append(f"    error: {s.error}")
      if s.log:
        out.append(f"    log: {s.log}")
  out.append(summary_line(statuses))
  return "\n".join(out)

"""A study's finished runs without their checkpoints: the files its reports read.

    python -m batch_rl.study archive STUDY_DIR DEST [--checkpoints 'dqn_10/seed_[0-2]']

Copies study.json and every run whose status is `done` into DEST, the same layout, with
everything but its checkpoints/ directories (its own and, for a run of several seeds
in one program, each seed_<k>'s): events, config.gin, bindings.gin, study_run.json,
study_status.json, logs/. For the runs whose names match a --checkpoints pattern
(fnmatch, repeatable) the newest checkpoint (with its arrays file, where it has one) of
each checkpoints/ directory is kept too, for what reads a trained
network afterwards (a fitted Q evaluation of its policy, perturbed evaluation). DEST is
a study directory: `status` reads it, the reports read it, and copying it back (this
command with the two swapped) before a `launch` makes the launcher skip the runs it
holds. That is how a long study accumulates on machines whose disks do not last:
archive what finished, keep the archive, restore it next time. Unfinished runs are
never copied (a partial run without its checkpoints could not resume), and a run
directory of DEST that already holds files of an unfinished run is left as it is
(reported), so an archive is never mixed into another run. Each run is copied to a
temporary folder beside its place and renamed into it, so an interrupted archive leaves
whole runs only.
"""
import dataclasses
import fnmatch
import os
import re
import shutil
from typing import Sequence

from batch_rl.study import files
from batch_rl.study import run as run_lib
from batch_rl.study import status as status_lib
from batch_rl.validation import ConfigError

_CHECKPOINT = re.compile(r"^ckpt_(\d+)\.msgpack$")


@dataclasses.dataclass
class ArchiveResult:
  copied: list[str] = dataclasses.field(default_factory=list)
  kept: list[str] = dataclasses.field(default_factory=list)         # already in DEST
  unfinished: list[str] = dataclasses.field(default_factory=list)   # not copied
  checkpoints: list[str] = dataclasses.field(default_factory=list)  # runs with one kept
  refused: list[str] = dataclasses.field(default_factory=list)  # DEST holds another run


def _checkpoint_dirs(run_dir: str) -> list[str]:
  """The run's checkpoints/ directories, relative to it: its own, and each seed's of a
  run that trained several seeds in one program (seed_<k>/checkpoints)."""
  found = []
  for parent, names, _ in os.walk(run_dir):
    if "checkpoints" in names:
      found.append(os.path.relpath(os.path.join(parent, "checkpoints"), run_dir))
      names.remove("checkpoints")
  return sorted(found)


def _newest_checkpoint(directory: str) -> list[str]:
  """The files of the newest checkpoint in a checkpoints/ directory (its .msgpack and,
  where there is one, the .arrays.npz beside it), or []."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  found = [(int(m.group(1)), n) for n in names if (m := _CHECKPOINT.match(n))]
  if not found:
    return []
  newest = max(found)[1]
  arrays = newest[:-len(".msgpack")] + ".arrays.npz"
  return [os.path.join(directory, n) for n in (newest, arrays) if n in names]


def _has_checkpoints(run_dir: str) -> bool:
  return any(_newest_checkpoint(os.path.join(run_dir, d)) for d in _checkpoint_dirs(run_dir))


def _is_done(run_dir: str) -> bool:
  status = files.read_json(os.path.join(run_dir, run_lib.STATUS_FILE)) or {}
  return status.get("state") == run_lib.DONE


def _occupied(run_dir: str) -> bool:
  """Whether run_dir holds anything of a run (the launcher's study_run.json aside)."""
  try:
    return any(name != run_lib.RUN_FILE for name in os.listdir(run_dir))
  except OSError:
    return False


def _copy_run(source: str, target: str, keep_checkpoint: bool) -> bool:
  """Copies one run into `target` through a temporary sibling; whether a checkpoint
  was kept."""
  parent = os.path.dirname(target)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(target)}.archive.{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    shutil.copytree(source, tmp, ignore=lambda d, names: (
        ["checkpoints"] if "checkpoints" in names else []))
    kept = False
    for directory in _checkpoint_dirs(source) if keep_checkpoint else []:
      for path in _newest_checkpoint(os.path.join(source, directory)):
        os.makedirs(os.path.join(tmp, directory), exist_ok=True)
        shutil.copy2(path, os.path.join(tmp, directory))
        kept = True
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
  except OSError as e:
    shutil.rmtree(tmp, ignore_errors=True)
    raise OSError(f"Could not archive {source} into {target}: {e}") from e
  return kept


def archive(study_dir: str, dest: str, checkpoints: Sequence[str] = ()) -> ArchiveResult:
  """Copies study_dir's finished runs into dest (see the module docstring)."""
  if not os.path.isdir(study_dir):
    raise ConfigError(f"{study_dir}: no such directory.")
  runs = status_lib.recorded_runs(study_dir)
  if not runs:
    raise ConfigError(f"{study_dir} holds no study: no {run_lib.STUDY_FILE} and no run "
                      f"directory with a {run_lib.RUN_FILE}.")
  if os.path.abspath(dest) == os.path.abspath(study_dir):
    raise ConfigError(f"The archive {dest} is the study directory itself.")
  record = os.path.join(study_dir, run_lib.STUDY_FILE)
  if os.path.exists(record):
    os.makedirs(dest, exist_ok=True)
    shutil.copy2(record, os.path.join(dest, run_lib.STUDY_FILE))
  result = ArchiveResult()
  for name, _ in runs:
    source = os.path.join(study_dir, *name.split("/"))
    target = os.path.join(dest, *name.split("/"))
    if not _is_done(source):
      (result.kept if _is_done(target) else result.unfinished).append(name)
      continue
    keep = any(fnmatch.fnmatchcase(name, pattern) for pattern in checkpoints)
    if _is_done(target) and not (keep and not _has_checkpoints(target)):
      result.kept.append(name)
      continue
    if _occupied(target) and not _is_done(target):
      result.refused.append(name)  # another run's files: never mixed or replaced
      continue
    if _copy_run(source, target, keep):
      result.checkpoints.append(name)
    result.copied.append(name)
  return result


def describe(result: ArchiveResult, dest: str) -> str:
  lines = [f"{len(result.copied)} run(s) archived into {dest}, {len(result.kept)} already "
           f"there, {len(result.unfinished)} unfinished and not copied."]
  if result.refused:
    lines.append(f"Not copied, since {dest} already holds another, unfinished run in "
                 f"their directories: {', '.join(result.refused)}.")
  if result.checkpoints:
    lines.append(f"Newest checkpoint kept for: {', '.join(result.checkpoints)}.")
  return "\n".join(lines)

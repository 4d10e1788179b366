r"""Studies of train.py runs: plan, launch and follow them.

    python -m batch_rl.study plan studies/gridworld_smoke.toml [--study_dir DIR]
    python -m batch_rl.study launch studies/gridworld_smoke.toml --study_dir runs/smoke \
        --executor local --max_parallel 2
    python -m batch_rl.study status runs/smoke
    python -m batch_rl.study archive runs/smoke results/smoke [--checkpoints PATTERN]

`plan` lists the runs (name and the settings that vary) and launches nothing; with
--study_dir it also says what `launch` would do with each. `launch` checks the whole
study first (batch_rl/study/launch.py), then hands the runs to the executor; the
executor flags are passed to it as keyword options (only those given). `status`
reads the study directory's files. `archive` copies the finished runs without their
checkpoints (batch_rl/study/archive.py). Exit status: 0; 2 the input is wrong (one `error:`
paragraph, nothing written); 1 some runs the executor reports on did not end done
(failed, interrupted, or never started because the launch was stopped).
"""
import argparse
import sys
from typing import Optional, Sequence

from batch_rl.validation import ConfigError

# Executor flags: name -> (type, help). Passed on as keyword options when given.
_EXECUTOR_FLAGS = {
    "max_parallel": (int, "local: runs at a time (default 1)"),
    "partition": (str, "slurm: partition"),
    "time_min": (int, "slurm: time limit of a job, minutes"),
    "gpus_per_run": (int, "slurm/ray: GPUs per run"),
    "cpus_per_run": (int, "slurm/ray: CPUs per run"),
    "mem_gb": (float, "slurm: memory per run, GB"),
    "max_requeue": (int, "slurm: requeues of a preempted run"),
    "array_parallelism": (int, "slurm: array tasks running at a time"),
    "ray_address": (str, "ray: address of the cluster (default: start one here)"),
}


def _key_value(text: str) -> tuple[str, str]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
  return key.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m batch_rl.study",
                                   description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  plan = commands.add_parser("plan", help="list the runs of a study file")
  plan.add_argument("study_file")
  plan.add_argument("--study_dir", default=None,
                    help="also say what launching into this directory would do")
  plan.add_argument("--retry_failed", action="store_true")
  plan.add_argument("--allow_changes", action="store_true")

  launch = commands.add_parser("launch", help="launch a study's runs")
  launch.add_argument("study_file")
  launch.add_argument("--study_dir", required=True, help="where the runs go")
  launch.add_argument("--executor", required=True, help="local, slurm or ray")
  launch.add_argument("--retry_failed", action="store_true",
                      help="launch failed runs again")
  launch.add_argument("--allow_changes", action="store_true",
                      help="launch a study file changed since the first launch "
                      "(its added runs)")
  for name, (kind, text) in _EXECUTOR_FLAGS.items():
    launch.add_argument(f"--{name}", type=kind, default=None, help=text)
  launch.add_argument("--sbatch", type=_key_value, action="append", default=None,
                      metavar="KEY=VALUE", help="slurm: extra sbatch option (repeatable)")
  launch.add_argument("--wait", action="store_true", default=None,
                      help="slurm/ray: block until the runs end")

  status = commands.add_parser("status", help="where each run of a study stands")
  status.add_argument("study_dir")
  status.add_argument("--stale_after", type=float, default=None,
                      help="seconds without a write after which a run on another "
                      "host counts as stale (default 3600)")

  archive = commands.add_parser("archive", help="copy a study's finished runs without "
                                "their checkpoints")
  archive.add_argument("study_dir")
  archive.add_argument("dest")
  archive.add_argument("--checkpoints", action="append", default=[], metavar="PATTERN",
                       help="keep the newest checkpoint of the runs whose names match "
                       "(fnmatch; repeatable)")
  return parser


def _executor_options(args: argparse.Namespace) -> dict:
  options = {name: getattr(args, name) for name in _EXECUTOR_FLAGS
             if getattr(args, name) is not None}
  if args.sbatch is not None:
    options["sbatch"] = dict(args.sbatch)
  if args.wait is not None:
    options["wait"] = args.wait
  return options


def format_plan(study, runs, actions: Optional[dict] = None) -> str:
  """A table of the runs (name, the value of each axis that varies, the action),
  then the count."""
  axes = [axis.name for axis in study.varying_axes()]
  header = ["run"] + axes + (["action"] if actions is not None else [])
  rows = []
  for run in runs:
    labels = dict(run.axes)
    rows.append([run.name] + [labels.get(a, "") for a in axes]
                + ([actions[run.name]] if actions is not None else []))
  widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
           for r in [header] + rows]
  sizes = " x ".join(f"{len(a.values)} {a.name}" for a in study.varying_axes())
  total = 1
  for axis in study.varying_axes():
    total *= len(axis.values)
  excluded = f", {total - len(runs)} excluded" if total != len(runs) else ""
  lines.append(f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
               + (f" ({sizes}{excluded})" if sizes else ""))
  if actions is not None:
    launching = sum(1 for a in actions.values() if a == "launch")
    lines.append(f"{launching} to launch, {len(actions) - launching} skipped.")
  return "\n".join(lines)


def _plan(args) -> int:
  from batch_rl.study import launch as launch_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.study import spec  # pylint: disable=g-import-not-at-top
  study = spec.load(args.study_file)
  print(f"Study {study.name} ({args.study_file})")
  if args.study_dir is None:
    print(format_plan(study, study.runs(".")))
    return 0
  p = launch_lib.plan(study, args.study_dir, args.retry_failed, args.allow_changes)
  if p.changes:
    print(f"Changed since the first launch: {p.changes.describe()}.")
  print(format_plan(study, p.runs, p.actions))
  return 0


def _launch(args) -> int:
  from batch_rl.study import launch as launch_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.study import run as run_lib  # pylint: disable=g-import-not-at-top
  result = launch_lib.launch(args.study_file, args.study_dir, args.executor,
                             retry_failed=args.retry_failed,
                             allow_changes=args.allow_changes,
                             **_executor_options(args))
  skipped = {}
  for action in result.plan.actions.values():
    if action != launch_lib.LAUNCH:
      skipped[action] = skipped.get(action, 0) + 1
  for action, n in sorted(skipped.items()):
    print(f"{n} run(s) not launched: {action}")
  if not result.plan.selected:
    print(f"Nothing to launch in {args.study_dir}.")
  unfinished = sum(n for state, n in result.summary.items() if state != run_lib.DONE)
  return 1 if unfinished else 0


def _status(args) -> int:
  import os  # pylint: disable=g-import-not-at-top
  from batch_rl.study import run as run_lib  # pylint: disable=g-import-not-at-top
  from batch_rl.study import status as status_lib  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(args.study_dir):
    raise ConfigError(f"{args.study_dir}: no such directory.")
  statuses = status_lib.collect(
      args.study_dir, **({} if args.stale_after is None else
                         {"stale_after": args.stale_after}))
  if not statuses:
    raise ConfigError(f"{args.study_dir} holds no study: no {run_lib.STUDY_FILE} and no "
                      f"run directory with a {run_lib.RUN_FILE}.")
  print(status_lib.format_table(statuses))
  return 0


def _archive(args) -> int:
  from batch_rl.study import archive as archive_lib  # pylint: disable=g-import-not-at-top
  result = archive_lib.archive(args.study_dir, args.dest, args.checkpoints)
  print(archive_lib.describe(result, args.dest))
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    return {"plan": _plan, "launch": _launch, "status": _status,
            "archive": _archive}[args.command](args)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except OSError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


if __name__ == "__main__":
  sys.exit(main())

"""python -m batch_rl.data {inspect,convert,subsample,verify}: DQN Replay dataset tools.

  inspect    summary of a replay_logs directory or converted store (headers only, fast)
  convert    one-time conversion of .gz checkpoints (REPLAY_DIR) or of RL Unplugged
             in TFDS (--tfds_name, --tfds_data_dir) into an uncompressed memory-mapped
             store (bind `load_fixed_replay.store_dir` to use it)
  subsample  write a named subset as a smaller Dopamine-format dataset
  verify     decompress everything, checksum every file, store statistics; exit 1 and
             name the files if any is truncated, corrupt or missing
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from batch_rl.datasets import subsampling


def _suffixes(text):
  return None if text is None else [int(s) for s in text.split(",") if s.strip()]


def _progress_enabled() -> bool:
  return sys.stderr.isatty() or os.environ.get("BATCH_RL_PROGRESS") == "1"


def _bar(total, desc, unit="ckpt"):
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
              disable=not _progress_enabled())


def cmd_inspect(args) -> int:
  from batch_rl.datasets import subset  # pylint: disable=g-import-not-at-top
  print(subset.inspect(args.path))
  return 0


def cmd_convert(args) -> int:
  from batch_rl.datasets import store  # pylint: disable=g-import-not-at-top
  if len(args.paths) > 2:
    raise ValueError(f"convert: expected [REPLAY_DIR] STORE, got {args.paths}.")
  args.replay_dir = args.paths[0] if len(args.paths) == 2 else None
  args.store = args.paths[-1]
  if bool(args.replay_dir) == bool(args.tfds_name):
    raise ValueError("convert: give either REPLAY_DIR (Dopamine-format .gz checkpoints) or "
                     "--tfds_name with --tfds_data_dir (RL Unplugged in TFDS); got "
                     + ("both." if args.replay_dir else "neither.") +
                     " Usage: convert REPLAY_DIR STORE, or convert --tfds_name NAME "
                     "--tfds_data_dir DIR STORE.")
  workers = {} if args.workers is None else {"num_workers": args.workers}
  if args.tfds_name:
    if not args.tfds_data_dir:
      raise ValueError("convert --tfds_name needs --tfds_data_dir (the TFDS data_dir, local "
                       "or gs://).")
    out = store.convert_tfds(args.tfds_name, args.tfds_data_dir, args.store,
                             _suffixes(args.suffixes), stack_size=args.stack_size,
                             progress=True, **workers)
  else:
    if args.tfds_data_dir or args.stack_size != 4:
      raise ValueError("convert: --tfds_data_dir and --stack_size apply to --tfds_name only.")
    out = store.convert(args.replay_dir, args.store, _suffixes(args.suffixes),
                        progress=True, **workers)
  print(f"Store {out.path}: checkpoints {list(out.suffixes)}, "
        f"{out.observation.nbytes / 1e9:.2f} GB of frames. Train from it with "
        f"--gin_bindings=\"load_fixed_replay.store_dir='{out.path}'\"")
  return 0


def cmd_subsample(args) -> int:
  from batch_rl.datasets import subset  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import store  # pylint: disable=g-import-not-at-top
  suffixes = _suffixes(args.suffixes)
  if suffixes:
    total = len(suffixes)
  elif store.is_store(args.replay_dir):
    total = len(store.open_store(args.replay_dir).suffixes)
  else:
    total = len(fmt.list_suffixes(args.replay_dir))
  bar = _bar(total, "write")
  written = subset.write_subset(
      args.replay_dir, args.out_dir, args.scheme, data_fraction=args.fraction,
      num_transitions=args.num_transitions, seed=args.seed, suffixes=suffixes,
      stack_size=args.stack_size, update_horizon=args.update_horizon,
      on_checkpoint=lambda _: bar.update(1))
  bar.close()
  print(f"Wrote {sum(written.values()):,} transitions ({args.scheme}, seed {args.seed}) to "
        f"{args.out_dir}: " + ", ".join(f"ckpt {s}: {n:,}" for s, n in written.items()))
  return 0


def cmd_verify(args) -> int:
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import verify  # pylint: disable=g-import-not-at-top
  output = args.output or os.path.join(args.replay_dir, "verify.json")
  previous = verify.read_report(output)
  suffixes = _suffixes(args.suffixes)
  found = set(fmt.list_suffixes(args.replay_dir)) | set(fmt.incomplete_suffixes(args.replay_dir))
  bar = _bar(len(suffixes) if suffixes else len(found), "verify")
  report = verify.verify(args.replay_dir, suffixes, stack_size=args.stack_size,
                         on_checkpoint=lambda _: bar.update(1))
  bar.close()
  changed = verify.changed_files(previous, report) if previous else []
  report["changed_since_last_verify"] = changed
  verify.write_report(report, output)
  t = report["totals"]
  print(f"{len(report['checkpoints'])} checkpoint(s): {t['stored_transitions']:,} stored, "
        f"{t['valid_transitions']:,} valid transitions, {t['episodes_ended']:,} episode ends. "
        f"Report: {output}")
  for name in changed:
    print(f"CHANGED since the last verify: {name}")
  for note in report["notes"]:
    print(f"NOTE: {note}")
  for error in report["errors"]:
    print(f"ERROR: {error}")
  return 1 if report["errors"] or changed else 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m batch_rl.data", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("inspect", help="summarise a replay directory or store")
  p.add_argument("path", help="replay_logs directory (or <root>/<Game>/<run>), or a store")
  p.set_defaults(run=cmd_inspect)

  p = sub.add_parser(
      "convert", help="convert .gz checkpoints or RL Unplugged (TFDS) into a memory-mapped store",
      usage="%(prog)s [-h] (REPLAY_DIR | --tfds_name NAME --tfds_data_dir DIR) STORE "
            "[--suffixes S] [--workers N] [--stack_size N]")
  # One list (main() adds paths that follow an option): argparse cannot match an
  # optional positional before a required one.
  p.add_argument("paths", nargs="+", metavar="[REPLAY_DIR] STORE",
                 help="REPLAY_DIR: source replay_logs directory (local or gs://), not given "
                 "with --tfds_name; STORE: local directory to create (must not exist)")
  p.add_argument("--tfds_name", help="instead of REPLAY_DIR: RL Unplugged Atari in TFDS, e.g. "
                 "rlu_atari_checkpoints_ordered/Pong_run_1")
  p.add_argument("--tfds_data_dir", help="the TFDS data_dir holding --tfds_name (local or gs://)")
  p.add_argument("--suffixes", help="comma-separated checkpoints (default: all)")
  p.add_argument("--workers", type=int, default=None,
                 help="checkpoints decoded at once (default 2 for REPLAY_DIR, 1 for TFDS: "
                 "each TFDS worker holds one episode's frames in RAM)")
  p.add_argument("--stack_size", type=int, default=4,
                 help="with --tfds_name: frame stack the episode padding is laid out for")
  p.set_defaults(run=cmd_convert)

  p = sub.add_parser("subsample", help="write a named subset as a Dopamine-format dataset")
  p.add_argument("replay_dir", help="source replay_logs directory, or a converted store")
  p.add_argument("out_dir", help="directory for the subset's checkpoint files")
  p.add_argument("--scheme", choices=subsampling.SCHEMES, default="uniform_transitions",
                 help="how the subset is chosen (docs/datasets.md)")
  size = p.add_mutually_exclusive_group(required=True)
  size.add_argument("--fraction", type=float, default=1.0, help="fraction of valid transitions")
  size.add_argument("--num_transitions", type=int, help="number of valid transitions")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--suffixes", help="comma-separated checkpoints (default: all)")
  p.add_argument("--stack_size", type=int, default=4)
  p.add_argument("--update_horizon", type=int, default=1,
                 help="largest n-step horizon the subset must support")
  p.set_defaults(run=cmd_subsample)

  p = sub.add_parser("verify", help="checksums, statistics, truncated/corrupt file detection")
  p.add_argument("replay_dir", help="replay_logs directory (local or gs://)")
  p.add_argument("--output", help="report path (default: <replay_dir>/verify.json); an "
                 "earlier report there is compared with and files that changed are named")
  p.add_argument("--suffixes", help="comma-separated checkpoints (default: all)")
  p.add_argument("--stack_size", type=int, default=4)
  p.set_defaults(run=cmd_verify)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  if extra and getattr(args, "paths", None) is not None and not any(
      e.startswith("-") for e in extra):
    args.paths += extra  # convert's paths on both sides of an option (argparse splits them)
  elif extra:
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import store  # pylint: disable=g-import-not-at-top
  try:
    return args.run(args)
  except (fmt.ReplayFormatError, store.StoreError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


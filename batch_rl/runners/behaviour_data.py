"""One online run from gin bindings alone, in its own process: the behaviour runs that
log datasets (datasets/behaviour_logging.py: the bsuite and MuJoCo datasets).

  python -m batch_rl.runners.behaviour_data BASE_DIR BINDING [BINDING ...]

A fresh process parses only these bindings, so nothing of the run that asked for the
dataset (its network, its optimizer) reaches the behaviour agent. Exit status as
train.py's: 0 done, 2 bad bindings, 1 the run failed.
"""
import sys


def main(argv: list[str]) -> int:
  if len(argv) < 2:
    print(__doc__, file=sys.stderr)
    return 2
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl import validation  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import common  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import registry  # pylint: disable=g-import-not-at-top
  base_dir, bindings = argv[0], argv[1:]
  try:
    config_lib.parse_gin([], bindings)
    registry.create_runner(base_dir=base_dir).run()
  except common.RUN_ERRORS as e:
    print(f"error: {validation.error_message(e)}", file=sys.stderr)
    return 1
  except config_lib.USER_ERRORS as e:
    print(f"error: {validation.error_message(e)}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  import logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO)
  sys.exit(main(sys.argv[1:]))

r"""Trains an agent (offline on fixed replay data, online, or in the gridworld lab).

  python train.py --base_dir=/tmp/quickstart --gin_files=gin_configs/quickstart.gin
  python train.py --base_dir=runs/pong_dqn_s1 --gin_files=gin_configs/offline/dqn.gin \
      --gin_bindings="load_fixed_replay.data_root='/data/dqn_replay'" \
      --gin_bindings="FixedReplayRunner.game='Pong'" --gin_bindings="FixedReplayRunner.seed=1"

Rerunning the same command resumes from the last completed iteration.

Exit status: 0 done; 2 the input is wrong (a gin file or binding, a path, the data), and
nothing was trained; 1 a run that started failed (it diverged, or a write failed),
with its last good checkpoint kept; 3 it stopped on SIGTERM or SIGUSR2 (preemption,
a time limit) after checkpointing its position, and rerunning continues there. Errors are one paragraph; --verbose (or
BATCH_RL_VERBOSE=1) adds the traceback.
"""
import os
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string("base_dir", None, "Directory of this run (TensorBoard events, "
                    "config.gin, checkpoints/).")
flags.DEFINE_multi_string("gin_files", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files "
                          "(e.g. \"FixedReplayRunner.seed=1\").")
flags.DEFINE_bool("restart", False, "Start afresh: move an earlier run in --base_dir "
                  "aside (renamed to <base_dir>.old-<time>, never deleted).")
flags.DEFINE_bool("verbose", False, "Print the traceback of an error too.")
FLAGS = flags.FLAGS
PREEMPTED_EXIT = 3  # batch_rl.study.run.PREEMPTED_EXIT


def _fail(error: BaseException, status: int) -> None:
  if FLAGS.verbose or os.environ.get("BATCH_RL_VERBOSE") == "1":
    traceback.print_exc()
  from batch_rl import validation  # pylint: disable=g-import-not-at-top
  print(f"error: {validation.error_message(error)}", file=sys.stderr)
  sys.exit(status)


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  # Imported here so that --help answers without importing JAX and TensorFlow. The stop
  # module first: a SIGTERM during the imports and set-up then exits 3 as well.
  from batch_rl.runners import stop_signal  # pylint: disable=g-import-not-at-top
  stop_signal.stop_until_training()
  try:
    from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
    from batch_rl.runners import common  # pylint: disable=g-import-not-at-top
    from batch_rl.runners import registry  # pylint: disable=g-import-not-at-top
    from batch_rl.runners import run_dir  # pylint: disable=g-import-not-at-top
    config_lib.parse_gin(FLAGS.gin_files, FLAGS.gin_bindings)
    if FLAGS.restart:
      run_dir.move_aside(FLAGS.base_dir)
    runner = registry.create_runner(base_dir=FLAGS.base_dir)
    runner.run()
  except stop_signal.Preempted as e:
    print(f"stopped: {e}", file=sys.stderr)
    sys.exit(PREEMPTED_EXIT)
  except common.RUN_ERRORS as e:
    _fail(e, 1)
  except config_lib.USER_ERRORS as e:
    _fail(e, 2)
  print(f"\nDone. Logs, config and checkpoints are in {FLAGS.base_dir}\n"
        f"  tensorboard --logdir {FLAGS.base_dir}")


if __name__ == "__main__":
  flags.mark_flag_as_required("base_dir")
  app.run(main)

r"""Trains an agent on fixed replay data (DQN Replay format) and evaluates it online.

  python train.py --base_dir=/tmp/quickstart --gin_files=gin_configs/quickstart.gin
  python train.py --base_dir=runs/pong_dqn_s1 --gin_files=gin_configs/offline/dqn.gin \
      --gin_bindings="load_fixed_replay.data_root='/data/dqn_replay'" \
      --gin_bindings="FixedReplayRunner.game='Pong'" --gin_bindings="FixedReplayRunner.seed=1"

Rerunning the same command resumes from the last completed iteration.
"""
import sys

from absl import app
from absl import flags
from absl import logging

flags.DEFINE_string("base_dir", None, "Directory of this run (TensorBoard events, "
                    "config.gin, checkpoints/).")
flags.DEFINE_multi_string("gin_files", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files "
                          "(e.g. \"FixedReplayRunner.seed=1\").")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  # Imported here so that --help answers without importing JAX and TensorFlow.
  from batch_rl import config as config_lib  # pylint: disable=g-import-not-at-top
  from batch_rl import run_experiment  # pylint: disable=g-import-not-at-top
  try:
    config_lib.parse_gin(FLAGS.gin_files, FLAGS.gin_bindings)
    runner = run_experiment.create_runner(base_dir=FLAGS.base_dir)
  except config_lib.USER_ERRORS as e:
    sys.exit(f"error: {e}")
  runner.run()
  print(f"\nDone. Logs, config and checkpoints are in {FLAGS.base_dir}\n"
        f"  tensorboard --logdir {FLAGS.base_dir}")


if __name__ == "__main__":
  flags.mark_flag_as_required("base_dir")
  app.run(main)

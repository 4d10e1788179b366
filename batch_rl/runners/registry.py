"""`create_runner`: the runner train.py builds, chosen in gin."""
from typing import Callable

import gin

from batch_rl.runners import gridworld  # pylint: disable=unused-import (registers it)
from batch_rl.runners import offline
from batch_rl.runners import online  # pylint: disable=unused-import (registers it)


@gin.configurable(denylist=["base_dir"])
def create_runner(base_dir: str, runner_fn: Callable[..., object] = offline.FixedReplayRunner):
  """`create_runner.runner_fn = @OnlineRunner` (or @GridworldRunner) in gin; the
  default is offline training, FixedReplayRunner. Every runner takes `base_dir` and
  offers `run()`."""
  return runner_fn(base_dir=base_dir)

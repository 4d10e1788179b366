"""The quickstart's embedded dataset: MinAtar Breakout logged in the DQN Replay format.

No download is needed: the first run logs a behaviour policy through the real
environment with `ReplayLogger` (the same recording semantics as the DQN Replay
dataset) into a cache folder, and later runs reuse it. The behaviour policy is a
ball-tracking controller mixed with uniform random actions, with a per-episode
exploration rate drawn from [0, 1], so the data mixes good and poor play, roughly as
the replay of a learning agent does. Generation is deterministic by seed and atomic:
it writes into a temporary folder that is renamed into place when complete.
"""
import logging
import os
import shutil
import tempfile
import time
from typing import Optional

import gin
import numpy as np

from batch_rl.environments.minatar import MinAtarEnvironment
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets.replay_logger import ReplayLogger

log = logging.getLogger("batch_rl")

# MinAtar Breakout channels and its minimal actions (no-op, left, right); the
# quickstart binds `MinAtarEnvironment.minimal_action_set = True` to match.
_PADDLE, _BALL, _TRAIL = 0, 1, 2
_NOOP, _LEFT, _RIGHT = 0, 1, 2


def tracking_action(frame: np.ndarray) -> int:
  """Moves the paddle toward where the ball will be next step. frame: [10, 10, 4]."""
  paddle = np.flatnonzero(frame[9, :, _PADDLE])
  ball = np.argwhere(frame[:, :, _BALL])
  trail = np.argwhere(frame[:, :, _TRAIL])
  if paddle.size == 0 or ball.size == 0:
    return _NOOP
  ball_x = ball[0][1]
  dx = ball_x - trail[0][1] if trail.size else 0
  target = int(np.clip(ball_x + dx, 0, 9))
  if target < paddle[0]:
    return _LEFT
  if target > paddle[0]:
    return _RIGHT
  return _NOOP


def default_cache_dir() -> str:
  return os.environ.get("BATCH_RL_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "batch_rl"))


@gin.configurable
def quickstart_dataset(num_checkpoints: int = 2, capacity: int = 25_000, seed: int = 0,
                       cache_dir: Optional[str] = None) -> str:
  """Path of the quickstart's replay_logs folder, logging it first if needed.

  Args:
    num_checkpoints: shards to write (suffixes 0..num_checkpoints-1).
    capacity: entries per shard (transitions plus Dopamine's zero padding; 1M in the
      public dataset).
    seed: seed of the environment and the behaviour policy.
    cache_dir: where datasets are kept (default $BATCH_RL_CACHE or ~/.cache/batch_rl).

  Returns:
    <cache_dir>/quickstart/breakout-s<seed>-c<capacity>x<n>/breakout/1/replay_logs
  """
  root = os.path.join(cache_dir or default_cache_dir(), "quickstart",
                      f"breakout-s{seed}-c{capacity}x{num_checkpoints}")
  replay_dir = os.path.join(root, "breakout", "1", "replay_logs")
  if os.path.isdir(replay_dir):
    return replay_dir
  os.makedirs(os.path.dirname(root), exist_ok=True)
  tmp_root = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(root))
  try:
    log_behaviour_policy(os.path.join(tmp_root, "breakout", "1", "replay_logs"),
                         num_checkpoints, capacity, seed)
    os.rename(tmp_root, root)
  except OSError:
    if not os.path.isdir(replay_dir):  # another process may have won the rename
      raise
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)
  return replay_dir


def log_behaviour_policy(replay_dir: str, num_checkpoints: int, capacity: int,
                         seed: int) -> None:
  """Plays MinAtar Breakout with the behaviour policy until the shards are written."""
  env = MinAtarEnvironment("breakout", seed=seed, minimal_action_set=True)
  logger = ReplayLogger(replay_dir, env.observation_shape, capacity,
                        stack_size=env.stack_size)
  rng = np.random.default_rng(seed)
  start, episodes = time.perf_counter(), 0
  log.info("Logging the quickstart dataset (%d x %d transitions) into %s ...",
           num_checkpoints, capacity, replay_dir)
  while len(logger.suffixes_written) < num_checkpoints:
    frame, done, epsilon = env.reset(), False, rng.uniform()
    while not done:
      if rng.uniform() < epsilon:
        action = int(rng.integers(env.num_actions))
      else:
        action = tracking_action(frame)
      next_frame, reward, terminal, truncated = env.step(action)
      done = terminal or truncated
      logger.add(frame, action, reward, done)
      frame = next_frame
      if len(logger.suffixes_written) >= num_checkpoints:
        break
    episodes += 1
  log.info("Logged %d episodes in %.1f s.", episodes, time.perf_counter() - start)
  assert fmt.list_suffixes(replay_dir) == list(range(num_checkpoints))

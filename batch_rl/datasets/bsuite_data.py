"""The offline bsuite datasets: the replay of an online DQN, logged in the DQN Replay format.

RL Unplugged's bsuite datasets (Gulcehre et al. 2020), which the empirical study
(Gulcehre et al. 2022) trains on, are the replay of online DQN agents on catch,
cartpole and mountain_car with random-action noise in the behaviour policy, at noise
levels 0, 0.1, ..., 0.5. They cannot be downloaded here, so they are made the same way:
the project's `OnlineRunner` trains a DQN (`BEHAVIOUR` below) in the bsuite task for
`num_steps` environment steps, with a replay large enough to hold all of them and
`log_dataset=True`, and its buffer (every transition of the run, in order) is the
dataset: one DQN Replay checkpoint (suffix 0) with float32 observations.

The behaviour policy acts uniformly at random with probability `noise_level` and
otherwise follows the learning DQN epsilon-greedily (epsilon decays from 1 to 0.01 over
the first 10% of the steps, after a 500-step warmup), i.e. `OnlineRunner.epsilon_train =
noise_level + (1 - noise_level) * 0.01`.

Generated once on first use into the cache directory (as the quickstart data), by a
separate process so that the offline run's gin bindings (its network, its learning
rate) cannot reach the behaviour agent; deterministic by seed, and atomic: the run
writes into a temporary folder that is renamed into place when complete.
"""
import collections
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

import gin

from batch_rl import validation
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.datasets.quickstart import default_cache_dir
from batch_rl.environments.bsuite_env import check_game

log = logging.getLogger("batch_rl")

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # RL Unplugged's
_FINAL_EPSILON = 0.01
# The behaviour run's iterations (a progress line each); its buffer holds the whole run,
# so the last iteration's checkpoint is the dataset.
_ITERATIONS = 10

# The behaviour DQN: a 2 x 64 ReLU MLP, Adam 1e-3, batch 128, one update every 4
# environment steps, target copied every 100 updates.
BEHAVIOUR = (
    "import batch_rl.agents.dqn",
    "import batch_rl.agents.learner",
    "import batch_rl.networks",
    "import batch_rl.runners.registry",
    "create_runner.runner_fn = @OnlineRunner",
    "OnlineRunner.domain = 'bsuite'",
    "OnlineRunner.agent_fn = @DQNAgent",
    f"OnlineRunner.num_iterations = {_ITERATIONS}",
    "OnlineRunner.evaluation_steps = 0",
    "OnlineRunner.updates_per_step = 0.25",
    "OnlineRunner.min_replay_history = 500",
    "OnlineRunner.target_update_env_steps = 400",
    "OnlineRunner.clip_rewards = False",
    "OnlineRunner.diagnostics_batch_size = 512",
    "OnlineRunner.log_dataset = True",
    "OnlineRunner.keep_checkpoints = 1",
    "DQNAgent.network = @MLPQNetwork",
    "DQNAgent.gamma = 0.99",
    "DQNAgent.update_horizon = 1",
    "DQNAgent.batch_size = 128",
    "DQNAgent.loss_type = 'huber'",
    "MLPQNetwork.hidden_sizes = (64, 64)",
    "MLPQNetwork.activation = 'relu'",
    "create_optimizer.name = 'adam'",
    "create_optimizer.learning_rate = 1e-3",
    "create_optimizer.eps = 3.125e-4",
)


def behaviour_epsilon(noise_level: float) -> float:
  """Probability of a uniform random action after the decay, at this noise level."""
  return noise_level + (1.0 - noise_level) * _FINAL_EPSILON


def behaviour_bindings(game: str, noise_level: float, seed: int, num_steps: int
                       ) -> list[str]:
  """The gin bindings of the online run that logs the dataset."""
  return list(BEHAVIOUR) + [
      f"OnlineRunner.game = '{game}'",
      f"OnlineRunner.seed = {int(seed)}",
      f"OnlineRunner.training_steps = {int(num_steps) // _ITERATIONS}",
      f"OnlineRunner.replay_capacity = {int(num_steps)}",
      f"OnlineRunner.epsilon_train = {behaviour_epsilon(noise_level)!r}",
      f"OnlineRunner.epsilon_decay_period = {max(1, int(num_steps) // 10)}",
  ]


def check_arguments(game: str, noise_level: float, num_steps: int) -> None:
  check_game(game, "bsuite_dataset.game")
  validation.check_in_range("bsuite_dataset.noise_level", noise_level, 0.0, 1.0)
  if int(num_steps) < 1000 or int(num_steps) % _ITERATIONS:
    raise validation.ConfigError(
        f"`bsuite_dataset.num_steps` = {num_steps}: the behaviour run needs at least 1000 "
        f"environment steps (it starts learning after 500), in a multiple of "
        f"{_ITERATIONS} (its iterations).")


@gin.configurable
def bsuite_dataset(game: str = "catch", noise_level: float = 0.0, seed: int = 0,
                   num_steps: int = 100_000, cache_dir: Optional[str] = None) -> str:
  """Path of a bsuite dataset's replay_logs folder, logging it first if needed.

  Args:
    game: 'catch', 'cartpole' or 'mountain_car'.
    noise_level: probability in [0, 1] of a uniform random action in the behaviour
      policy (RL Unplugged's levels: NOISE_LEVELS).
    seed: seed of the behaviour run (environment, network, acting).
    num_steps: environment steps of the behaviour run = transitions in the dataset.
    cache_dir: where datasets are kept (default $BATCH_RL_CACHE or ~/.cache/batch_rl).

  Returns:
    <cache_dir>/bsuite/<game>-noise<level>-s<seed>-n<num_steps>/replay_logs
  """
  check_arguments(game, noise_level, num_steps)
  root = os.path.join(cache_dir or default_cache_dir(), "bsuite",
                      f"{game}-noise{float(noise_level):g}-s{int(seed)}-n{int(num_steps)}")
  replay_dir = os.path.join(root, "replay_logs")
  if os.path.isdir(replay_dir):
    return replay_dir
  os.makedirs(os.path.dirname(root), exist_ok=True)
  # One process logs a dataset; another that asks for it meanwhile (runs of a study
  # launched together) waits for it instead of logging it a second time.
  with open(root + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.isdir(replay_dir):
      _log_into_place(root, game, noise_level, seed, num_steps)
  return replay_dir


def _log_into_place(root: str, game: str, noise_level: float, seed: int,
                    num_steps: int) -> None:
  """Logs the dataset into a temporary folder renamed to `root` when complete."""
  tmp_root = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(root))
  try:
    _log_behaviour_run(os.path.join(tmp_root, "run"), game, noise_level, seed, num_steps)
    os.makedirs(os.path.join(tmp_root, "final"))
    shutil.move(os.path.join(tmp_root, "run", "replay_logs"),
                os.path.join(tmp_root, "final", "replay_logs"))
    # What made the data, kept beside it.
    shutil.copy(os.path.join(tmp_root, "run", "config.gin"),
                os.path.join(tmp_root, "final", "config.gin"))
    os.rename(os.path.join(tmp_root, "final"), root)
  finally:
    shutil.rmtree(tmp_root, ignore_errors=True)


def _log_behaviour_run(base_dir: str, game: str, noise_level: float, seed: int,
                       num_steps: int) -> None:
  log.info("Logging the bsuite dataset %s (noise %g, seed %d, %d steps) with an online "
           "DQN ...", game, noise_level, seed, num_steps)
  start = time.perf_counter()
  command = [sys.executable, "-m", "batch_rl.runners.behaviour_data", base_dir,
             *behaviour_bindings(game, noise_level, seed, num_steps)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
       os.environ.get("PYTHONPATH", "")]))
  # The behaviour run's progress lines (iteration, steps/s, ETA) pass through to the log;
  # the last ones are kept for the message if it fails.
  tail = collections.deque(maxlen=40)
  with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True) as process:
    for line in process.stdout:
      tail.append(line)
      if "env steps/s" in line or "error" in line.lower():
        log.info("behaviour run: %s", line.rstrip())
  if process.returncode != 0:
    raise RuntimeError(f"The behaviour run that logs the bsuite dataset {game} failed "
                       f"(exit {process.returncode}):\n{''.join(tail)}")
  replay_dir = os.path.join(base_dir, "replay_logs")
  last = _ITERATIONS - 1
  if fmt.list_suffixes(replay_dir) != list(range(_ITERATIONS)):
    raise RuntimeError(f"The behaviour run wrote checkpoints {fmt.list_suffixes(replay_dir)} "
                       f"in {replay_dir}; expected 0 ... {last}.")
  # Earlier checkpoints are prefixes of the last one's buffer: only the last is kept,
  # as checkpoint 0.
  files = {}  # name -> suffix
  for name in os.listdir(replay_dir):
    _, dot, rest = name.partition("_ckpt.")
    if dot and rest.split(".")[0].isdigit():
      files[name] = int(rest.split(".")[0])
  for name, suffix in files.items():
    if suffix != last:
      os.remove(os.path.join(replay_dir, name))
  for name, suffix in files.items():
    if suffix == last:
      stem, _, rest = name.partition("_ckpt.")
      os.rename(os.path.join(replay_dir, name),
                os.path.join(replay_dir, f"{stem}_ckpt.0{rest[len(str(last)):]}"))
  log.info("Logged the bsuite dataset %s in %.0f s.", game, time.perf_counter() - start)

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
rate) cannot reach the behaviour agent; deterministic by seed, and atomic
(behaviour_logging.py).
"""
import os
from typing import Optional

import gin

from batch_rl import validation
from batch_rl.datasets import behaviour_logging
from batch_rl.datasets.quickstart import default_cache_dir
from batch_rl.environments.bsuite_env import check_game

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
  return behaviour_logging.cached_dataset(
      root, lambda run_dir: _log_behaviour_run(run_dir, game, noise_level, seed, num_steps))


def _log_behaviour_run(base_dir: str, game: str, noise_level: float, seed: int,
                       num_steps: int) -> None:
  behaviour_logging.log_behaviour_run(
      base_dir, behaviour_bindings(game, noise_level, seed, num_steps),
      f"the bsuite dataset {game} (noise {noise_level:g}, seed {seed}, {num_steps} steps)",
      _ITERATIONS)

"""The offline MuJoCo datasets of the IUP paper's Figures A.4-A.5: the replay of an
online SAC agent, logged in the DQN Replay format (float32 observations, float32
action vectors), of which the offline runs take 20% uniformly.

IUP trains offline SAC and CQL on "20% uniformly sampled data from the entire replay
experience of an online SAC agent, similar to the 20% setting from Agarwal et al.
(2020)". The project's `OnlineRunner` trains a SAC (`BEHAVIOUR`: the settings of
gin_configs/mujoco/sac.gin, SAC's own) for `num_steps` environment steps with a replay
that holds all of them; that replay, every transition of the run in order, is the
dataset (one checkpoint, suffix 0). The 20% is the offline run's
`load_fixed_replay.data_fraction = 0.2` with the 'uniform_transitions' scheme (the
configs in gin_configs/mujoco/ bind it), so one logged replay serves every fraction.

Made once on first use into the cache directory, in its own process, deterministic by
seed and written atomically (behaviour_logging.py).
"""
import os
from typing import Optional

import gin

from batch_rl import validation
from batch_rl.datasets import behaviour_logging
from batch_rl.datasets.quickstart import default_cache_dir
from batch_rl.environments import mujoco_env

# The behaviour run's iterations (a progress line each).
_ITERATIONS = 10
# Uniform random actions before SAC starts learning, at most (jaxrl's 10,000).
_WARMUP_STEPS = 10_000

BEHAVIOUR = (
    "import batch_rl.actor_critic_networks",
    "import batch_rl.agents.sac",
    "import batch_rl.runners.registry",
    "create_runner.runner_fn = @OnlineRunner",
    "OnlineRunner.domain = 'mujoco'",
    "OnlineRunner.agent_fn = @SACAgent",
    f"OnlineRunner.num_iterations = {_ITERATIONS}",
    "OnlineRunner.evaluation_steps = 0",
    "OnlineRunner.updates_per_step = 1",
    "OnlineRunner.epsilon_train = 0.0",
    "OnlineRunner.epsilon_decay_period = 1",
    "OnlineRunner.target_update_env_steps = None",
    "OnlineRunner.clip_rewards = False",
    "OnlineRunner.diagnostics_batch_size = 512",
    "OnlineRunner.log_dataset = True",
    "OnlineRunner.keep_checkpoints = 1",
    "SACAgent.batch_size = 256",
    "SACAgent.gamma = 0.99",
    "TwinCriticNetwork.hidden_sizes = (256, 256)",
    "GaussianPolicyNetwork.hidden_sizes = (256, 256)",
)


def behaviour_bindings(game: str, seed: int, num_steps: int) -> list[str]:
  """The gin bindings of the online SAC run that logs the dataset."""
  return list(BEHAVIOUR) + [
      f"OnlineRunner.game = '{game}'",
      f"OnlineRunner.seed = {int(seed)}",
      f"OnlineRunner.training_steps = {int(num_steps) // _ITERATIONS}",
      f"OnlineRunner.replay_capacity = {int(num_steps)}",
      f"OnlineRunner.min_replay_history = {min(_WARMUP_STEPS, int(num_steps) // 10)}",
  ]


def check_arguments(game: str, num_steps: int) -> None:
  if game not in mujoco_env.GAMES:
    raise validation.ConfigError(f"`mujoco_dataset.game` = {game!r} is not a MuJoCo task "
                                 f"here; valid: {', '.join(mujoco_env.GAMES)}.")
  if int(num_steps) < 1000 or int(num_steps) % _ITERATIONS:
    raise validation.ConfigError(
        f"`mujoco_dataset.num_steps` = {num_steps}: the behaviour run needs at least 1000 "
        f"environment steps, in a multiple of {_ITERATIONS} (its iterations).")


@gin.configurable
def mujoco_dataset(game: str = "Hopper-v5", seed: int = 0, num_steps: int = 100_000,
                   cache_dir: Optional[str] = None) -> str:
  """Path of an online SAC replay's replay_logs folder, logging it first if needed.

  Args:
    game: one of mujoco_env.GAMES.
    seed: seed of the behaviour run (environment, networks, acting).
    num_steps: environment steps of the behaviour run = transitions in the replay
      (the paper's runs were 1M steps; 100K is this machine's scale).
    cache_dir: where datasets are kept (default $BATCH_RL_CACHE or ~/.cache/batch_rl).

  Returns:
    <cache_dir>/mujoco/<game>-sac-s<seed>-n<num_steps>/replay_logs
  """
  check_arguments(game, num_steps)
  root = os.path.join(cache_dir or default_cache_dir(), "mujoco",
                      f"{game}-sac-s{int(seed)}-n{int(num_steps)}")
  return behaviour_logging.cached_dataset(
      root, lambda run_dir: behaviour_logging.log_behaviour_run(
          run_dir, behaviour_bindings(game, seed, num_steps),
          f"the MuJoCo dataset {game} (online SAC, seed {seed}, {num_steps} steps)",
          _ITERATIONS))

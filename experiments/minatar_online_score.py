r"""How long online DQN on MinAtar takes to reach a non-trivial score.

  python experiments/minatar_online_score.py                  # 3 x 25,000 env steps, n = 1
  python experiments/minatar_online_score.py --iterations 10 --steps 100000 \
      --game space_invaders --bindings "OnlineRunner.updates_per_step = 4"

Runs train.py's online runner through gin (gin_configs/online/minatar_dqn.gin:
Dopamine's MinAtar DQN settings) for `--iterations` iterations of `--steps` environment
steps, evaluating after each (`--eval_steps` agent steps, epsilon 0.001, the same
`evaluation.evaluate` as train.py), and prints one row per iteration as it finishes:
iteration, environment steps so far, wall time so far, training-episode return and
evaluation return. Before training it measures the uniformly random policy's return
with the same evaluate() and the same evaluation environments (seeds), for reference.
Logs and checkpoints go to --base_dir (a fresh temporary folder by default).
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

import jax

from batch_rl import config as config_lib
from batch_rl.runners import common, registry
from batch_rl.environments import evaluation
from batch_rl.environments import factory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GIN_FILE = os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")


def random_policy_result(num_actions: int, env_name: str, seed: int, num_envs: int,
                         min_steps: int) -> evaluation.EvalResult:
  """evaluate() of the uniformly random policy on the runner's iteration-0 eval envs."""
  envs = [factory.create_environment(env_name, seed=common.seed_int(seed, 3, 0, i))
          for i in range(num_envs)]

  draw = jax.jit(jax.vmap(lambda k: jax.random.randint(k, (), 0, num_actions)))
  policy = lambda states, keys: draw(keys)  # one key per environment

  return evaluation.evaluate(policy, envs, min_steps, jax.random.PRNGKey(seed))


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--game", default="breakout")
  parser.add_argument("--iterations", type=int, default=3)
  parser.add_argument("--steps", type=int, default=25_000,
                      help="environment steps per iteration")
  parser.add_argument("--eval_steps", type=int, default=10_000,
                      help="agent steps per evaluation phase")
  parser.add_argument("--updates_per_step", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--base_dir", default=None)
  parser.add_argument("--bindings", nargs="*", default=[],
                      help="extra gin bindings, applied last")
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(message)s")
  base_dir = args.base_dir or tempfile.mkdtemp(prefix="minatar_online_")
  config_lib.parse_gin([GIN_FILE], [
      f"OnlineRunner.game = {args.game!r}", f"OnlineRunner.num_iterations = {args.iterations}",
      f"OnlineRunner.training_steps = {args.steps}",
      f"OnlineRunner.evaluation_steps = {args.eval_steps}",
      f"OnlineRunner.updates_per_step = {args.updates_per_step}",
      f"OnlineRunner.seed = {args.seed}"] + list(args.bindings))
  runner = registry.create_runner(base_dir=base_dir)
  print(f"jax backend: {jax.default_backend()}, {os.cpu_count()} CPUs; "
        f"{runner.env_name}, n = {args.updates_per_step:g}, base_dir {base_dir}", flush=True)

  start = time.perf_counter()
  rand = random_policy_result(runner.env.num_actions, runner.env_name, args.seed,
                              runner.num_eval_envs, args.eval_steps)
  stderr = np.std(rand.episode_returns) / np.sqrt(max(rand.num_episodes, 1))
  print(f"random policy: return {rand.average_return:.3f} +- {stderr:.3f} (s.e.) over "
        f"{rand.num_episodes} episodes, {rand.num_steps} steps, "
        f"{time.perf_counter() - start:.1f} s", flush=True)

  header = (f"| iteration | env steps | wall time (s) | train return | eval return "
            f"(episodes) | env steps/s |")
  rows = [header, "|---|---|---|---|---|---|"]
  print("\n".join(rows), flush=True)
  start = time.perf_counter()

  def on_iteration(iteration, metrics):
    rows.append(f"| {iteration + 1} | {metrics['Train/EnvSteps']:,.0f} | "
                f"{time.perf_counter() - start:.0f} | {metrics['Train/EpisodeReturn']:.2f} | "
                f"{metrics.get('Eval/AverageReturn', float('nan')):.2f} "
                f"({metrics.get('Eval/NumEpisodes', 0):.0f}) | "
                f"{metrics['Train/StepsPerSecond']:.0f} |")
    print(rows[-1], flush=True)

  runner.run(on_iteration=on_iteration)
  print(f"\nrandom-policy return {rand.average_return:.3f} ({rand.num_episodes} episodes)")
  print("\n".join(rows))


if __name__ == "__main__":
  main(sys.argv[1:])

r"""Environment steps per second of online DQN on MinAtar Breakout at n updates per step.

  python benchmarks/online_throughput.py                 # n = 1 and 8, 5,000 steps each
  python benchmarks/online_throughput.py --n 0.25 1 4 8 --steps 10000
  python benchmarks/online_throughput.py --smoke   # n = 1, 200 steps, 1,000 entries

Runs gin_configs/online/minatar_dqn.gin (Dopamine's MinAtar DQN: batch 128) through the
OnlineRunner for one iteration per n, training once the buffer holds
min_replay_history = 1,000 entries (half the steps if --steps is under 2,000), and
prints env steps/s of the training phase (compilation included in the first of each n,
so use enough steps), plus the size on disk of one logged iteration (the replay buffer
in the DQN Replay format).

Then (unless --no-env_fraction) the share of the environment in a training step, at
n = 1 on MinAtar Breakout: two iterations of --steps steps, the second timed (compiled
already); time inside `env.step`/`env.reset` against the whole step (host env step +
the fused jitted add/update/act call). This is the figure that decides whether acting
over several environments at once would speed training up (see OnlineRunner).

--smoke runs both parts at n = 1 with 200 steps (training from step 100) and a
1,000-entry buffer: its figures only show that the code runs.
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

import gin

from batch_rl import config as config_lib
from batch_rl.runners import registry
from batch_rl.datasets import dqn_replay_format as fmt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def minatar_runner(n: float, steps: int, iterations: int, capacity: int, extra=()):
  """An OnlineRunner of minatar_dqn.gin (n updates per step, no evaluation) in a
  temporary base_dir, removed afterwards with the gin config."""
  base = tempfile.mkdtemp(prefix="online_bench_")
  try:
    config_lib.parse_gin([os.path.join(REPO, "gin_configs", "online", "minatar_dqn.gin")], [
        f"OnlineRunner.updates_per_step = {n}", f"OnlineRunner.training_steps = {steps}",
        f"OnlineRunner.num_iterations = {iterations}", "OnlineRunner.evaluation_steps = 0",
        f"OnlineRunner.replay_capacity = {capacity}",
        f"OnlineRunner.min_replay_history = {min(1000, steps // 2)}", *extra])
    yield registry.create_runner(base_dir=base), base
  finally:
    gin.clear_config()
    shutil.rmtree(base, ignore_errors=True)


class TimedEnvironment:
  """Wraps an environment; adds the wall time of its step() and reset() calls."""

  def __init__(self, env):
    self._env = env
    self.seconds, self.calls = 0.0, 0

  def __getattr__(self, name):
    return getattr(self._env, name)

  def _timed(self, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    self.seconds += time.perf_counter() - start
    return out

  def step(self, action):
    self.calls += 1
    return self._timed(self._env.step, action)

  def reset(self):
    return self._timed(self._env.reset)


def env_fraction(steps: int, capacity: int) -> None:
  """Prints env time per step vs the whole training step, n = 1, second iteration."""
  with minatar_runner(1, steps, 2, capacity) as (runner, _):
    env = runner.env = TimedEnvironment(runner.env)
    first = {}
    metrics = runner.run(on_iteration=lambda it, _: first.update(
        seconds=env.seconds, calls=env.calls) if it == 0 else None)
    timed_steps = env.calls - first["calls"]
    env_us = 1e6 * (env.seconds - first["seconds"]) / timed_steps
    step_us = 1e6 / metrics["Train/StepsPerSecond"]  # the second iteration's
    print(f"n = 1, MinAtar Breakout, iteration 2 ({timed_steps:,} steps, compiled): "
          f"env.step {env_us:.0f} us per step of a {step_us:.0f} us training step "
          f"({100 * env_us / step_us:.1f}% in the environment; the fused jitted "
          f"add + update + act call and the host loop are the rest)", flush=True)


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", nargs="+", type=float, default=[1, 8])
  parser.add_argument("--steps", type=int, default=5000)
  parser.add_argument("--capacity", type=int, default=100_000)
  parser.add_argument("--env_fraction", action=argparse.BooleanOptionalAction, default=True,
                      help="also measure the environment's share of a training step")
  parser.add_argument("--smoke", action="store_true",
                      help="n = 1, 200 steps, a 1,000-entry buffer")
  args = parser.parse_args(argv)
  if args.smoke:
    args.n, args.steps, args.capacity = [1], 200, 1000
  print(f"jax backend: {__import__('jax').default_backend()}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.2f}")
  for n in args.n:
    with minatar_runner(n, args.steps, 1, args.capacity,
                        ["OnlineRunner.log_dataset = True"]) as (runner, base):
      start = time.perf_counter()
      metrics = runner.run()
      wall = time.perf_counter() - start
      logs = os.path.join(base, "replay_logs")
      size = sum(os.path.getsize(os.path.join(logs, f)) for f in os.listdir(logs))
      entries = fmt.read_shard_info(logs, 0).add_count
      print(f"n = {n:g}: {metrics['Train/StepsPerSecond']:.0f} env steps/s "
            f"({metrics['Train/GradientSteps']:.0f} updates, {wall:.0f} s in all); one "
            f"logged iteration ({args.capacity:,}-entry buffer, "
            f"{min(entries, args.capacity):,} entries written) = "
            f"{size / 2**20:.2f} MiB on disk", flush=True)
  if args.env_fraction:
    env_fraction(args.steps, args.capacity)


if __name__ == "__main__":
  main(sys.argv[1:])

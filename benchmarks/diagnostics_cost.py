r"""Cost of the per-iteration diagnostics on the quickstart, the plasticity ones apart.

  python benchmarks/diagnostics_cost.py             # the quickstart's sizes
  python benchmarks/diagnostics_cost.py --repeats 20
  python benchmarks/diagnostics_cost.py --smoke     # tiny sizes: shows that it runs

Measures, in one process, on the quickstart's agent (gin_configs/quickstart.gin: offline
DQN with the MinAtar network, batch 32) and data (the quickstart's dataset, logged on
first use):

  1. train: an iteration's training, 5,000 gradient steps, as FixedReplayRunner runs
     it on a CPU (one jitted step with sampling inside per call, `learner.
     make_train_steps(step, 1)`, dispatched back to back, one host sync at the end),
     after a warm-up call; from the parameters the runner's seed initialises.
  2. diagnose: the runner's diagnose call (`runners.diagnose.diagnose_fn` on 2,048
     sampled transitions, jitted as `make_diagnose` jits it, the result fetched to the
     host) on the trained parameters, with and without the rank and plasticity
     diagnostics (Rank/effective_rank_roy, Rank/feature_rank_lyle, Dormant/*,
     Params/*), alternating the two --repeats times; medians. "Without" is the same
     function jitted with those outputs dropped, which XLA then does not compute:
     exactly the program minus the new diagnostics. The number of convolutions in each
     compiled program shows whether the per-layer capture's forward pass is shared
     with the one the other diagnostics make.

Prints a markdown table with the diagnose call's share of the iteration's training
time, in wall-clock seconds and in this process's CPU seconds (all its threads). An
iteration also evaluates (the quickstart: 5,000 agent steps), so the share of its whole
wall time is smaller still. Other processes on the machine skew every absolute time;
the ratios, measured in the same run, are what to read, and the CPU-time shares check
the wall-clock ones on a loaded machine (where a phase's wall time includes waiting
for the CPU).

--smoke: 50 gradient steps, a 64-transition diagnostics batch, 2 x 1,000 random
MinAtar-shaped transitions made in memory, host-drawn initial parameters, 2 repeats.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (gfile) is noisy.

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import config as config_lib
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.replay import sampler
from batch_rl.runners import common
from batch_rl.runners import diagnose as diagnose_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "gin_configs", "quickstart.gin")
NEW_RANKS = ("Rank/effective_rank_roy", "Rank/feature_rank_lyle")
TARGET_SHARE = 0.02  # of an iteration's wall time
NUM_ACTIONS = 3  # the quickstart's minimal action set of MinAtar Breakout
STACK_SIZE = 1  # MinAtar
SMOKE = dict(training_steps=50, diagnostics_batch_size=64, repeats=2)


def is_new(tag: str) -> bool:
  """Whether `tag` is one of the rank and plasticity diagnostics this measures."""
  return tag in NEW_RANKS or tag.startswith(("Dormant/", "Params/"))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--training_steps", type=int, default=None,
                 help="gradient steps of the timed iteration (default: the quickstart's)")
  p.add_argument("--diagnostics_batch_size", type=int, default=None,
                 help="transitions of the diagnose call (default: the quickstart's)")
  p.add_argument("--repeats", type=int, default=10,
                 help="timed diagnose calls of each variant (alternating)")
  p.add_argument("--smoke", action="store_true", help="tiny sizes (see above)")
  args = p.parse_args(argv)
  if args.smoke:
    for name, value in SMOKE.items():
      setattr(args, name, value)
  return args


def random_data(capacity: int, seed: int = 0) -> sampler.ReplayArrays:
  """2 shards of random sparse 0/1 MinAtar frames, a terminal every ~100 steps."""
  rng = np.random.default_rng(seed)
  shards = 2
  valid = np.concatenate([s * capacity + np.arange(capacity - 1) for s in range(shards)])
  return jax.device_put(sampler.ReplayArrays(
      observation=(rng.random((shards, capacity, 10, 10, 4)) < 0.03).astype(np.uint8),
      action=rng.integers(0, NUM_ACTIONS, (shards, capacity)).astype(np.int32),
      reward=rng.choice(np.float32([0, 0, 0, 1]), (shards, capacity)),
      terminal=(rng.random((shards, capacity)) < 0.01).astype(np.uint8),
      valid=valid.astype(np.int32)))


def quickstart_data(agent) -> sampler.ReplayArrays:
  """The quickstart's dataset, loaded as the runner loads it."""
  from batch_rl.datasets import fixed_replay  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import quickstart  # pylint: disable=g-import-not-at-top
  replay = fixed_replay.load_fixed_replay(quickstart.quickstart_dataset(),
                                          stack_size=STACK_SIZE,
                                          update_horizon=agent.update_horizon,
                                          gamma=agent.gamma)
  return jax.device_put(replay.arrays)


def convolutions(compiled) -> int:
  """Convolution instructions in a compiled program's HLO."""
  return compiled.as_text().count(" convolution(")


def main(argv=None):
  args = parse_args(argv)
  config_lib.parse_gin([QUICKSTART], [])
  training_steps = args.training_steps or gin.query_parameter(
      "FixedReplayRunner.training_steps")
  batch_size = args.diagnostics_batch_size or gin.query_parameter(
      "FixedReplayRunner.diagnostics_batch_size")
  agent = dqn.DQNAgent(num_actions=NUM_ACTIONS)  # the quickstart's gin bindings
  state_shape = (10, 10, 4, STACK_SIZE)
  start = time.perf_counter()
  data = random_data(1000) if args.smoke else quickstart_data(agent)
  print(f"data ready in {time.perf_counter() - start:.1f} s", flush=True)
  if args.smoke:  # Flax's init compiles its PRNG for seconds on a CPU
    state = learner.init_train_state(agent_common.host_random_params(agent, 0, state_shape),
                                     agent.optimizer, jax.random.PRNGKey(1))
  else:  # the runner's: seed 0, fold_in(key, 0)
    state = agent.init(jax.random.fold_in(jax.random.PRNGKey(0), 0), state_shape)
  initial_params = jax.tree.map(jnp.copy, state.params)
  shape = dict(stack_size=STACK_SIZE, update_horizon=agent.update_horizon,
               gamma=agent.gamma)

  # 1. An iteration's training, as the runner's CPU schedule runs it.
  step = learner.make_train_step(
      agent.loss, agent.optimizer,
      common.make_sampler(sampler.sample_transitions, agent.batch_size, **shape),
      agent.target_update_period)
  totals = learner.zero_metrics(step, state, data)
  train_steps = learner.make_train_steps(step, 1).lower(state, data, totals).compile()
  state, totals = jax.block_until_ready(train_steps(state, data, totals))  # warm-up
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(training_steps):
    state, totals = train_steps(state, data, totals)
  jax.device_get(totals)
  train_seconds = time.perf_counter() - start
  train_cpu = time.process_time() - cpu_start

  # 2. The diagnose call with and without the new diagnostics.
  pure = diagnose_lib.diagnose_fn(
      agent, common.make_sampler(sampler.sample_transitions, batch_size, **shape), 0.01)
  without = lambda *a: {k: v for k, v in pure(*a).items() if not is_new(k)}
  call = (state.params, state.target_params, data, jax.random.PRNGKey(0), initial_params)
  compiled = {name: jax.jit(fn).lower(*call).compile()
              for name, fn in (("with", pure), ("without", without))}
  seconds, cpu, outputs = {n: [] for n in compiled}, {n: [] for n in compiled}, {}
  for i in range(args.repeats + 1):  # the first round warms up
    key = jax.random.fold_in(jax.random.PRNGKey(1), i)
    for name, fn in compiled.items():
      t0, c0 = time.perf_counter(), time.process_time()
      outputs[name] = jax.device_get(fn(state.params, state.target_params, data, key,
                                        initial_params))
      if i:
        seconds[name].append(time.perf_counter() - t0)
        cpu[name].append(time.process_time() - c0)
  with_s, without_s = (statistics.median(seconds[n]) for n in ("with", "without"))
  with_cpu, without_cpu = (statistics.median(cpu[n]) for n in ("with", "without"))
  added, added_cpu = max(with_s - without_s, 0.0), max(with_cpu - without_cpu, 0.0)
  gin.clear_config()

  share = lambda s: f"{100 * s / train_seconds:.2f}%"
  cpu_share = lambda s: f"{100 * s / train_cpu:.2f}%"
  rows = [
      (f"train ({training_steps} gradient steps)", train_seconds, "100%", train_cpu,
       "100%"),
      (f"diagnose without the new diagnostics (median of {args.repeats})", without_s,
       share(without_s), without_cpu, cpu_share(without_cpu)),
      (f"diagnose with them (median of {args.repeats})", with_s, share(with_s), with_cpu,
       cpu_share(with_cpu)),
      ("added by the new diagnostics", added, share(added), added_cpu,
       cpu_share(added_cpu)),
  ]
  print()
  print("| measurement | seconds | share of the training time | CPU seconds | share of "
        "the training's CPU time |")
  print("| --- | --- | --- | --- | --- |")
  for name, value, fraction, cpu_value, cpu_fraction in rows:
    print(f"| {name} | {value:.4f} | {fraction} | {cpu_value:.4f} | {cpu_fraction} |")
  print()
  new_tags = sorted(set(outputs["with"]) - set(outputs["without"]))
  print(f"diagnostics batch {batch_size}; new tags ({len(new_tags)}): "
        f"{', '.join(new_tags)}")
  print(f"convolutions in the compiled diagnose: with {convolutions(compiled['with'])}, "
        f"without {convolutions(compiled['without'])}")
  met = with_s <= TARGET_SHARE * train_seconds
  print(f"target: the diagnose call within {100 * TARGET_SHARE:.0f}% of the iteration "
        f"(here: of its training alone): {'met' if met else 'missed'} ({share(with_s)}; "
        f"the new diagnostics add {share(added)})")
  print(f"machine: {jax.default_backend()} backend, {os.cpu_count()} CPUs, 1-min load "
        f"average {os.getloadavg()[0]:.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

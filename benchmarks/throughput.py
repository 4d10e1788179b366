"""Throughput of the offline DQN pipeline on this machine: prints figures, asserts nothing.

What it measures (on synthetic data written in the DQN Replay format to a tempdir and
loaded back with `fixed_replay.load_fixed_replay`, exactly as a run loads real shards):

  1. train    Gradient steps per second of the fused training loop
              (`learner.make_train_step` + `learner.make_train_steps`, minibatch sampling
              inside the jitted loop, built as `FixedReplayRunner.__init__` builds it) for
              the Nature DQN network (padding SAME, Dopamine's default, and VALID) at
              batch 32 on 84x84x4 uint8 states, and the MinAtar network on 10x10x4
              frames (stack 1). For every K (steps per jit call, --ks) with lax.scan
              unroll 1 and, where K <= --max_unroll, unroll K; plus, as a baseline for
              K=1, one plain jitted step without lax.scan. Compile time
              (`.lower().compile()`, as the Runner does) is reported separately; the rate
              is measured after one warm-up call, over back-to-back calls with a single
              host sync at the end (as in `FixedReplayRunner._train`). A setting whose
              call would take over --max_call_seconds (estimated from the slowest
              per-step time so far; on CPU that skips rolled K=100 for Atari) is listed
              as skipped.
  2. diag     One diagnostics call as the Runner makes it every iteration: 2048 i.i.d.
              transitions sampled from the data, the network on states and next states,
              and `diagnostics.feature_diagnostics`.
  3. sample   One jitted `sampler.sample_transitions` (batch 32) per call, synced every
              call, and the same amortized inside a lax.scan; next to Dopamine's
              host-side `OutOfGraphReplayBuffer.sample_transition_batch(32)` on a buffer
              `load`ed from the same files.
  4. eval     Agent steps per second of `evaluation.evaluate` with the jitted
              epsilon-greedy `agent.act` (epsilon 0.001, untrained network) on Atari Pong
              (with the first selected Nature network) and MinAtar breakout, with 1 and 4
              environments in lockstep. The phase runs until --eval_steps and then
              finishes the open episodes (truncated at --eval_max_episode_steps), so it
              takes more steps than the budget; the rate uses the steps actually taken.

A markdown table with every figure, the JAX backend/devices, the CPU count and the load
average (other processes on the machine skew every figure) is printed at the end, ready
to paste into notes.

Run from the repository root (defaults take ~4-5 minutes on a 2-core CPU):

  python benchmarks/throughput.py
  python benchmarks/throughput.py --sections train --networks minatar --ks 1,10
  # on a GPU: more steps per measurement, longer fused loops
  python benchmarks/throughput.py --ks 1,10,100,250,1000 --steps 20000 --min_seconds 5
  # every section at tiny sizes (its figures only show that the code runs)
  python benchmarks/throughput.py --smoke

--smoke runs every section with the Nature DQN (SAME) and the MinAtar network, K = 1
(no scan, and through make_train_steps), 2 timed steps per setting, 1,000 transitions of
data, a diagnostics batch of 64, 20 sampled batches, and evaluation phases of 20 steps
with 1 and 2 environments (episodes truncated at 10 steps); K = 100,000 with
--max_call_seconds 5 shows the skipped row.
"""
import argparse
import functools
import math
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (gfile, Dopamine) is noisy.

import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import diagnostics
from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.datasets import dqn_replay_format
from batch_rl.datasets import fixed_replay
from batch_rl.replay import sampler

NUM_ACTIONS = 6  # Pong's minimal action set and MinAtar's full one.
EVAL_EPSILON = 0.001  # FixedReplayRunner.eval_epsilon's default.

# name -> (label, network constructor, frame shape, stack size, environment)
NETWORKS = {
    "nature_same": ("Nature DQN (SAME)", networks.NatureDQNNetwork, (84, 84), 4,
                    "atari:Pong"),
    "nature_valid": ("Nature DQN (VALID)",
                     functools.partial(networks.NatureDQNNetwork, padding="VALID"),
                     (84, 84), 4, "atari:Pong"),
    "minatar": ("MinAtar DQN", networks.MinAtarDQNNetwork, (10, 10, 4), 1,
                "minatar:breakout"),
}
SECTIONS = ("train", "diag", "sample", "eval")
# --smoke: the flags it sets (K = 100000 is past max_call_seconds: the skipped row).
SMOKE = dict(networks="nature_same,minatar", ks="1,100000", max_unroll=1, steps=2,
             min_seconds=0.0, max_call_seconds=5.0, diag_batch=64, diag_calls=1,
             sample_calls=20, eval_steps=20, eval_envs="1,2", eval_max_episode_steps=10,
             atari_capacity=1000, minatar_capacity=1000)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sections", default=",".join(SECTIONS),
                 help=f"comma-separated subset of {SECTIONS}")
  p.add_argument("--networks", default=",".join(NETWORKS),
                 help=f"comma-separated subset of {tuple(NETWORKS)}")
  p.add_argument("--ks", default="1,10,100", help="gradient steps per jit call (K)")
  p.add_argument("--max_unroll", type=int, default=10,
                 help="also time unroll=K for K up to this (bounds compile time)")
  p.add_argument("--steps", type=int, default=60,
                 help="at least this many timed gradient steps per training measurement")
  p.add_argument("--min_seconds", type=float, default=2.0,
                 help="and at least this long (whole jit calls, so K=100 may overrun)")
  p.add_argument("--max_call_seconds", type=float, default=30.0,
                 help="skip a training setting whose jit call would take longer than this, "
                      "estimated from the slowest per-step time so far (0: skip none)")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--diag_batch", type=int, default=2048)
  p.add_argument("--diag_calls", type=int, default=2, help="timed calls (median)")
  p.add_argument("--sample_calls", type=int, default=300)
  p.add_argument("--eval_steps", type=int, default=2000)
  p.add_argument("--eval_envs", default="1,4", help="environments in lockstep")
  p.add_argument("--eval_max_episode_steps", type=int, default=500,
                 help="truncate evaluation episodes after this many agent steps, so the "
                      "phase overruns --eval_steps by at most this per env (0: the "
                      "environment's default, 27,000)")
  p.add_argument("--atari_capacity", type=int, default=20_000)
  p.add_argument("--minatar_capacity", type=int, default=50_000)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true",
                 help="every section at tiny sizes (overrides the sizes above)")
  args = p.parse_args(argv)
  if args.smoke:
    for name, value in SMOKE.items():
      setattr(args, name, value)
  args.sections = _names(args.sections, SECTIONS, "--sections")
  args.networks = _names(args.networks, tuple(NETWORKS), "--networks")
  args.ks = [int(k) for k in args.ks.split(",") if k]
  args.eval_envs = [int(n) for n in args.eval_envs.split(",") if n]
  return args


def _names(value, valid, flag):
  names = [v for v in value.split(",") if v]
  bad = [v for v in names if v not in valid]
  if bad:
    sys.exit(f"{flag}: unknown {bad}; valid: {', '.join(valid)}")
  return names


def log(msg):
  print(msg, flush=True)


def block(tree):
  return jax.block_until_ready(tree)


# ----------------------------------------------------------------------------- data


def write_synthetic_shard(replay_dir, frame_shape, capacity, stack_size, seed):
  """One full checkpoint (suffix 0) of random frames, a terminal every ~500 steps."""
  rng = np.random.default_rng(seed)
  shape = (capacity,) + tuple(frame_shape)
  if len(frame_shape) == 2:  # Atari: uniform pixels (incompressible, fast to gzip).
    observation = rng.integers(0, 256, shape, dtype=np.uint8)
  else:  # MinAtar: sparse 0/1 channels as real frames (and dense 0/1 noise takes gzip -9,
    # which write_shard uses like Dopamine, minutes to compress).
    observation = (rng.random(shape) < 0.03).astype(np.uint8)
  dqn_replay_format.write_shard(
      replay_dir, 0, observation=observation,
      action=rng.integers(0, NUM_ACTIONS, capacity, dtype=np.int32),
      reward=rng.choice(np.float32([-1, 0, 0, 0, 0, 0, 0, 0, 1]), capacity),
      terminal=(rng.random(capacity) < 1 / 500).astype(np.uint8),
      add_count=capacity, stack_size=stack_size)


class Dataset:
  """A synthetic replay shard on disk, loaded as a run loads one, plus device arrays."""

  def __init__(self, root, frame_shape, capacity, stack_size, seed):
    self.dir = os.path.join(root, "x".join(map(str, frame_shape)), "replay_logs")
    start = time.perf_counter()
    write_synthetic_shard(self.dir, frame_shape, capacity, stack_size, seed)
    self.replay = fixed_replay.load_fixed_replay(self.dir, stack_size=stack_size,
                                                 update_horizon=1)
    self.data = block(jax.device_put(self.replay.arrays))
    self.frame_shape, self.capacity, self.stack_size = frame_shape, capacity, stack_size
    log(f"  data: {self.replay.describe()} "
        f"({time.perf_counter() - start:.1f} s to write and load)")


# ----------------------------------------------------------------------------- pieces


def make_sample_fn(agent, stack_size, batch_size):
  """The minibatch sampler the Runner closes over (FixedReplayRunner.__init__)."""

  def sample(key, data):
    return sampler.sample_transitions(key, data, batch_size, stack_size=stack_size,
                                      update_horizon=agent.update_horizon, gamma=agent.gamma)

  return sample


def make_diagnose(agent, stack_size, batch_size, delta=0.01):
  """The per-iteration diagnostics the Runner jits (FixedReplayRunner.__init__)."""

  def diagnose(params, data, key):
    batch = sampler.sample_transitions(key, data, batch_size, stack_size=stack_size,
                                       update_horizon=agent.update_horizon, gamma=agent.gamma)
    phi = agent.apply(params, batch.state).representation
    phi_next = agent.apply(params, batch.next_state).representation
    return diagnostics.feature_diagnostics(phi, phi_next, delta=delta)

  return jax.jit(diagnose)


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


# ----------------------------------------------------------------------------- benchmarks


def make_unscanned_step(train_step, donate):
  """Baseline for K=1: the same `(state, data, totals) -> (state, totals)` jit call as
  `learner.make_train_steps(step, 1)`, but one plain step, no lax.scan around it."""

  def one_step(state, data, totals):
    state, _, metrics = train_step(state, data)
    return state, {k: totals[k] + v for k, v in metrics.items()}

  return jax.jit(one_step, donate_argnums=(0, 2) if donate else ())


def bench_train(agent, ds, k, unroll, args):
  """(compile s, steps/s) of one fused K-step loop; unroll None = no scan (K=1)."""
  state = agent.init(jax.random.PRNGKey(args.seed), ds.replay.state_shape)
  step = learner.make_train_step(agent.loss, agent.optimizer,
                                 make_sample_fn(agent, ds.stack_size, agent.batch_size),
                                 agent.target_update_period)
  totals = learner.zero_metrics(step, state, ds.data)
  donate = jax.default_backend() != "cpu"  # as the Runner (XLA:CPU cannot donate)
  fn = (make_unscanned_step(step, donate) if unroll is None
        else learner.make_train_steps(step, k, unroll, donate))
  train_steps, compile_s = timed(lambda: fn.lower(state, ds.data, totals).compile())
  state, totals = block(train_steps(state, ds.data, totals))  # warm-up call
  calls, start = 0, time.perf_counter()
  while calls * k < args.steps or time.perf_counter() - start < args.min_seconds:
    # Back-to-back dispatch, one sync at the end, as FixedReplayRunner._train.
    state, totals = train_steps(state, ds.data, totals)
    calls += 1
    if calls % 8 == 0:  # keep the async queue short; negligible for the rate
      block(totals)
  block((state, totals))
  elapsed = time.perf_counter() - start
  loss = float(totals["Train/Loss"]) / ((calls + 1) * k)
  if not math.isfinite(loss):
    log(f"    warning: non-finite mean loss {loss}")
  return compile_s, calls * k / elapsed


def bench_diag(agent, ds, args):
  """(compile s, seconds per call) of the Runner's diagnostics."""
  params = agent.init(jax.random.PRNGKey(args.seed), ds.replay.state_shape).params
  diagnose = make_diagnose(agent, ds.stack_size, args.diag_batch)
  keys = list(jax.random.split(jax.random.PRNGKey(1), args.diag_calls + 1))
  fn, compile_s = timed(lambda: diagnose.lower(params, ds.data, keys[0]).compile())
  block(fn(params, ds.data, keys[0]))
  times = []
  for key in keys[1:]:
    _, t = timed(lambda: block(fn(params, ds.data, key)))
    times.append(t)
  return compile_s, float(np.median(times))


def bench_sample(ds, args):
  """Seconds per batch-32 minibatch: ours per call, ours in a scan, Dopamine's."""
  sample = jax.jit(functools.partial(sampler.sample_transitions, batch_size=args.batch_size,
                                     stack_size=ds.stack_size, update_horizon=1, gamma=0.99))
  keys = list(jax.random.split(jax.random.PRNGKey(2), args.sample_calls))  # sliced up front
  block(sample(keys[0], ds.data))
  start = time.perf_counter()
  for key in keys:
    block(sample(key, ds.data))
  per_call = (time.perf_counter() - start) / args.sample_calls

  # Amortized inside one jit call, as in the training loop. The uint8 frames are
  # reduced to a checksum so that XLA cannot drop the gathers; that adds a read of them.
  def scan_samples(key, data):
    def body(total, k):
      batch = sampler.sample_transitions(k, data, args.batch_size, stack_size=ds.stack_size)
      return total + jnp.sum(batch.state, dtype=jnp.int32) + jnp.sum(
          batch.next_state, dtype=jnp.int32), None
    return jax.lax.scan(body, jnp.int32(0), jax.random.split(key, 100))[0]

  scan_fn = jax.jit(scan_samples).lower(keys[0], ds.data).compile()
  block(scan_fn(keys[0], ds.data))
  reps = max(1, args.sample_calls // 100)
  start = time.perf_counter()
  for key in keys[:reps]:
    block(scan_fn(key, ds.data))
  in_scan = (time.perf_counter() - start) / (reps * 100)

  # Dopamine's host-side numpy sampler, on a buffer loaded from the same files.
  from dopamine.tf.replay_memory import circular_replay_buffer  # imports TensorFlow
  buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=ds.frame_shape, stack_size=ds.stack_size,
      replay_capacity=ds.capacity, batch_size=args.batch_size)
  buffer.load(ds.dir, 0)
  np.random.seed(args.seed)  # Dopamine samples with the global numpy RNG.
  buffer.sample_transition_batch(args.batch_size)
  start = time.perf_counter()
  for _ in range(args.sample_calls):
    buffer.sample_transition_batch(args.batch_size)
  dopamine = (time.perf_counter() - start) / args.sample_calls
  return per_call, in_scan, dopamine


def bench_eval(agent, env_name, state_shape, num_envs, args):
  """(agent steps/s, steps, episodes) of one evaluation phase."""
  params = agent.init(jax.random.PRNGKey(args.seed), state_shape).params
  act = jax.jit(agent.act)
  policy = lambda states, k: act(params, states, k, EVAL_EPSILON)
  key = jax.random.PRNGKey(3)
  # Compile for what evaluate() passes: one key per environment.
  block(policy(np.zeros((num_envs,) + tuple(state_shape), np.uint8),
               jax.random.split(key, num_envs)))
  overrides = ({"max_episode_steps": args.eval_max_episode_steps}
               if args.eval_max_episode_steps > 0 else {})
  envs = [factory.create_environment(env_name, seed=args.seed + i, **overrides)
          for i in range(num_envs)]
  result, elapsed = timed(lambda: evaluation.evaluate(policy, envs, args.eval_steps, key))
  return result.num_steps / elapsed, result.num_steps, result.num_episodes


# ----------------------------------------------------------------------------- main


def environment_lines():
  devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
  cpus = os.cpu_count()
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = cpus
  return [
      f"jax {jax.__version__}, backend `{jax.default_backend()}`, devices [{devices}]",
      f"CPUs: {cpus} ({usable} usable by this process), {platform.machine()}, "
      f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
  ]


def fmt_rate(rate, unit):
  return f"{rate:,.0f} {unit}" if rate >= 100 else f"{rate:,.1f} {unit}"


def fmt_time(seconds):
  if seconds >= 1:
    return f"{seconds:.2f} s"
  if seconds >= 1e-3:
    return f"{seconds * 1e3:.2f} ms"
  return f"{seconds * 1e6:.0f} us"


def train_settings(ks, max_unroll):
  """(K, unroll) pairs in run order; unroll None is the no-scan K=1 baseline."""
  settings = [(1, None)] if 1 in ks else []
  for k in ks:
    settings += [(k, u) for u in sorted({1, k} if k <= max_unroll else {1})]
  return settings


def main(argv=None):
  args = parse_args(argv)
  wall_start = time.perf_counter()
  load_start = os.getloadavg()[0]  # other processes on the machine skew every figure
  for line in environment_lines():
    log(line)
  try:
    from batch_rl.runners.offline import DEFAULT_FUSED_STEPS
    log(f"Runner's default fused steps on `{jax.default_backend()}`: "
        f"{DEFAULT_FUSED_STEPS.get(jax.default_backend(), 1)}")
  except ImportError:
    pass
  rows = []  # (section, network / data, setting, compile s, time, rate)

  def add(section, what, setting, compile_s=None, time_s="", rate=""):
    compile_s = "" if compile_s is None else f"{compile_s:.1f}"
    rows.append((section, what, setting, compile_s, time_s, rate))
    log(f"  {section:6s} | {what} | {setting} | "
        f"{f'compile {compile_s} s | ' if compile_s else ''}{time_s} | {rate}")

  with tempfile.TemporaryDirectory(prefix="batch_rl_throughput_") as root:
    datasets, seen = {}, set()  # seen: frame shapes already sampled and evaluated
    for name in args.networks:
      label, network, frame_shape, stack, env_name = NETWORKS[name]
      atari = len(frame_shape) == 2
      if frame_shape not in datasets:
        log(f"Synthesizing {'Atari' if atari else 'MinAtar'} data ...")
        datasets[frame_shape] = Dataset(
            root, frame_shape, args.atari_capacity if atari else args.minatar_capacity,
            stack, args.seed)
      ds = datasets[frame_shape]
      agent = dqn.DQNAgent(num_actions=NUM_ACTIONS, network=network,
                           batch_size=args.batch_size)
      n_params = networks.num_parameters(
          jax.eval_shape(lambda key: agent.init(key, ds.replay.state_shape),
                         jax.random.PRNGKey(0)).params)
      net = f"{label}, {n_params / 1e6:.2f}M params"
      log(f"== {net}, states {ds.replay.state_shape}")

      if "train" in args.sections:
        slowest = 0.0  # seconds per step of the slowest setting so far
        for k, unroll in train_settings(args.ks, args.max_unroll):
          setting = (f"batch {args.batch_size}, K=1, no scan (plain jit of one step)"
                     if unroll is None else f"batch {args.batch_size}, K={k}, unroll={unroll}")
          if args.max_call_seconds > 0 and k * slowest > args.max_call_seconds:
            add("train", net, setting, None, "skipped",
                f"~{k * slowest:.0f} s per call > --max_call_seconds {args.max_call_seconds:g}")
            continue
          compile_s, rate = bench_train(agent, ds, k, unroll, args)
          slowest = max(slowest, 1 / rate)
          add("train", net, setting, compile_s, f"{fmt_time(1 / rate)}/step",
              fmt_rate(rate, "steps/s"))
      if "diag" in args.sections:
        compile_s, t = bench_diag(agent, ds, args)
        add("diag", net, f"{args.diag_batch} transitions, 2 forward passes + SVD", compile_s,
            f"{fmt_time(t)}/call", fmt_rate(1 / t, "calls/s"))
      if "sample" in args.sections and frame_shape not in seen:
        per_call, in_scan, dopamine = bench_sample(ds, args)  # the network plays no part
        data = f"states {ds.replay.state_shape}"
        for what, t in (("jitted sample_transitions, 1 per call", per_call),
                        ("sample_transitions in lax.scan of 100 (+checksum)", in_scan),
                        ("Dopamine OutOfGraphReplayBuffer (numpy)", dopamine)):
          add("sample", data, f"batch {args.batch_size}, {what}", None,
              f"{fmt_time(t)}/batch", fmt_rate(1 / t, "batches/s"))
      if "eval" in args.sections and frame_shape not in seen:
        # One network per environment: the first selected that plays it.
        for num_envs in args.eval_envs:
          rate, steps, episodes = bench_eval(agent, env_name, ds.replay.state_shape,
                                             num_envs, args)
          add("eval", net, f"{env_name}, {num_envs} env(s), {steps} steps, "
              f"{episodes} episodes", None, f"{fmt_time(1 / rate)}/step",
              fmt_rate(rate, "agent steps/s"))
      seen.add(frame_shape)

  total = time.perf_counter() - wall_start
  load_end = os.getloadavg()[0]
  print()
  print("| section | network / data | setting | compile (s) | time | rate |")
  print("|---|---|---|---|---|---|")
  for row in rows:
    print("| " + " | ".join(row) + " |")
  print()
  for line in environment_lines():
    print(f"- {line}")
  print(f"- 1-min load average at start {load_start:.1f}, at end {load_end:.1f} "
        f"(other processes compete for the {os.cpu_count()} CPUs)")
  print(f"- total benchmark wall time {total:.0f} s; flags: "
        f"{' '.join(sys.argv[1:] if argv is None else argv) or '(defaults)'}")


if __name__ == "__main__":
  main()

r"""Training from a streamed device window vs the fully loaded store: throughput, stalls, RSS.

  python benchmarks/streaming.py [--checkpoints 2] [--capacity 100000] [--window 20000]
      [--slots 8] [--refresh_every 1] [--train_steps 300] [--sample_steps 3000]
  python benchmarks/streaming.py --smoke   # 2 x 1,000 transitions in a temporary folder

Writes (once, then reused) `--checkpoints` synthetic Atari checkpoints of `--capacity`
84x84 transitions in the DQN Replay format (benchmarks/dataset_loading.py's frames),
converts them into a memory-mapped store, then in a fresh process per mode (nothing
else in its peak memory):

  loaded   load_fixed_replay(store_dir=...) + jax.device_put, as the Runner does without
           streaming (on the CPU backend the device arrays alias the map)
  stream   load_fixed_replay(store_dir=..., stream=True) + StreamingReplay(window):
           the Runner's `stream_window_transitions` path

and measures, after a warm-up (compile) call:

  train    gradient steps per second of the Runner's training loop (the Nature DQN of
           Dopamine, batch 32, one jitted step per call as on CPU), with
           `StreamingReplay.advance` before each call in the stream mode;
  sample   minibatches of 32 (state + next state) per second, one jitted sampler call
           per step: a consumer much faster than training, to show whether the prefetch
           keeps up (stalls);
  memory   peak RSS above the post-import baseline (VmHWM), and RssAnon / RssFile at the
           end (file-backed pages are the shared page cache of the store).

--smoke runs both modes on 2 checkpoints of 1,000 transitions written to a temporary
folder (removed at the end), a 400-transition window, 2 training steps and 30 sampled
batches: its figures only show that the code runs.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
mode, store_dir = sys.argv[1], sys.argv[2]
window, slots, refresh, train_steps, sample_steps = map(int, sys.argv[3:8])
import jax, jax.numpy as jnp, numpy as np
from batch_rl.agents import dqn, learner
from batch_rl.datasets import fixed_replay, streaming
from batch_rl.replay import sampler
def status(field):
  for line in open("/proc/self/status"):
    if line.startswith(field + ":"):
      return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")
base = status("VmRSS")
t0 = time.perf_counter()
replay = fixed_replay.load_fixed_replay(store_dir=store_dir, stack_size=4,
                                        stream=(mode == "stream"))
stream = None
if mode == "stream":
  stream = streaming.StreamingReplay(replay, window, seed=0, num_slots=slots,
                                     refresh_every=refresh)
  data = stream.start(0)
  next_data = lambda: stream.advance(1)
else:
  data = jax.device_put(replay.arrays)
  next_data = lambda: data
jax.block_until_ready(data)
out = {"start_seconds": time.perf_counter() - t0, "backend": jax.default_backend(),
       "transitions": replay.num_transitions}
if stream is not None:
  out["describe"] = stream.describe()
agent = dqn.DQNAgent(num_actions=6)
state = agent.init(jax.random.PRNGKey(0), replay.state_shape)
sample = lambda k, d: sampler.sample_transitions(k, d, agent.batch_size, stack_size=4)
step = learner.make_train_step(agent.loss, agent.optimizer, sample, agent.target_update_period)
train = learner.make_train_steps(step, 1)
totals = learner.zero_metrics(step, state, data)
state, totals = train(state, next_data(), totals)  # compile
jax.block_until_ready(totals)
stalls0 = stream.stalls if stream else 0
t0 = time.perf_counter()
for _ in range(train_steps):
  state, totals = train(state, next_data(), totals)
jax.block_until_ready(totals)
out["train_steps_per_second"] = train_steps / (time.perf_counter() - t0)
out["train_stalls"] = (stream.stalls - stalls0) if stream else 0
out["train_refreshes"] = stream.refreshes if stream else 0
sample_jit = jax.jit(lambda k, d: sampler.sample_transitions(k, d, 32, stack_size=4))
keys = jax.random.split(jax.random.PRNGKey(1), sample_steps + 1)
jax.block_until_ready(sample_jit(keys[0], next_data()))
stalls0, stall_s0 = (stream.stalls, stream.stall_seconds) if stream else (0, 0.0)
t0 = time.perf_counter()
for k in keys[1:]:
  batch = sample_jit(k, next_data())
jax.block_until_ready(batch)
out["sample_batches_per_second"] = sample_steps / (time.perf_counter() - t0)
out["sample_stalls"] = (stream.stalls - stalls0) if stream else 0
out["sample_stall_seconds"] = (stream.stall_seconds - stall_s0) if stream else 0.0
if stream:
  stream.close()
out["peak_rss_bytes"] = status("VmHWM") - base
out["rss_anon_bytes"] = status("RssAnon")
out["rss_file_bytes"] = status("RssFile")
print(json.dumps(out))
"""


def write_data(replay_dir: str, checkpoints: int, capacity: int) -> None:
  sys.path.insert(0, HERE)
  from dataset_loading import synthetic_frames  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for suffix in range(checkpoints):
    observation = np.empty((capacity, 84, 84), np.uint8)
    for start in range(0, capacity, 10_000):
      n = min(10_000, capacity - start)
      observation[start:start + n] = synthetic_frames(rng, suffix * capacity + start, n)
    fmt.write_shard(replay_dir, suffix, observation=observation,
                    action=rng.integers(0, 6, capacity, dtype=np.int32),
                    reward=rng.choice([-1.0, 0.0, 1.0], capacity, p=[0.01, 0.98, 0.01]),
                    terminal=(rng.random(capacity) < 1 / 2000).astype(np.uint8),
                    add_count=capacity + 123)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoints", type=int, default=2)
  parser.add_argument("--capacity", type=int, default=100_000)
  parser.add_argument("--window", type=int, default=20_000)
  parser.add_argument("--slots", type=int, default=8)
  parser.add_argument("--refresh_every", type=int, default=1)
  parser.add_argument("--train_steps", type=int, default=300)
  parser.add_argument("--sample_steps", type=int, default=3000)
  parser.add_argument("--data_dir", default=None,
                      help="where the data is written once and reused (default "
                      "/tmp/batch_rl_bench; with --smoke a temporary folder)")
  parser.add_argument("--smoke", action="store_true",
                      help="2 x 1,000 transitions in a temporary folder, 2 training steps")
  args = parser.parse_args()
  if args.smoke:
    args.checkpoints, args.capacity, args.window = 2, 1000, 400
    args.train_steps, args.sample_steps = 2, 30
  temporary = args.data_dir is None and args.smoke
  if args.data_dir is None:
    args.data_dir = tempfile.mkdtemp(prefix="streaming_") if temporary else (
        "/tmp/batch_rl_bench")
  try:
    measure(args)
  finally:
    if temporary:
      shutil.rmtree(args.data_dir, ignore_errors=True)


def measure(args) -> None:
  from batch_rl.datasets import store  # pylint: disable=g-import-not-at-top
  name = f"{args.checkpoints}x{args.capacity}"
  replay_dir = os.path.join(args.data_dir, f"ckpts_{name}")
  store_dir = os.path.join(args.data_dir, f"store_{name}")
  if not os.path.exists(os.path.join(replay_dir, f"add_count_ckpt.{args.checkpoints - 1}.gz")):
    write_data(replay_dir, args.checkpoints, args.capacity)
  if not store.is_store(store_dir):
    store.convert(replay_dir, store_dir)
  results = {}
  for mode in ("loaded", "stream"):
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, store_dir, str(args.window), str(args.slots),
         str(args.refresh_every), str(args.train_steps), str(args.sample_steps)],
        capture_output=True, text=True)
    if out.returncode != 0:
      sys.exit(f"the {mode} mode failed:\n{out.stderr}")
    results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
  gb = lambda b: f"{b / 1e9:.2f} GB"
  frames = args.checkpoints * args.capacity * 84 * 84
  load = os.getloadavg()[0]
  print(f"{results['loaded']['transitions']:,} valid transitions ({args.checkpoints} x "
        f"{args.capacity:,}); frames {gb(frames)}; {os.cpu_count()} CPUs; JAX backend "
        f"{results['loaded']['backend']}; load average {load:.1f}")
  print(f"stream: {results['stream']['describe']}")
  print("| mode | start-up | train steps/s | stalls (train) | sample batches/s | "
        "stalls (sample) | peak RSS over baseline | RssAnon / RssFile at end |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for mode, r in results.items():
    print(f"| {mode} | {r['start_seconds']:.2f} s | {r['train_steps_per_second']:.1f} | "
          f"{r['train_stalls']} | {r['sample_batches_per_second']:.0f} | "
          f"{r['sample_stalls']} ({r['sample_stall_seconds']:.1f} s) | "
          f"{gb(r['peak_rss_bytes'])} | {gb(r['rss_anon_bytes'])} / "
          f"{gb(r['rss_file_bytes'])} |")


if __name__ == "__main__":
  main()

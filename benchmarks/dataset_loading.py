r"""Start-up time and peak memory of loading one DQN Replay checkpoint, three ways.

  python benchmarks/dataset_loading.py [--capacity 250000] [--data_dir /tmp/batch_rl_bench]
  python benchmarks/dataset_loading.py --smoke   # 1,000 transitions in a temporary folder

--smoke runs every reader and the sampling on a 1,000-transition checkpoint written to
a temporary folder (removed at the end) with 20 sampled batches: its figures only show
that the code runs.

Writes (once, then reused) a synthetic Atari checkpoint of `--capacity` transitions in
the DQN Replay format (84x84 frames of moving blocks on a static background, episodes of
~2,000 steps, so gzip compresses it about as much as real frames), converts it once
into the memory-mapped store (timed), then in a fresh process each (nothing else in
their peak) measures the wall time and peak resident memory above the post-import
baseline of:

  dopamine   dopamine-rl's OutOfGraphReplayBuffer(...).load(dir, 0)
  ours .gz   load_fixed_replay(dir)         (decompresses into preallocated arrays)
  ours store load_fixed_replay(store_dir=)  (memory-maps the converted store)

and, from the store, the minibatch throughput: batches of 32 stacked states (and next
states) per second (--sample_batches of them), sampled and gathered inside one jitted call on the default JAX
backend from the memory-mapped frames. The page cache is warm for every reader (the
files were just written or read); a cold cache adds disk read time to the .gz readers
(compressed bytes) and to the store's first touches (only the pages sampled).
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

CHILD = r"""
import json, os, sys, time
mode, path, sample_batches = sys.argv[1], sys.argv[2], int(sys.argv[4])
import jax, numpy as np
from batch_rl.datasets import fixed_replay
from batch_rl.replay import sampler
from dopamine.tf.replay_memory import circular_replay_buffer
from batch_rl.tf_utils import tensorflow
tensorflow()
def rss():
  return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
with open("/proc/self/clear_refs", "w") as f:
  f.write("5")  # resets the peak (VmHWM) to the current RSS, so the imports' peak is out
base = rss()
def peak():
  for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) * 1024
def status(field):
  for line in open("/proc/self/status"):
    if line.startswith(field + ":"):
      return int(line.split()[1]) * 1024
t0 = time.perf_counter()
if mode == "dopamine":
  buf = circular_replay_buffer.OutOfGraphReplayBuffer(
      observation_shape=(84, 84), stack_size=4, replay_capacity=int(sys.argv[3]), batch_size=32)
  buf.load(path, 0)
elif mode == "gz":
  data = fixed_replay.load_fixed_replay(path, stack_size=4)
else:
  data = fixed_replay.load_fixed_replay(store_dir=path, stack_size=4)
seconds = time.perf_counter() - t0
out = {"seconds": seconds, "peak_bytes": peak() - base, "rss_after_bytes": rss() - base}
if mode != "dopamine":
  arrays = jax.device_put(data.arrays)
  # The arrays are an argument, not a closure: captured arrays become compile-time constants.
  sample = jax.jit(lambda key, a: sampler.sample_transitions(key, a, 32, stack_size=4))
  keys = jax.random.split(jax.random.PRNGKey(0), sample_batches)
  jax.block_until_ready(sample(keys[0], arrays))
  t0 = time.perf_counter()
  for k in keys[1:]:
    batch = sample(k, arrays)
  jax.block_until_ready(batch)
  out["batches_per_second"] = (len(keys) - 1) / (time.perf_counter() - t0)
  out["rss_after_sampling_bytes"] = rss() - base
  # File-backed pages are the page cache, shared by every process mapping the store.
  out["rss_file_after_sampling_bytes"] = status("RssFile")
  out["backend"] = jax.default_backend()
print(json.dumps(out))
"""


def synthetic_frames(rng, start: int, count: int) -> np.ndarray:
  """uint8 [count, 84, 84]: a static background, three blocks moving with time, noise."""
  t = np.arange(start, start + count)[:, None, None]
  ys, xs = np.mgrid[0:84, 0:84]
  frames = np.where(ys < 8, 90, np.where(ys >= 76, 60, 0)).astype(np.uint8)
  frames = np.repeat(frames[None], count, axis=0)
  for k, (speed, size, value) in enumerate([(1, 4, 200), (3, 2, 255), (2, 6, 140)]):
    cy = (13 + 7 * k + (t * speed) // 3) % 60 + 12
    cx = (t * (speed + k) + 17 * k) % 78 + 3
    block = (ys >= cy) & (ys < cy + size) & (xs >= cx) & (xs < cx + size)
    frames[block] = value
  # A score-like band of random digits-worth of pixels, so not every frame repeats.
  frames[:, 2:6, 20:60] = rng.integers(0, 4, (count, 4, 40), dtype=np.uint8) * 64
  return frames


def write_checkpoint(path: str, capacity: int) -> None:
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  observation = np.empty((capacity, 84, 84), np.uint8)
  for start in range(0, capacity, 10_000):
    n = min(10_000, capacity - start)
    observation[start:start + n] = synthetic_frames(rng, start, n)
  terminal = (rng.random(capacity) < 1 / 2000).astype(np.uint8)
  fmt.write_shard(path, 0, observation=observation,
                  action=rng.integers(0, 6, capacity, dtype=np.int32),
                  reward=rng.choice([-1.0, 0.0, 1.0], capacity, p=[0.01, 0.98, 0.01]),
                  terminal=terminal, add_count=capacity + 123)


def child(mode: str, path: str, capacity: int, sample_batches: int) -> dict:
  out = subprocess.run([sys.executable, "-c", CHILD, mode, path, str(capacity),
                        str(sample_batches)], capture_output=True, text=True)
  if out.returncode != 0:
    sys.exit(f"the {mode} reader failed:\n{out.stderr}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--capacity", type=int, default=250_000)
  parser.add_argument("--data_dir", default=None,
                      help="where the data is written once and reused (default "
                      "/tmp/batch_rl_bench; with --smoke a temporary folder)")
  parser.add_argument("--repeats", type=int, default=1, help="runs per reader (min is kept)")
  parser.add_argument("--sample_batches", type=int, default=3000,
                      help="minibatches sampled per reader of ours")
  parser.add_argument("--smoke", action="store_true",
                      help="1,000 transitions in a temporary folder, 20 batches")
  args = parser.parse_args()
  if args.smoke:
    args.capacity, args.sample_batches, args.repeats = 1000, 20, 1
  temporary = args.data_dir is None and args.smoke
  if args.data_dir is None:
    args.data_dir = tempfile.mkdtemp(prefix="dataset_loading_") if temporary else (
        "/tmp/batch_rl_bench")
  try:
    measure(args)
  finally:
    if temporary:
      shutil.rmtree(args.data_dir, ignore_errors=True)


def measure(args) -> None:
  from batch_rl.datasets import store  # pylint: disable=g-import-not-at-top
  replay_dir = os.path.join(args.data_dir, f"ckpt_{args.capacity}")
  store_dir = os.path.join(args.data_dir, f"store_{args.capacity}")
  if not os.path.exists(os.path.join(replay_dir, "add_count_ckpt.0.gz")):
    t0 = time.perf_counter()
    write_checkpoint(replay_dir, args.capacity)
    print(f"wrote the synthetic checkpoint in {time.perf_counter() - t0:.0f} s")
  convert_seconds = None
  if not store.is_store(store_dir):
    t0 = time.perf_counter()
    store.convert(replay_dir, store_dir)
    convert_seconds = time.perf_counter() - t0

  frames = args.capacity * 84 * 84
  gz = sum(os.path.getsize(os.path.join(replay_dir, f)) for f in os.listdir(replay_dir))
  results = {}
  for mode in ("dopamine", "gz", "store"):
    runs = [child(mode, store_dir if mode == "store" else replay_dir, args.capacity,
                  args.sample_batches) for _ in range(args.repeats)]
    results[mode] = min(runs, key=lambda r: r["seconds"])
  gb = lambda b: f"{b / 1e9:.2f} GB"
  print(f"{args.capacity:,} transitions; frames {gb(frames)}; .gz files {gb(gz)}; "
        f"{os.cpu_count()} CPUs; JAX backend {results['store']['backend']}; load average "
        f"{os.getloadavg()[0]:.2f}")
  if convert_seconds is not None:
    print(f"one-time conversion to the store: {convert_seconds:.1f} s")
  print("| reader | load time | peak RSS over baseline | peak / frames |")
  print("| --- | --- | --- | --- |")
  names = {"dopamine": "Dopamine OutOfGraphReplayBuffer.load", "gz": "ours, .gz files",
           "store": "ours, memory-mapped store"}
  for mode, r in results.items():
    print(f"| {names[mode]} | {r['seconds']:.2f} s | {gb(r['peak_bytes'])} | "
          f"{r['peak_bytes'] / frames:.2f} |")
  s = results["store"]
  print(f"store start-up speed-up over Dopamine: {results['dopamine']['seconds'] / s['seconds']:.0f}x")
  for mode in ("gz", "store"):
    r = results[mode]
    print(f"sampling, {names[mode]}: {r['batches_per_second']:,.0f} batches of 32 (state + next "
          f"state, 4x84x84 each) per second; RSS over baseline after {args.sample_batches:,} "
          f"batches {gb(r['rss_after_sampling_bytes'])}, of which file-backed (shared page cache) "
          f"about {gb(r['rss_file_after_sampling_bytes'])}")


if __name__ == "__main__":
  main()

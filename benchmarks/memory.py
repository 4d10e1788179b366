r"""Peak memory of loading DQN Replay checkpoints, relative to the arrays loaded.

  python benchmarks/memory.py [--shards 2] [--capacity 100000]
  python benchmarks/memory.py --smoke    # 2 shards of 1,000 transitions

Writes `--shards` synthetic Atari checkpoints (84x84 frames) in the DQN Replay format
to a temporary folder, then, in a fresh process (so nothing else is in its peak),
measures the peak resident memory (high-water mark minus the resident size after
imports) of `load_fixed_replay` followed by
`jax.device_put`, the Runner's path. Prints the peak increase over the process's
baseline after imports, the loaded arrays' size, and their ratio (target: <= 1.3).
--smoke loads 2 shards of 1,000 transitions: it shows that the code runs (at that size
the ratio is dominated by allocator noise, not the arrays).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import resource, sys
import jax, numpy as np
from batch_rl.datasets import fixed_replay
from batch_rl.tf_utils import tensorflow
tensorflow()  # import everything first: the baseline includes the libraries
import os
# Current resident size (not the high-water mark, which the imports' transient peak set).
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
replay = fixed_replay.load_fixed_replay(sys.argv[1], stack_size=4)
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
device = jax.block_until_ready(jax.device_put(replay.arrays))
after_put = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
nbytes = sum(a.nbytes for a in replay.arrays)
print(base, after_load, after_put, nbytes)
"""


def write_data(path: str, shards: int, capacity: int) -> None:
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for suffix in range(shards):
    terminal = (rng.uniform(size=capacity) < 0.002).astype(np.uint8)
    fmt.write_shard(path, suffix,
                    observation=rng.integers(0, 255, (capacity, 84, 84), dtype=np.uint8),
                    action=rng.integers(0, 6, capacity, dtype=np.int32),
                    reward=rng.choice([-1.0, 0.0, 1.0], capacity).astype(np.float32),
                    terminal=terminal, add_count=capacity)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shards", type=int, default=2)
  parser.add_argument("--capacity", type=int, default=100_000)
  parser.add_argument("--smoke", action="store_true", help="2 shards of 1,000 transitions")
  args = parser.parse_args()
  if args.smoke:
    args.shards, args.capacity = 2, 1000
  with tempfile.TemporaryDirectory() as tmp:
    write_data(tmp, args.shards, args.capacity)
    out = subprocess.run([sys.executable, "-c", CHILD, tmp], capture_output=True, text=True)
  if out.returncode != 0:
    sys.exit(f"the measuring process failed:\n{out.stderr}")
  base, after_load, after_put, nbytes = (int(x) for x in out.stdout.split()[-4:])
  gb = lambda b: f"{b / 1e9:.3f} GB"
  print(f"backend: {__import__('jax').default_backend()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}")
  print("| shards x capacity | arrays | peak over baseline: load | load + device_put | ratio |")
  print("| --- | --- | --- | --- | --- |")
  print(f"| {args.shards} x {args.capacity:,} | {gb(nbytes)} | {gb(after_load - base)} | "
        f"{gb(after_put - base)} | {(after_put - base) / nbytes:.2f} |")


if __name__ == "__main__":
  main()

r"""Seed-steps per second of the vmapped bsuite program, at 1, 8 and 64 seeds.

  python benchmarks/bsuite_lab_throughput.py                 # 1, 8, 64 seeds
  python benchmarks/bsuite_lab_throughput.py --seeds 1,8 --steps 2000
  python benchmarks/bsuite_lab_throughput.py --smoke         # tiny: shows that it runs
                                                             # (random catch-shaped data)

Runs, one after the other in one invocation, `train.py` with gin_configs/bsuite/dqn.gin
(offline DQN, 2 x 64 ReLU MLP, batch 32, 100 gradient steps fused per call) on the catch
dataset (logged on first use), with `FixedReplayRunner.num_seeds` = S and one iteration
of --steps gradient steps and no evaluation, and reads the run's own
Train/StepsPerSecond (gradient steps of the program per second, compile time excluded).
Seed-steps/s = S x that. Prints a markdown table with the speed-up over one seed, the
ratio the runs measured side by side give; absolute figures move with the machine's
load.
"""
import argparse
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", default="1,8,64")
  p.add_argument("--steps", type=int, default=10_000)
  p.add_argument("--dataset_steps", type=int, default=100_000,
                 help="bsuite_dataset.num_steps (the lab's default dataset)")
  p.add_argument("--smoke", action="store_true")
  return p.parse_args(argv)


def random_catch_dataset(replay_dir, size=1000) -> None:
  """`size` random catch-shaped transitions (float32 (10, 5) frames, 3 actions, an
  episode end every 9 steps) in the DQN Replay format: the smoke run's data, without
  the behaviour run that logs the real dataset."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from batch_rl.datasets import dqn_replay_format as fmt  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  terminal = (np.arange(size) % 9 == 8).astype(np.uint8)
  fmt.write_shard(replay_dir, 0, observation=(rng.random((size, 10, 5)) < 0.1),
                  action=rng.integers(0, 3, size), reward=terminal * rng.choice([-1.0, 1.0], size),
                  terminal=terminal, add_count=size, stack_size=1,
                  observation_dtype=np.float32)


def steps_per_second(base_dir, num_seeds, steps, dataset) -> float:
  from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
  bindings = [f"FixedReplayRunner.num_seeds = {num_seeds}",
              "FixedReplayRunner.num_iterations = 1",
              f"FixedReplayRunner.training_steps = {steps}",
              "FixedReplayRunner.evaluation_steps = 0",
              dataset]
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base_dir}",
       f"--gin_files={os.path.join(REPO, 'gin_configs', 'bsuite', 'dqn.gin')}",
       *[f"--gin_bindings={b}" for b in bindings]],
      capture_output=True, text=True, cwd=REPO)
  if result.returncode != 0:
    raise SystemExit(f"train.py failed for {num_seeds} seeds:\n{result.stderr[-3000:]}")
  run_dir = base_dir if num_seeds == 1 else os.path.join(base_dir, "seed_0")
  return float(summary_writer.read_scalars(run_dir)["Train/StepsPerSecond"][0][0])


def main(argv):
  args = parse_args(argv)
  seeds = [1, 2] if args.smoke else [int(s) for s in args.seeds.split(",")]
  steps = 200 if args.smoke else args.steps
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    dataset = f"bsuite_dataset.num_steps = {args.dataset_steps}"
    if args.smoke:
      random_catch_dataset(os.path.join(tmp, "data"))
      dataset = f"load_fixed_replay.replay_dir = '{os.path.join(tmp, 'data')}'"
    for s in seeds:
      rate = steps_per_second(os.path.join(tmp, f"s{s}"), s, steps, dataset)
      rows.append((s, rate, s * rate))
      print(f"{s} seeds: {rate:.0f} program steps/s, {s * rate:.0f} seed-steps/s",
            flush=True)
  base = rows[0][2]
  print("\n| seeds | program steps/s | seed-steps/s | vs 1 seed |")
  print("| --- | --- | --- | --- |")
  for s, rate, seed_rate in rows:
    print(f"| {s} | {rate:.0f} | {seed_rate:.0f} | {seed_rate / base:.2f}x |")


if __name__ == "__main__":
  main(sys.argv[1:])

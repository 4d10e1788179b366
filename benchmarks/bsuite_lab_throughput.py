r"""Member-steps per second of the vmapped bsuite program: 1, 8, 64 seeds, 8 rates x 8 seeds.

  python benchmarks/bsuite_lab_throughput.py                 # 1, 8, 64 seeds; 8x8
  python benchmarks/bsuite_lab_throughput.py --members 1,8,4x8 --steps 2000
  python benchmarks/bsuite_lab_throughput.py --smoke         # tiny: shows that it runs
                                                             # (random catch-shaped data)

Runs, one after the other in one invocation, `train.py` with gin_configs/bsuite/dqn.gin
(offline DQN, 2 x 64 ReLU MLP, batch 32, 100 gradient steps fused per call) on the catch
dataset (logged on first use), with `FixedReplayRunner.num_seeds` = S and one iteration
of --steps gradient steps and no evaluation, and reads the run's own
Train/StepsPerSecond (gradient steps of the program per second, compile time excluded).
A member spec "S" is S seeds; "SxL" is S seeds x L learning rates
(`FixedReplayRunner.learning_rates`, log-spaced from 1e-4 to 1e-2), S x L members.
Member-steps/s = members x that. Prints a markdown table with the speed-up over one seed, the
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
  p.add_argument("--members", default="1,8,64,8x8",
                 help="comma-separated: S (seeds) or SxL (seeds x learning rates)")
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


def parse_member(spec: str) -> tuple[int, int]:
  """'8' -> (8 seeds, 1 rate); '8x4' -> (8, 4)."""
  seeds, _, rates = spec.partition("x")
  try:
    return int(seeds), int(rates or 1)
  except ValueError:
    raise SystemExit(f"--members: {spec!r} is not S or SxL") from None


def learning_rates(count: int) -> list[float]:
  return [float(f"{10 ** (-4 + 2 * i / max(count - 1, 1)):.3g}") for i in range(count)]


def steps_per_second(base_dir, num_seeds, num_rates, steps, dataset) -> float:
  from batch_rl import summary_writer  # pylint: disable=g-import-not-at-top
  rates = learning_rates(num_rates) if num_rates > 1 else None
  bindings = [f"FixedReplayRunner.num_seeds = {num_seeds}",
              "FixedReplayRunner.num_iterations = 1",
              f"FixedReplayRunner.training_steps = {steps}",
              "FixedReplayRunner.evaluation_steps = 0",
              dataset] + (
                  [] if rates is None else [f"FixedReplayRunner.learning_rates = {rates}"])
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={base_dir}",
       f"--gin_files={os.path.join(REPO, 'gin_configs', 'bsuite', 'dqn.gin')}",
       *[f"--gin_bindings={b}" for b in bindings]],
      capture_output=True, text=True, cwd=REPO)
  if result.returncode != 0:
    raise SystemExit(f"train.py failed for {num_seeds} seeds:\n{result.stderr[-3000:]}")
  run_dir = base_dir if num_seeds == 1 else os.path.join(base_dir, "seed_0")
  if rates is not None:
    run_dir = os.path.join(base_dir, f"lr_{rates[0]}", "seed_0")
  return float(summary_writer.read_scalars(run_dir)["Train/StepsPerSecond"][0][0])


def main(argv):
  args = parse_args(argv)
  members = [parse_member(m) for m in ("1,2,1x2" if args.smoke else args.members).split(",")]
  steps = 200 if args.smoke else args.steps
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    dataset = f"bsuite_dataset.num_steps = {args.dataset_steps}"
    if args.smoke:
      random_catch_dataset(os.path.join(tmp, "data"))
      dataset = f"load_fixed_replay.replay_dir = '{os.path.join(tmp, 'data')}'"
    for s, l in members:
      rate = steps_per_second(os.path.join(tmp, f"s{s}x{l}"), s, l, steps, dataset)
      rows.append((s, l, rate, s * l * rate))
      print(f"{s} seeds x {l} learning rates: {rate:.0f} program steps/s, "
            f"{s * l * rate:.0f} member-steps/s", flush=True)
  base = rows[0][3] / (rows[0][0] * rows[0][1])
  print("\n| members | seeds | learning rates | program steps/s | member-steps/s | "
        "vs 1 member |")
  print("| --- | --- | --- | --- | --- | --- |")
  for s, l, rate, member_rate in rows:
    print(f"| {s * l} | {s} | {l} | {rate:.0f} | {member_rate:.0f} | "
          f"{member_rate / base:.2f}x |")


if __name__ == "__main__":
  main(sys.argv[1:])

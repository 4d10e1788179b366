r"""What the study launcher costs: launch to a run's first iteration, and `status`.

  python benchmarks/study_overhead.py                  # local executor (+ SLURM if up)
  python benchmarks/study_overhead.py --status_runs 200
  python benchmarks/study_overhead.py --smoke          # 2 iterations, status on 3 runs

Prints, side by side in one run:
  * the seconds from calling `batch_rl.study.launch.launch` on a one-run gridworld study
    to that run's first checkpoint (its first logged iteration), for the local executor
    and, when `sbatch` answers (scripts/local_slurm.sh start), the SLURM one, next to the
    same run started as a plain `train.py` command: the difference is the launcher's
    own cost (study checks, the job wrapper, SLURM scheduling);
  * the seconds `python -m batch_rl.study status DIR` takes on a study of
    --status_runs finished runs (copies of one finished run, the status read from their
    files alone), as a subprocess, Python start-up included.

--smoke measures every row with runs of 2 iterations instead of 4 and `status` on 3
runs; the SLURM row is measured only when `sinfo` answers and is listed as skipped
otherwise (it never waits for a cluster). Its figures only show that the code runs.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from batch_rl import checkpointing  # pylint: disable=wrong-import-position
from batch_rl.study import launch as study_launch  # pylint: disable=wrong-import-position
from batch_rl.study import files  # pylint: disable=wrong-import-position
from batch_rl.study import job  # pylint: disable=wrong-import-position
from batch_rl.study import spec  # pylint: disable=wrong-import-position

STUDY = """\
gin_files = ["gin_configs/gridworld/fqi_t10.gin"]
bindings = ["GridworldEnv.width = 6", "GridworldEnv.height = 6",
            "GridworldRunner.num_iterations = {iterations}",
            "GridworldRunner.iterations_per_call = 1",
            "GridworldRunner.dataset_episodes = 4", "GridworldRunner.fast_compile = True"]
[seeds]
binding = "GridworldRunner.seeds"
values = {seeds}
"""
ITERATIONS = 4  # of each measured run
SMOKE_ITERATIONS = 2


def study_text(seeds, iterations: int) -> str:
  return STUDY.format(seeds=seeds, iterations=iterations)


def _first_checkpoint(run_dir: str, start: float, proc=None, timeout: float = 900) -> float:
  checkpoints = os.path.join(run_dir, "checkpoints")
  while not checkpointing.list_iterations(checkpoints):
    if time.time() - start > timeout or (proc is not None and proc.poll() not in (None, 0)):
      raise RuntimeError(f"no checkpoint in {checkpoints} after {time.time() - start:.0f} s")
    time.sleep(0.05)
  return time.time() - start


def plain_train(work: str, iterations: int) -> float:
  """Seconds from starting train.py to its first checkpoint."""
  study_file = os.path.join(work, "plain.toml")
  with open(study_file, "w") as f:
    f.write(study_text([[0]], iterations))
  run = spec.load(study_file).runs(os.path.join(work, "plain"))[0]
  start = time.time()
  proc = subprocess.Popen(run.command(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  seconds = _first_checkpoint(run.run_dir, start, proc)
  proc.wait()
  return seconds


def through_launcher(work: str, executor: str, iterations: int) -> float:
  """Seconds from study_launch.launch(...) to the run's first checkpoint."""
  study_file = os.path.join(work, f"{executor}.toml")
  with open(study_file, "w") as f:
    f.write(study_text([[0]], iterations))
  study_dir = os.path.join(work, executor)
  options = {"max_parallel": 1} if executor == "local" else {}
  start = time.time()
  if executor == "local":  # blocks until the run ends: measure from another process
    proc = subprocess.Popen([sys.executable, "-m", "batch_rl.study", "launch", study_file,
                             f"--study_dir={study_dir}", "--executor=local"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = _first_checkpoint(os.path.join(study_dir, "seeds_0"), start, proc)
    proc.wait()
    return seconds
  result = study_launch.launch(study_file, study_dir, executor, **options)
  run_dir = result.plan.selected[0].run_dir
  seconds = _first_checkpoint(run_dir, start)
  while (files.read_json(job.status_path(run_dir)) or {}).get("state") not in (
      "done", "failed", "interrupted"):  # let the job end before its folder is removed
    time.sleep(0.5)
  return seconds


def status_time(work: str, runs: int, iterations: int) -> float:
  """Seconds of `python -m batch_rl.study status` on `runs` copies of a finished run."""
  study_file = os.path.join(work, "status.toml")
  with open(study_file, "w") as f:
    f.write(study_text([[k] for k in range(runs)], iterations))
  study_dir = os.path.join(work, "status")
  p = study_launch.plan(spec.load(study_file, check=False), study_dir)
  study_launch.write_record(p)
  source = os.path.join(work, "local", "seeds_0")  # the finished run of the local measurement
  for run in p.selected:
    shutil.rmtree(run.run_dir, ignore_errors=True)
    shutil.copytree(source, run.run_dir)
  start = time.time()
  out = subprocess.run([sys.executable, "-m", "batch_rl.study", "status", study_dir],
                       cwd=REPO, capture_output=True, text=True, check=True)
  seconds = time.time() - start
  print(out.stdout.strip().splitlines()[-1])
  return seconds


def slurm_answers() -> bool:
  """Whether a SLURM cluster answers here (`sbatch` exists and `sinfo` succeeds)."""
  if not (shutil.which("sbatch") and shutil.which("sinfo")):
    return False
  try:
    return subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode == 0
  except subprocess.TimeoutExpired:
    return False


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--status_runs", type=int, default=200)
  parser.add_argument("--smoke", action="store_true",
                      help="runs of 2 iterations, status on 3 runs")
  args = parser.parse_args()
  iterations = SMOKE_ITERATIONS if args.smoke else ITERATIONS
  if args.smoke:
    args.status_runs = 3
  work = tempfile.mkdtemp(prefix="study_overhead_")
  try:
    rows = [("train.py alone: start -> first iteration", plain_train(work, iterations))]
    rows.append(("study launch, local: launch -> first iteration",
                 through_launcher(work, "local", iterations)))
    if slurm_answers():
      rows.append(("study launch, slurm: launch -> first iteration",
                   through_launcher(work, "slurm", iterations)))
    else:
      rows.append(("study launch, slurm: launch -> first iteration", None))
      print("SLURM not answering (`sinfo` fails or is missing; scripts/local_slurm.sh "
            "start brings one up): the slurm row is skipped")
    rows.append((f"study status on {args.status_runs} finished runs",
                 status_time(work, args.status_runs, iterations)))
    print(f"\n{'measurement':<52} seconds")
    for name, seconds in rows:
      print(f"{name:<52} {'skipped' if seconds is None else f'{seconds:7.1f}':>7}")
    command = " ".join(["python benchmarks/study_overhead.py"] + sys.argv[1:])
    print(f"(runs of {iterations} iterations; load average {os.getloadavg()[0]:.1f}; "
          f"command: {command})")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()

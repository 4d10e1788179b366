"""Every script in benchmarks/ runs with --smoke and prints the figures it measures.

The scripts are found by glob: a new benchmark has to accept --smoke (tiny sizes, every
section it has) and needs an entry in CHECKS below that reads its figures back, or this
test fails for it. Each script runs as `python benchmarks/<script> --smoke` from the
repository root on the CPU backend, as a subprocess; a check parses the rows and lines
the script prints and asserts a number for every setting it measured. The numbers
themselves are not judged: a smoke run's sizes are too small to mean anything.
"""
import glob
import math
import os
import re
import subprocess
import sys
import time

import pytest

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(os.path.basename(path)
                 for path in glob.glob(os.path.join(REPO, "benchmarks", "*.py")))
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def number(text: str) -> float:
  """The first number in `text` ("1,234.5 steps/s" -> 1234.5); fails if there is none."""
  found = NUMBER.search(text)
  assert found, f"no number in {text!r}"
  return float(found.group().replace(",", ""))


def figure(text: str) -> float:
  """A measured figure: a finite number >= 0."""
  value = number(text)
  assert math.isfinite(value) and value >= 0, f"{value} in {text!r}"
  return value


def positive(text: str) -> float:
  value = figure(text)
  assert value > 0, f"{value} in {text!r}"
  return value


def table(output: str, header_start: str) -> list[list[str]]:
  """The cells of each row of the markdown table whose header starts with
  `header_start` (the separator row left out)."""
  lines = output.splitlines()
  starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
  assert starts, f"no table headed {header_start!r} in the output"
  rows = []
  for line in lines[starts[-1] + 2:]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
  assert rows, f"the table headed {header_start!r} has no rows"
  return rows


def matching(lines_or_rows, pattern: str) -> list:
  """The lines (or rows, by their joined cells) that contain `pattern` (a regex)."""
  found = []
  for item in lines_or_rows:
    text = item if isinstance(item, str) else " | ".join(item)
    if re.search(pattern, text):
      found.append(item)
  return found


# ------------------------------------------------------------------ one check per script


def check_bsuite_lab_throughput(output: str) -> None:
  rows = table(output, "| members |")
  assert [(int(r[1]), int(r[2])) for r in rows] == [(1, 1), (2, 1), (1, 2)]
  for members, seeds, rates, program_rate, member_rate, ratio in rows:
    assert int(members) == int(seeds) * int(rates)
    assert figure(member_rate) == pytest.approx(int(members) * positive(program_rate),
                                                rel=0.01)
    positive(ratio)
  assert rows[0][5] == "1.00x"


def check_sac_throughput(output: str) -> None:
  rows = table(output, "| update |")
  assert [r[0] for r in rows] == ["SAC, K = 1", "SAC, K = 10 fused", "CQL-SAC, K = 1"]
  for _, rate, ratio in rows:
    positive(rate)
    positive(ratio)
  assert rows[0][2] == "1.00x"
  rows = table(output, "| online loop |")
  assert [r[0] for r in rows] == ["online SAC, n = 1", "online SAC, n = 16"]
  for _, rate, ratio in rows:
    assert figure(ratio) == pytest.approx(positive(rate) / (1000 / 5.57), rel=0.02)


def check_checkpoint_cost(output: str) -> None:
  rows = table(output, "| runner | in the checkpoint |")
  for runner in ("offline MinAtar", "offline Atari", "online MinAtar", "online Atari"):
    assert matching(rows, "^" + runner), f"no row of {runner}"
  for row in rows:
    _, _, size, write, _, fsync, read, _, resume, peak = row
    positive(size)
    figure(write)
    figure(fsync)
    figure(read)
    if resume != "-":
      figure(resume)
    positive(peak)


def check_dataset_loading(output: str) -> None:
  rows = table(output, "| reader | load time |")
  readers = [row[0] for row in rows]
  assert readers == ["Dopamine OutOfGraphReplayBuffer.load", "ours, .gz files",
                     "ours, memory-mapped store"], readers
  for _, seconds, peak, ratio in rows:
    figure(seconds)
    figure(peak)
    figure(ratio)
  sampling = matching(output.splitlines(), r"^sampling, ours")
  assert len(sampling) == 2, sampling
  for line in sampling:
    positive(line.split(":", 1)[1])
  positive(matching(output.splitlines(), "speed-up over Dopamine")[0].split(":")[1])


def check_diagnostics_cost(output: str) -> None:
  rows = table(output, "| measurement | seconds | share of the training time |")
  names = [row[0].split(" (")[0] for row in rows]
  assert names == ["train", "diagnose without the new diagnostics", "diagnose with them",
                   "added by the new diagnostics"], names
  positive(rows[0][1])
  positive(rows[0][3])
  for _, seconds, share, cpu_seconds, cpu_share in rows[1:]:
    for value in (seconds, share, cpu_seconds, cpu_share):
      figure(value)
  positive(rows[1][1])
  positive(rows[2][1])
  tags = matching(output.splitlines(), r"new tags \(\d+\): ")
  assert len(tags) == 1 and number(tags[0].split("new tags")[1]) >= 6, tags
  convolutions = re.search(r"convolutions in the compiled diagnose: with (\d+), without "
                           r"(\d+)", output)
  assert convolutions, "no line of the compiled programs' convolutions"
  assert re.search(r"target: .*: (met|missed) \([\d.]+%", output), "no target line"


def check_memory(output: str) -> None:
  rows = table(output, "| shards x capacity |")
  assert len(rows) == 1, rows
  _, arrays, load, load_and_put, ratio = rows[0]
  positive(arrays)
  figure(load)
  figure(load_and_put)
  figure(ratio)


def check_online_throughput(output: str) -> None:
  lines = matching(output.splitlines(), r"^n = [\d.]+: ")
  assert lines, "no throughput line per n"
  for line in lines:
    rate = re.search(r": ([\d,.]+) env steps/s \(([\d,]+) updates", line)
    assert rate, line
    positive(rate.group(1))
    positive(rate.group(2))  # the smoke run trains too
    figure(re.search(r"= ([\d.]+) MiB on disk", line).group(1))
  fraction = matching(output.splitlines(), r"env\.step [\d.]+ us per step of a [\d.]+ us")
  assert len(fraction) == 1, "no line of the environment's share of a step"
  shares = re.search(r"env\.step ([\d.]+) us per step of a ([\d.]+) us training step "
                     r"\(([\d.]+)% in the environment", fraction[0])
  assert shares, fraction[0]
  positive(shares.group(1))
  positive(shares.group(2))
  figure(shares.group(3))


def check_streaming(output: str) -> None:
  rows = table(output, "| mode | start-up |")
  assert [row[0] for row in rows] == ["loaded", "stream"], rows
  for _, start, train, stalls, sample, sample_stalls, peak, rss in rows:
    figure(start)
    positive(train)
    figure(stalls)
    positive(sample)
    figure(sample_stalls)
    figure(peak)
    anon, file_backed = rss.split("/")
    figure(anon)
    figure(file_backed)


def check_study_overhead(output: str) -> None:
  lines = output.splitlines()
  header = [i for i, line in enumerate(lines) if line.startswith("measurement")]
  assert header, "no table of measurements"
  rows = {}
  for line in lines[header[0] + 1:]:
    if not line.strip() or line.startswith("("):
      break
    name, value = line.rsplit(None, 1)
    rows[name.strip()] = value
  for name in ("train.py alone: start -> first iteration",
               "study launch, local: launch -> first iteration"):
    positive(rows[name])
  slurm = rows["study launch, slurm: launch -> first iteration"]
  if slurm == "skipped":
    assert "SLURM not answering" in output, "the slurm row is skipped without saying why"
  else:
    positive(slurm)
  status = [name for name in rows if name.startswith("study status on")]
  assert len(status) == 1, rows
  positive(rows[status[0]])


def check_throughput(output: str) -> None:
  rows = table(output, "| section | network / data | setting |")
  for section in ("train", "diag", "sample", "eval"):
    for data in ("Nature DQN|84, 84", "MinAtar DQN|10, 10"):
      assert matching([r for r in rows if r[0] == section], data), (section, data)
  skipped = [row for row in rows if row[4] == "skipped"]
  assert skipped, "the smoke run shows no setting skipped by --max_call_seconds"
  for section, _, setting, compile_s, time_s, rate in rows:
    if time_s == "skipped":
      assert "--max_call_seconds" in rate, rate
      continue
    positive(time_s)
    positive(rate)
    if section in ("train", "diag"):
      figure(compile_s)
  for steps in ("K=1, no scan", "K=1, unroll=1", "K=100000, unroll=1"):
    assert len(matching(rows, steps)) == 2, steps  # one per network
  assert len([row for row in rows if row[0] == "eval"]) == 4  # 2 games x 1 and 2 envs


def check_vector_env_pixels(output: str) -> None:
  for heading in ("## pixels", "## returns", "## speed"):
    assert heading in output, heading
  pixels = matching(output.splitlines(), r"^\s+game \w+\s+steps")
  assert len(pixels) == 2, pixels
  for line in pixels:
    for name in ("mean_abs_diff", "max_abs_diff", "frac_pixels_differ"):
      figure(re.search(name + r" (\S+)", line).group(1))
  returns = matching(output.splitlines(), r"mean\s+[-\d.]+ \+-")
  assert len(returns) == 3, returns
  for line in returns:
    number(re.search(r"mean\s+(\S+)", line).group(1))
  speeds = matching(output.splitlines(), r"N=\d+\s+[\d,.]+ steps/s")
  assert len(speeds) >= 2, speeds
  for line in speeds:
    positive(re.search(r"N=\d+\s+([\d,.]+) steps/s", line).group(1))


def check_vs_dopamine(output: str) -> None:
  rows = table(output, "| section | measurement | ours | Dopamine-style |")
  by_section = {}
  for row in rows:
    by_section.setdefault(row[0], []).append(row)
  assert set(by_section) == {"train", "eval", "iteration", "seeds", "machine"}, set(by_section)
  train = by_section["train"]
  assert len(train) == 2, train
  assert matching(train[:1], "Nature DQN") and matching(train[1:], "MinAtar DQN"), train
  eval_rows = by_section["eval"]
  assert len(eval_rows) == 4, eval_rows  # Pong and breakout x 1 and 2 environments
  assert len(matching(eval_rows, "atari:Pong")) == 2
  assert len(matching(eval_rows, "minatar:breakout")) == 2
  for _, _, ours, dopamine, ratio, target in train + eval_rows:
    ours_rate, dopamine_rate = positive(ours), positive(dopamine)
    assert number(ratio) == pytest.approx(ours_rate / dopamine_rate, rel=0.05, abs=0.02)
    if target:
      assert re.search(r">= [\d.]+x: (met|missed) \([\d.]+x\)", target), target
  iteration = {row[1].split(",")[0].split(" (")[0]: row[2] for row in by_section["iteration"]}
  for phase in ("train", "diagnose", "evaluate", "log + checkpoint"):
    figure(iteration[phase])
    figure(iteration[f"full-size estimate: {phase}"])
  positive(iteration["full-size estimate: whole iteration"])
  figure(iteration["train-loop compile"])
  seeds = by_section["seeds"]
  assert [row[1].split(" ")[0] for row in seeds] == ["S=1", "S=2"], seeds
  for row in seeds:  # "<s> s, <n> seed-steps/s, <r>x S=1's time, <m> MiB"
    seconds, rate, ratio, mib = (number(part) for part in row[2].split(", "))
    assert seconds > 0 and rate > 0 and ratio > 0 and mib > 0, row
  machine = {row[1]: row[2] for row in by_section["machine"]}
  assert machine["JAX backend, devices"].startswith("cpu"), machine
  positive(machine["CPUs"])
  start, end = machine["1-min load average, start / end"].split("/")
  figure(start)
  figure(end)
  assert "Targets" in output


CHECKS = {
    "bsuite_lab_throughput.py": check_bsuite_lab_throughput,
    "checkpoint_cost.py": check_checkpoint_cost,
    "sac_throughput.py": check_sac_throughput,
    "dataset_loading.py": check_dataset_loading,
    "diagnostics_cost.py": check_diagnostics_cost,
    "memory.py": check_memory,
    "online_throughput.py": check_online_throughput,
    "streaming.py": check_streaming,
    "study_overhead.py": check_study_overhead,
    "throughput.py": check_throughput,
    "vector_env_pixels.py": check_vector_env_pixels,
    "vs_dopamine.py": check_vs_dopamine,
}


def run_smoke(script: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, OPENBLAS_NUM_THREADS="1", JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, os.path.join("benchmarks", script), "--smoke"],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=helpers.SUBPROCESS_TIMEOUT)


def test_every_script_is_found():
  assert {"throughput.py", "vs_dopamine.py"} <= set(SCRIPTS), SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run_prints_its_figures(script):
  assert script in CHECKS, (
      f"benchmarks/{script} has no check of its --smoke output: add a function that "
      f"parses its figures to CHECKS in {os.path.relpath(__file__, REPO)}")
  start = time.perf_counter()
  result = run_smoke(script)
  seconds = time.perf_counter() - start
  print(f"benchmarks/{script} --smoke: {seconds:.0f} s (load average "
        f"{os.getloadavg()[0]:.1f})")
  assert result.returncode == 0, (
      f"benchmarks/{script} --smoke exited {result.returncode}\n--- stdout\n"
      f"{result.stdout[-5000:]}\n--- stderr\n{result.stderr[-5000:]}")
  try:
    CHECKS[script](result.stdout)
  except AssertionError as e:
    raise AssertionError(f"benchmarks/{script} --smoke printed:\n{result.stdout}\n\n"
                         f"and its check failed: {e}") from e

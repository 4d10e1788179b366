"""Running a study on this machine: job.run_one (states, logs, signals, threads) on a
stand-in for train.py, then the local executor end to end on two gridworld runs, one
of which has its train.py killed with SIGKILL mid-run: marked interrupted, resumed by
the next launch to the same scalars as an uninterrupted run, and a third launch does
nothing; `status`, a changed study file and analysis.load_sweep on the result."""
import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import gin
import pytest

from batch_rl import config as config_lib
from batch_rl import summary_writer
from batch_rl.runners import registry
from batch_rl.study import __main__ as study_main
from batch_rl.study import job
from batch_rl.study import run as run_lib
from batch_rl.study import spec
from batch_rl.study import status as status_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class ScriptRun(run_lib.Run):
  """A Run whose command is a Python script instead of train.py."""
  script: str = ""

  def command(self, python=None):
    return [python or sys.executable, "-c", self.script]


def script_run(tmp_path, script, name="r"):
  return ScriptRun(name=name, run_dir=str(tmp_path / name), gin_files=(), bindings=(),
                   script=textwrap.dedent(script))


def read_status(run_dir):
  with open(os.path.join(run_dir, run_lib.STATUS_FILE)) as f:
    return json.load(f)


def test_done_run_keeps_its_log_status_and_attempts(tmp_path):
  run = script_run(tmp_path, "print('trained')")
  assert job.run_one(run, attempt_env={job.JOB_ID_ENV: "task-7"}) == run_lib.DONE
  status = read_status(run.run_dir)
  assert (status["state"], status["rc"], status["attempt"]) == ("done", 0, 1)
  assert status["job_id"] == "task-7" and status["pid"] == os.getpid()
  assert status["train_pid"] and status["error"] is None and status["ended"]
  with open(status["log"]) as f:
    assert "trained" in f.read()
  with open(os.path.join(run.run_dir, run_lib.RUN_FILE)) as f:
    assert json.load(f)["name"] == "r"
  assert job.run_one(run) == run_lib.DONE
  assert read_status(run.run_dir)["attempt"] == 2
  assert os.path.isfile(os.path.join(run.run_dir, "logs", "attempt_2.log"))


@pytest.mark.parametrize("script, state, error", [
    ("import sys; print('log line'); print('error: `X.y` is wrong.', file=sys.stderr); "
     "print('after'); sys.exit(2)", "failed", "`X.y` is wrong."),
    ("import sys; print('first'); print('Boom at the end'); print(); sys.exit(1)",
     "failed", "Boom at the end"),
    ("import sys; print('OSError: [Errno 39] Directory not empty: x'); "
     "print(\"  In call to configurable 'create_runner' (<function>)\"); sys.exit(1)",
     "failed", "OSError: [Errno 39] Directory not empty: x"),
    ("import sys; sys.exit(3)", "interrupted", None),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "interrupted",
     "train.py was stopped by SIGKILL"),
])
def test_exit_status_gives_the_final_state(tmp_path, script, state, error):
  run = script_run(tmp_path, script)
  assert job.run_one(run) == state
  assert read_status(run.run_dir)["error"] == error


def test_threads_are_set_for_the_child(tmp_path):
  run = script_run(tmp_path, """
      import os
      for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "XLA_FLAGS"):
        print(k, os.environ.get(k))
      print("cpus", sorted(os.sched_getaffinity(0)))
      """)
  cpu = sorted(os.sched_getaffinity(0))[0]
  job.run_one(run, threads=1, cpus=[cpu], attempt_env={"OPENBLAS_NUM_THREADS": ""})
  with open(read_status(run.run_dir)["log"]) as f:
    log = f.read()
  for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    assert f"{name} 1\n" in log
  assert "--xla_cpu_multi_thread_eigen=false" in log
  assert f"cpus [{cpu}]" in log
  job.run_one(run, threads=3)  # OpenBLAS stays on one thread; XLA's Eigen is left alone
  with open(read_status(run.run_dir)["log"]) as f:
    log = f.read()
  assert "OMP_NUM_THREADS 3\n" in log and "OPENBLAS_NUM_THREADS 1\n" in log
  assert "xla_cpu_multi_thread_eigen" not in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_signals_are_passed_to_the_child(tmp_path, signum):
  """SIGTERM and SIGUSR2 reach train.py as themselves, SIGINT as SIGTERM; the job waits
  for it and records the graceful exit (3) as interrupted."""
  ready = tmp_path / "ready"
  child = textwrap.dedent(f"""
      import signal, sys, time
      def stop(signum, frame):
        print('got', signal.Signals(signum).name, flush=True)
        time.sleep(0.5)  # a checkpoint being written
        sys.exit(3)
      signal.signal(signal.SIGTERM, stop)
      signal.signal(signal.SIGUSR2, stop)
      open({str(ready)!r}, 'w').close()
      time.sleep(60)
      """)
  code = textwrap.dedent(f"""
      import dataclasses, sys
      from batch_rl.study import job
      from batch_rl.study import run as run_lib

      @dataclasses.dataclass(frozen=True)
      class ScriptRun(run_lib.Run):
        def command(self, python=None):
          return [sys.executable, "-c", {child!r}]

      run = ScriptRun(name="r", run_dir={str(tmp_path / 'r')!r}, gin_files=(), bindings=())
      sys.exit(job.EXIT_STATUS[job.run_one(run)])
      """)
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
  deadline = time.time() + 120
  while not ready.exists():
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.05)
  proc.send_signal(signum)
  assert proc.wait(timeout=120) == 3
  status = read_status(str(tmp_path / "r"))
  assert (status["state"], status["rc"]) == ("interrupted", 3)
  expected = "SIGUSR2" if signum == signal.SIGUSR2 else "SIGTERM"
  with open(status["log"]) as f:
    assert f"got {expected}" in f.read()


def test_job_command_without_a_run_file(tmp_path):
  result = subprocess.run([sys.executable, "-m", "batch_rl.study.job", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=helpers.SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 2
  assert result.stderr.startswith("error: ") and run_lib.RUN_FILE in result.stderr


def wait_for(predicate, proc, what):
  deadline = time.time() + helpers.SUBPROCESS_TIMEOUT
  while not predicate():
    assert proc.poll() is None, f"the launch ended before {what}: {proc.communicate()}"
    assert time.time() < deadline, what
    time.sleep(0.05)


FAKE_JOB = """#!/bin/bash
# Stands in for `python -m batch_rl.study.job RUN_DIR ...`: records its arguments, then
# waits until SIGTERM, which it answers as a run that checkpointed and stopped.
run_dir="$3"
echo "$@" > "$run_dir/args"
trap 'echo "{\\"state\\": \\"interrupted\\"}" > "$run_dir/study_status.json"; exit 3' TERM
touch "$run_dir/ready"
while true; do sleep 0.05; done
"""


def test_local_executor_stops_on_sigterm(tmp_path):
  """SIGTERM to the launch: each running job gets SIGTERM and is waited for, no
  further run starts, and the summary counts them interrupted and pending."""
  fake = tmp_path / "python"
  fake.write_text(FAKE_JOB)
  fake.chmod(0o755)
  dirs = [tmp_path / name for name in ("a", "b", "c")]
  for d in dirs:
    d.mkdir()
  code = textwrap.dedent(f"""
      from batch_rl.study import run as run_lib
      from batch_rl.study.executors import local
      runs = [run_lib.Run(name=d.rsplit("/", 1)[-1], run_dir=d, gin_files=(), bindings=())
              for d in {[str(d) for d in dirs]!r}]
      print("summary", local.launch(runs, {str(tmp_path)!r}, max_parallel=2,
                                    python={str(fake)!r}, poll_s=0.05))
      """)
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  wait_for(lambda: all((d / "ready").exists() for d in dirs[:2]), proc, "two jobs ran")
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=helpers.SUBPROCESS_TIMEOUT)
  assert proc.returncode == 0, err
  assert "summary {'interrupted': 2, 'pending': 1}" in out
  assert "stopped by a signal" in out
  assert not (dirs[2] / "args").exists()
  args = [(d / "args").read_text().split() for d in dirs[:2]]
  assert all(a[:3] == ["-m", "batch_rl.study.job", str(d)] for a, d in zip(args, dirs))
  assert all("--threads=" + str(max(1, len(os.sched_getaffinity(0)) // 2)) in a
             for a in args)
  if len(os.sched_getaffinity(0)) >= 2:  # one CPU set per parallel slot
    cpus = [next(x for x in a if x.startswith("--cpus=")) for a in args]
    assert len(set(cpus)) == 2


# ---------------------------------------------------------------------- end to end
# Two gridworld runs (T = 200 and T = 2000 gradient steps a fitting iteration), 8
# iterations of one compiled call each, so that a run can be stopped between
# checkpoints. About 20 s each on one core, mostly start-up.
STUDY = """
gin_files = ["gin_configs/gridworld/fqi_t10.gin"]
bindings = [
  "GridworldEnv.width = 6",
  "GridworldEnv.height = 6",
  "GridworldRunner.num_iterations = 8",
  "GridworldRunner.iterations_per_call = 1",
  "GridworldRunner.dataset_episodes = 4",
  "GridworldRunner.fast_compile = True",
]
[axes]
"GridworldRunner.gradient_steps" = [200, 2000]
[names]
"GridworldRunner.gradient_steps" = "T"
[seeds]
binding = "GridworldRunner.seeds"
values = [[0]]
"""
RUNS = ("T200/seeds_0", "T2000/seeds_0")
KILLED = "T2000/seeds_0"


def main(*args):
  """`python -m batch_rl.study ARGS` in this process: (exit status, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = study_main.main(list(args))
  return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """The study launched with `python -m batch_rl.study launch --executor=local
  --max_parallel=2`, the T = 2000 run's train.py killed with SIGKILL after its first
  checkpoint, then launched again. Returns what each step left."""
  files_dir = tmp_path_factory.mktemp("files")
  study_file = str(files_dir / "grid.toml")
  with open(study_file, "w") as f:
    f.write(STUDY)
  study_dir = str(tmp_path_factory.mktemp("study") / "grid")
  killed_dir = os.path.join(study_dir, KILLED)
  checkpoints = os.path.join(killed_dir, "checkpoints")
  proc = subprocess.Popen(
      [sys.executable, "-m", "batch_rl.study", "launch", study_file,
       f"--study_dir={study_dir}", "--executor=local", "--max_parallel=2"], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  wait_for(lambda: os.path.isdir(checkpoints) and any(
      n.endswith(".msgpack") for n in os.listdir(checkpoints)), proc, "a checkpoint")
  os.kill(read_status(killed_dir)["train_pid"], signal.SIGKILL)
  first_out, first_err = proc.communicate(timeout=helpers.SUBPROCESS_TIMEOUT)
  after_kill = {s.name: s for s in status_lib.collect(study_dir)}
  kept = [int(n[5:11]) for n in os.listdir(checkpoints) if n.endswith(".msgpack")]
  second = main("launch", study_file, f"--study_dir={study_dir}", "--executor=local",
                "--max_parallel=2")
  return dict(study_file=study_file, study_dir=study_dir, first_rc=proc.returncode,
              first_out=first_out, first_err=first_err, after_kill=after_kill,
              kept=kept, second=second)


def test_first_launch_ends_with_one_done_and_the_killed_run_interrupted(study):
  assert study["first_rc"] == 1, study["first_out"] + study["first_err"]
  out = study["first_out"]
  threads = max(1, len(os.sched_getaffinity(0)) // 2)
  assert f"Launching 2 run(s), 2 at a time, {threads} thread(s) each." in out
  assert "2 of 2 run(s) ended in" in out and ": 1 done, 1 interrupted" in out
  assert "train.py was stopped by SIGKILL" in out
  states = {name: s.state for name, s in study["after_kill"].items()}
  assert states == {"T200/seeds_0": "done", KILLED: "interrupted"}
  assert 0 <= max(study["kept"]) < 7  # stopped before its end
  killed = study["after_kill"][KILLED]
  assert killed.iteration == max(study["kept"]) + 1 and killed.total == 8


def test_relaunch_resumes_the_interrupted_run_only(study):
  rc, out, err = study["second"]
  assert rc == 0, out + err
  assert "1 run(s) not launched: skip: done" in out
  assert "Launching 1 run(s)" in out and ": 1 done" in out
  study_dir = study["study_dir"]
  assert read_status(os.path.join(study_dir, "T200/seeds_0"))["attempt"] == 1
  status = read_status(os.path.join(study_dir, KILLED))
  assert (status["state"], status["attempt"]) == ("done", 2)
  with open(status["log"]) as f:
    assert "Resuming" in f.read()
  with open(os.path.join(study_dir, run_lib.STUDY_FILE)) as f:
    record = json.load(f)
  assert [r["name"] for r in record["runs"]] == list(RUNS)
  assert record["text"] == STUDY


def test_the_resumed_run_logs_what_an_uninterrupted_run_logs(study, tmp_path):
  """Same scalars, each iteration once, as the same run trained in one go here."""
  run = next(r for r in spec.load(study["study_file"]).runs(study["study_dir"])
             if r.name == KILLED)
  config_lib.parse_gin([os.path.join(REPO, f) for f in run.gin_files], run.bindings)
  try:
    registry.create_runner(base_dir=str(tmp_path / "whole")).run()
  finally:
    gin.clear_config()
  whole = summary_writer.read_scalars(str(tmp_path / "whole" / "seed_0"))
  resumed = summary_writer.read_scalars(os.path.join(run.run_dir, "seed_0"))
  assert sorted(resumed) == sorted(whole)
  for tag in whole:
    assert resumed[tag] == whole[tag], tag
  assert {step: len(v) for step, v in resumed["Train/Loss"].items()} == {
      i: 1 for i in range(8)}


def test_a_third_launch_does_nothing(study):
  rc, out, err = main("launch", study["study_file"], f"--study_dir={study['study_dir']}",
                      "--executor=local")
  assert rc == 0, out + err
  assert "2 run(s) not launched: skip: done" in out and "Nothing to launch" in out
  for name in RUNS:
    logs = os.listdir(os.path.join(study["study_dir"], name, "logs"))
    assert len(logs) == (2 if name == KILLED else 1)


def test_status_command_on_the_finished_study(study):
  result = subprocess.run([sys.executable, "-m", "batch_rl.study", "status",
                           study["study_dir"]], cwd=REPO, capture_output=True, text=True,
                          timeout=helpers.SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  rows = {line.split()[0]: line.split() for line in lines[1:-1]}
  scalars = summary_writer.read_scalars(os.path.join(study["study_dir"], KILLED, "seed_0"))
  assert rows[KILLED][1:3] == ["done", "8/8"]
  assert float(rows[KILLED][3]) == pytest.approx(scalars["Rank/srank"][7][-1], rel=1e-3)
  assert float(rows[KILLED][4]) == pytest.approx(scalars["Eval/AverageReturn"][7][-1],
                                                 rel=1e-3)
  assert lines[-1] == "2 runs: 2 done"


def test_a_changed_study_file_is_refused(study, tmp_path):
  changed = tmp_path / "grid.toml"
  changed.write_text(STUDY.replace("[200, 2000]", "[200, 2000, 500]").replace(
      "GridworldEnv.width = 6", "GridworldEnv.width = 7"))
  rc, out, err = main("launch", str(changed), f"--study_dir={study['study_dir']}",
                      "--executor=local")
  assert rc == 2 and not out
  assert err.startswith("error: Study file ") and err.count("\n") == 1
  assert "1 added (T500/seeds_0)" in err
  assert "2 changed (T200/seeds_0, T2000/seeds_0)" in err and "--allow_changes" in err
  rc, out, err = main("plan", str(changed), f"--study_dir={study['study_dir']}",
                      "--allow_changes")
  assert rc == 0, err
  actions = {line.split()[0]: line for line in out.splitlines()}
  assert actions["T500/seeds_0"].endswith("launch")
  assert "refused: changed" in actions["T200/seeds_0"]
  longer = tmp_path / "longer.toml"
  longer.write_text(STUDY.replace("num_iterations = 8", "num_iterations = 9"))
  rc, out, err = main("plan", str(longer), f"--study_dir={study['study_dir']}",
                      "--allow_changes")
  assert rc == 0, err
  assert "2 changed in num_iterations/num_workers only" in out
  assert "2 to launch, 0 skipped." in out


def test_load_sweep_has_the_swept_axis_as_a_column(study):
  from analysis import loading  # pylint: disable=g-import-not-at-top
  sweep = loading.load_sweep(study["study_dir"], cache=False)
  assert "GridworldRunner.gradient_steps" in sweep.hyperparameters
  by_run = dict(zip(sweep.runs["run"], sweep.runs["GridworldRunner.gradient_steps"]))
  assert by_run == {"T200/seeds_0/seed_0": 200, "T2000/seeds_0/seed_0": 2000}


def test_launch_in_order_stops_at_the_first_study_with_runs_not_done(monkeypatch, capsys):
  from batch_rl.study import launch as study_launch
  calls = []

  def fake_launch(path, study_dir, executor, retry_failed=False, **options):
    calls.append((path, study_dir, executor, retry_failed, options))
    summary = {"done": 2} if path != "b.toml" else {"done": 1, "failed": 1}
    return study_launch.Result(plan=None, summary=summary)

  monkeypatch.setattr(study_launch, "launch", fake_launch)
  with pytest.raises(SystemExit, match=r"b: runs ended \{'failed': 1\}.*status out/b"):
    study_launch.launch_in_order([("a", "a.toml", "out/a"), ("b", "b.toml", "out/b"),
                                  ("c", "c.toml", "out/c")], "local", 2, retry_failed=True)
  assert [c[0] for c in calls] == ["a.toml", "b.toml"]  # c is not launched
  assert calls[0][2:] == ("local", True, {"max_parallel": 2})
  assert "[1/3] study a:" in capsys.readouterr().out
  calls.clear()
  study_launch.launch_in_order([("a", "a.toml", "out/a")], "slurm")
  assert calls[0][4] == {"wait": True}

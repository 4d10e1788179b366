"""`status` of a study (batch_rl/study/status.py, events.py): states, progress and the
last scalars from the run directories' files alone, on synthetic run directories
(status files, checkpoints, event files written here without TensorFlow). A real
finished gridworld study is read in test_study_local.py."""
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

from batch_rl.study import events
from batch_rl.study import run as run_lib
from batch_rl.study import status as status_lib
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record(data: bytes) -> bytes:
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", events._masked_crc32c(length)) + data +
          struct.pack("<I", events._masked_crc32c(data)))


def scalar_event(step, values, tensor=False):
  """An Event of scalars: simple_value, or (as tf.summary writes) a float tensor."""
  out = []
  for tag, value in values.items():
    if tensor:
      t = tensor_pb2.TensorProto(dtype=1, tensor_content=struct.pack("<f", value))
      out.append(summary_pb2.Summary.Value(tag=tag, tensor=t))
    else:
      out.append(summary_pb2.Summary.Value(tag=tag, simple_value=value))
  return event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(value=out))


def write_events(folder, steps, tags=("Train/Loss", "Rank/srank", "Eval/AverageReturn"),
                 offset=0.0, tensor=False, name="events.out.tfevents.1.host"):
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, name)
  with open(path, "wb") as f:
    f.write(_record(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2")
                    .SerializeToString()))
    for step in range(steps):
      values = {tag: float(step) + offset + i for i, tag in enumerate(tags)}
      f.write(_record(scalar_event(step, values, tensor).SerializeToString()))
  return path


def test_last_scalars_from_the_tail(tmp_path, monkeypatch):
  path = write_events(str(tmp_path), 3000, tensor=True)
  with open(path, "ab") as f:  # an early tag, and a record still being written
    f.write(_record(scalar_event(0, {"Early/once": 5.0}).SerializeToString())[:-3])
  expected = {"Rank/srank": (2999, 3000.0), "Eval/AverageReturn": (2999, 3001.0)}
  assert events.last_scalars(path, ["Rank/srank", "Eval/AverageReturn"]) == expected
  monkeypatch.setattr(events, "_TAIL_BYTES", 100)  # boundaries found mid-record
  assert events.last_scalars(path, ["Rank/srank", "Eval/AverageReturn"]) == expected
  assert events.last_scalars(path, ["Nope"]) == {}
  early = write_events(str(tmp_path / "b"), 2000, tags=("Rank/srank",))
  with open(early, "r+b") as f:
    data = f.read()
    f.seek(0)
    f.write(_record(scalar_event(0, {"Early/once": 5.0}).SerializeToString()) + data)
  assert events.last_scalars(early, ["Early/once", "Rank/srank"]) == {
      "Early/once": (0, 5.0), "Rank/srank": (1999, 1999.0)}


def test_missing_or_empty_event_file():
  assert events.last_scalars("/nonexistent/events.out.tfevents.1", ["Rank/srank"]) == {}


def dead_pid():
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def write_run(study_dir, name, status=None, checkpoints=(), num_iterations=None,
              event_steps=0, age_s=None):
  run_dir = os.path.join(study_dir, *name.split("/"))
  os.makedirs(run_dir, exist_ok=True)
  for iteration in checkpoints:
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    open(os.path.join(run_dir, "checkpoints", f"ckpt_{iteration:06d}.msgpack"), "w").close()
  if num_iterations is not None:
    with open(os.path.join(run_dir, "config.gin"), "w") as f:
      f.write("create_runner.runner_fn = @FixedReplayRunner\n"
              f"FixedReplayRunner.num_iterations = {num_iterations}\n"
              "OtherRunner.num_iterations = 99\n")
  if event_steps:
    write_events(run_dir, event_steps)
  if status is not None:
    full = {"state": status.pop("state"), "attempt": 1, "rc": None,
            "host": socket.gethostname(), "pid": None, "train_pid": None,
            "job_id": "42_1", "started": "2025-01-01T00:00:00Z", "ended": None,
            "error": None, "log": os.path.join(run_dir, "logs", "attempt_1.log")}
    full.update(status)
    with open(os.path.join(run_dir, run_lib.STATUS_FILE), "w") as f:
      json.dump(full, f)
  if age_s is not None:
    old = time.time() - age_s
    for root, _, names in os.walk(run_dir):
      for n in names + ["."]:
        os.utime(os.path.join(root, n), (old, old))
  return run_dir


@pytest.fixture
def synthetic(tmp_path):
  """A study directory with a run in every state."""
  study_dir = str(tmp_path / "study")
  runs = {
      "done": dict(status={"state": "done", "rc": 0}, checkpoints=(8, 9), num_iterations=10,
                   event_steps=10),
      "failed": dict(status={"state": "failed", "rc": 1, "error": "Training diverged."},
                     checkpoints=(2,), num_iterations=10),
      "running": dict(status={"state": "running", "pid": os.getpid()}, checkpoints=(0,),
                      num_iterations=10, event_steps=1),
      "stale_here": dict(status={"state": "running", "pid": dead_pid(),
                                 "train_pid": dead_pid()}, num_iterations=10),
      "stale_elsewhere": dict(status={"state": "running", "host": "elsewhere", "pid": 1},
                              num_iterations=10, age_s=7200),
      "running_elsewhere": dict(status={"state": "running", "host": "elsewhere",
                                        "pid": 1}, num_iterations=10),
      "interrupted": dict(status={"state": "interrupted", "rc": -9,
                                  "error": "train.py was stopped by SIGKILL"},
                          checkpoints=(3,), num_iterations=10),
      "outside": dict(checkpoints=(9,), num_iterations=10),
  }
  for name, spec in runs.items():
    write_run(study_dir, name, **spec)
  grid = write_run(study_dir, "grid/seeds_0-1", status={"state": "done"}, checkpoints=(4,))
  write_events(os.path.join(grid, "seed_0"), 5, offset=0.0)
  write_events(os.path.join(grid, "seed_1"), 5, offset=2.0)
  names = list(runs) + ["grid/seeds_0-1", "pending"]
  record = {"runs": [{"name": n, "run_dir": os.path.join(study_dir, n), "gin_files": [],
                      "bindings": (["GridworldRunner.num_iterations = 5"]
                                   if n.startswith("grid") else
                                   ["GridworldRunner.num_iterations = 7"]),
                      "axes": []} for n in names]}
  with open(os.path.join(study_dir, run_lib.STUDY_FILE), "w") as f:
    json.dump(record, f)
  return study_dir


def test_collect_reads_states_progress_and_scalars(synthetic):
  got = {s.name: s for s in status_lib.collect(synthetic)}
  assert {n: s.state for n, s in got.items()} == {
      "done": "done", "failed": "failed", "running": "running", "stale_here": "stale",
      "stale_elsewhere": "stale", "running_elsewhere": "running",
      "interrupted": "interrupted", "outside": "done", "grid/seeds_0-1": "done",
      "pending": "pending"}
  assert (got["done"].iteration, got["done"].total) == (10, 10)
  assert (got["failed"].iteration, got["failed"].total) == (3, 10)
  assert (got["pending"].iteration, got["pending"].total) == (0, 7)   # from its bindings
  assert (got["grid/seeds_0-1"].iteration, got["grid/seeds_0-1"].total) == (5, 5)
  # Rank/srank = step + 1, Eval/AverageReturn = step + 2 (+ the seed folder's offset).
  assert (got["done"].srank, got["done"].average_return) == (10.0, 11.0)
  assert (got["grid/seeds_0-1"].srank, got["grid/seeds_0-1"].seeds) == (6.0, 2)
  assert got["pending"].age is None and got["pending"].srank is None
  assert got["stale_elsewhere"].age > 3600
  assert got["failed"].error == "Training diverged."


def test_table_lists_every_run_with_errors_and_a_summary(synthetic):
  text = status_lib.format_table(status_lib.collect(synthetic))
  lines = text.splitlines()
  assert lines[0].split() == ["run", "state", "iteration", "srank", "return", "written"]
  row = {line.split()[0]: line.split() for line in lines[1:] if not line.startswith(" ")}
  assert row["done"][1:5] == ["done", "10/10", "10", "11"]
  assert row["pending"][1:] == ["pending", "0/7", "-", "-", "-"]
  failed = lines.index(next(line for line in lines if line.startswith("failed ")))
  assert lines[failed + 1] == "    error: Training diverged."
  assert lines[failed + 2].startswith("    log: ") and lines[failed + 2].endswith(
      "attempt_1.log")
  assert lines[-1] == ("10 runs: 1 pending, 2 running, 2 stale, 1 interrupted, "
                       "1 failed, 3 done")


def test_collect_without_study_json_finds_run_files(tmp_path):
  study_dir = str(tmp_path)
  for name in ("x/seed_0", "x/seed_1"):
    run_dir = write_run(study_dir, name, status={"state": "done"})
    with open(os.path.join(run_dir, run_lib.RUN_FILE), "w") as f:
      json.dump({"name": name, "run_dir": run_dir, "gin_files": [], "bindings": []}, f)
  assert [(s.name, s.state) for s in status_lib.collect(study_dir)] == [
      ("x/seed_0", "done"), ("x/seed_1", "done")]


def test_status_of_200_runs_without_jax_or_tensorflow(tmp_path):
  """The command reads 200 finished runs (500 iterations of events each) importing
  neither JAX nor TensorFlow."""
  study_dir = str(tmp_path / "big")
  template = write_events(str(tmp_path / "template"), 500,
                          tags=tuple(f"Tag/{i}" for i in range(8)) + ("Rank/srank",
                                                                      "Eval/AverageReturn"))
  names = [f"game_{g}/agent_{a}/seed_{s}" for g in range(10) for a in range(4)
           for s in range(5)]
  for name in names:
    run_dir = write_run(study_dir, name, status={"state": "done"}, checkpoints=(499,),
                        num_iterations=500)
    shutil.copy(template, run_dir)
  with open(os.path.join(study_dir, run_lib.STUDY_FILE), "w") as f:
    json.dump({"runs": [{"name": n, "gin_files": [], "bindings": []} for n in names]}, f)
  code = ("import sys, time; from batch_rl.study import __main__ as m; t = time.time(); "
          f"rc = m.main(['status', {study_dir!r}]); "
          "print('seconds', time.time() - t); "
          "print('heavy', [x for x in ('jax', 'tensorflow') if x in sys.modules]); "
          "sys.exit(rc)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=helpers.SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "heavy []" in result.stdout
  assert "200 runs: 200 done" in result.stdout
  assert result.stdout.count(" 500/500 ") == 200


def test_a_run_of_vmapped_seeds_has_completed_what_all_its_seeds_have(tmp_path):
  run_dir = tmp_path / "lp" / "seed_0"
  for seed, newest in ((0, 4), (1, 3), (2, 4)):
    checkpoints = run_dir / f"seed_{seed}" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for iteration in range(newest - 1, newest + 1):
      (checkpoints / f"ckpt_{iteration:06d}.msgpack").write_bytes(b"")
  assert status_lib.completed_iterations(str(run_dir)) == 4  # seed 1 reached iteration 3
  assert status_lib.completed_iterations(str(run_dir / "seed_0")) == 5
  assert status_lib.completed_iterations(str(tmp_path / "nothing")) == 0

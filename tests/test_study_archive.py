"""`archive` (batch_rl/study/archive.py): a study's finished runs copied without their
checkpoints, restorable so that a launch skips them; on synthetic run directories."""
import json
import os

import pytest

from batch_rl.study import __main__ as study_main
from batch_rl.study import archive as archive_lib
from batch_rl.study import launch as launch_lib
from batch_rl.study import run as run_lib
from batch_rl.study import spec
from batch_rl.study import status as status_lib
from batch_rl.validation import ConfigError

STUDY = """
name = "tiny"
gin_files = ["gin_configs/quickstart.gin"]
bindings = ["FixedReplayRunner.num_iterations = 3"]
[seeds]
binding = "FixedReplayRunner.seed"
values = [0, 1, 2]
"""


def _study_dir(tmp_path):
  """A study of 3 runs: seed_0 done, seed_1 running (2 of 3 checkpoints), seed_2 done."""
  path = tmp_path / "tiny.toml"
  path.write_text(STUDY)
  study = spec.load(str(path))
  study_dir = tmp_path / "runs"
  p = launch_lib.plan(study, str(study_dir))
  launch_lib.write_record(p)
  for run, state, checkpoints in zip(p.runs, ("done", "running", "done"), (3, 2, 3)):
    os.makedirs(os.path.join(run.run_dir, "checkpoints"))
    for i in range(checkpoints):
      with open(os.path.join(run.run_dir, "checkpoints", f"ckpt_{i:06d}.msgpack"), "wb") as f:
        f.write(bytes([i]) * 100)
    with open(os.path.join(run.run_dir, "events.out.tfevents.1.host"), "wb") as f:
      f.write(b"events of " + run.name.encode())
    with open(os.path.join(run.run_dir, run_lib.STATUS_FILE), "w") as f:
      json.dump({"state": state, "pid": 1, "host": "elsewhere"}, f)
    with open(os.path.join(run.run_dir, run_lib.RUN_FILE), "w") as f:
      f.write(run.to_json())
  return path, study, study_dir


def test_archive_copies_finished_runs_without_checkpoints(tmp_path):
  path, study, study_dir = _study_dir(tmp_path)
  dest = tmp_path / "archive"
  result = archive_lib.archive(str(study_dir), str(dest), ["seed_2"])
  assert result.copied == ["seed_0", "seed_2"]
  assert result.unfinished == ["seed_1"]
  assert result.checkpoints == ["seed_2"]
  assert not (dest / "seed_1").exists()
  assert not (dest / "seed_0" / "checkpoints").exists()
  assert os.listdir(dest / "seed_2" / "checkpoints") == ["ckpt_000002.msgpack"]
  assert (dest / "seed_2" / "checkpoints" / "ckpt_000002.msgpack").read_bytes() == b"\x02" * 100
  assert (dest / "seed_0" / "events.out.tfevents.1.host").read_bytes() == b"events of seed_0"
  assert not [n for n in os.listdir(dest) if n.startswith(".")]  # no temporary folders
  states = {s.name: s.state for s in status_lib.collect(str(dest), scalars=False)}
  assert states == {"seed_0": "done", "seed_1": "pending", "seed_2": "done"}

  # Archiving again copies nothing new; a run that finished since is added.
  again = archive_lib.archive(str(study_dir), str(dest))
  assert again.copied == [] and again.kept == ["seed_0", "seed_2"]
  with open(study_dir / "seed_1" / run_lib.STATUS_FILE, "w") as f:
    json.dump({"state": "done"}, f)
  assert archive_lib.archive(str(study_dir), str(dest)).copied == ["seed_1"]


def test_restored_archive_makes_the_launcher_skip_its_runs(tmp_path):
  path, study, study_dir = _study_dir(tmp_path)
  dest = tmp_path / "archive"
  archive_lib.archive(str(study_dir), str(dest))
  fresh = tmp_path / "fresh"
  restored = archive_lib.archive(str(dest), str(fresh))
  assert restored.copied == ["seed_0", "seed_2"] and restored.unfinished == ["seed_1"]
  p = launch_lib.plan(study, str(fresh))
  assert p.actions == {"seed_0": "skip: done", "seed_1": "launch", "seed_2": "skip: done"}


def test_archive_errors_name_the_directory(tmp_path, capsys):
  with pytest.raises(ConfigError, match="no such directory"):
    archive_lib.archive(str(tmp_path / "missing"), str(tmp_path / "a"))
  (tmp_path / "empty").mkdir()
  assert study_main.main(["archive", str(tmp_path / "empty"), str(tmp_path / "a")]) == 2
  assert "holds no study" in capsys.readouterr().err
  path, study, study_dir = _study_dir(tmp_path)
  with pytest.raises(ConfigError, match="is the study directory itself"):
    archive_lib.archive(str(study_dir), str(study_dir))
  assert study_main.main(["archive", str(study_dir), str(tmp_path / "b")]) == 0
  assert "2 run(s) archived" in capsys.readouterr().out


def test_launch_in_order_restores_and_archives(tmp_path, monkeypatch):
  """An experiments script's launcher: the archive's runs are restored first (so they
  are skipped), and what finished is archived back even when the launch is stopped."""
  path, study, study_dir = _study_dir(tmp_path)
  archive_dir = tmp_path / "results"
  archive_lib.archive(str(study_dir), str(archive_dir / "tiny"))
  fresh = tmp_path / "fresh"
  launched = []

  def fake_launch(study_file, directory, executor, **options):
    p = launch_lib.plan(spec.load(study_file), directory)
    launch_lib.write_record(p)
    launched.extend(name for name, action in p.actions.items() if action == "launch")
    run = next(r for r in p.runs if r.name == "seed_1")  # it finishes, then a stop
    os.makedirs(run.run_dir, exist_ok=True)
    with open(os.path.join(run.run_dir, run_lib.STATUS_FILE), "w") as f:
      json.dump({"state": "done"}, f)
    raise KeyboardInterrupt

  monkeypatch.setattr(launch_lib, "launch", fake_launch)
  with pytest.raises(KeyboardInterrupt):
    launch_lib.launch_in_order([("tiny", str(path), str(fresh / "tiny"))], "local",
                               archive_dir=str(archive_dir))
  assert launched == ["seed_1"]
  states = {s.name: s.state for s in status_lib.collect(str(archive_dir / "tiny"),
                                                         scalars=False)}
  assert states == {"seed_0": "done", "seed_1": "done", "seed_2": "done"}


def test_a_run_already_in_the_destination_is_never_overwritten(tmp_path):
  path, study, study_dir = _study_dir(tmp_path)
  dest = tmp_path / "other"
  (dest / "seed_0").mkdir(parents=True)
  (dest / "seed_0" / "config.gin").write_text("another run")
  result = archive_lib.archive(str(study_dir), str(dest))
  assert result.refused == ["seed_0"] and result.copied == ["seed_2"]
  assert (dest / "seed_0" / "config.gin").read_text() == "another run"
  assert not (dest / "seed_0" / run_lib.STATUS_FILE).exists()
  assert "already holds another, unfinished run" in archive_lib.describe(result, str(dest))


def test_a_run_of_several_seeds_leaves_every_seeds_checkpoints_behind(tmp_path):
  """A run that trained its seeds in one program keeps them in seed_<k>/checkpoints;
  online checkpoints have an .arrays.npz (the replay) beside each .msgpack."""
  path, study, study_dir = _study_dir(tmp_path)
  for run_name in ("seed_0", "seed_2"):
    for k in (0, 1):
      directory = study_dir / run_name / f"seed_{k}" / "checkpoints"
      os.makedirs(directory)
      (study_dir / run_name / f"seed_{k}" / "events.out.tfevents.2.host").write_bytes(b"e")
      for i in (4, 5):
        (directory / f"ckpt_{i:06d}.msgpack").write_bytes(b"m")
        (directory / f"ckpt_{i:06d}.arrays.npz").write_bytes(b"a" * 1000)
  dest = tmp_path / "archive"
  archive_lib.archive(str(study_dir), str(dest), ["seed_2"])
  for k in (0, 1):
    assert (dest / "seed_0" / f"seed_{k}" / "events.out.tfevents.2.host").exists()
    assert not (dest / "seed_0" / f"seed_{k}" / "checkpoints").exists()
    assert sorted(os.listdir(dest / "seed_2" / f"seed_{k}" / "checkpoints")) == [
        "ckpt_000005.arrays.npz", "ckpt_000005.msgpack"]
  assert os.listdir(dest / "seed_2" / "checkpoints") == ["ckpt_000002.msgpack"]

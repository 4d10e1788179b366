"""analysis.loading on event files with known contents, written here with the Runner's writer."""
import logging
import os

import numpy as np
import pytest

from analysis import gin_config
from analysis import loading
from batch_rl import summary_writer


def config_text(game, seed, agent="DQNAgent", lr=5e-5, regularizers="()", iterations=3,
                extra=""):
  return f"""import batch_rl.agents.dqn

# Parameters for create_optimizer:
# ==============================================================================
create_optimizer.learning_rate = {lr}
create_optimizer.name = 'adam'

# Parameters for {agent}:
# ==============================================================================
{agent}.gamma = 0.99
{agent}.regularizers = {regularizers}
{extra}
# Parameters for FixedReplayRunner:
# ==============================================================================
FixedReplayRunner.agent_fn = @{agent}
FixedReplayRunner.domain = 'atari'
FixedReplayRunner.game = '{game}'
FixedReplayRunner.num_iterations = {iterations}
FixedReplayRunner.seed = {seed}

# Parameters for load_fixed_replay:
# ==============================================================================
load_fixed_replay.replay_dir = '/data/{game}/{seed}/replay_logs'
"""


def write_run(base_dir, scalars, config=None, config_as_text=False):
  """scalars: {tag: {step: value}}; config written as config.gin or only as text."""
  os.makedirs(base_dir, exist_ok=True)
  writer = summary_writer.SummaryWriter(str(base_dir))
  if config is not None:
    if config_as_text:
      writer.text("Config/gin", "```\n" + config + "\n```")
    else:
      with open(os.path.join(base_dir, "config.gin"), "w") as f:
        f.write(config)
  steps = sorted({s for series in scalars.values() for s in series})
  for step in steps:
    writer.scalars(step, {t: v[step] for t, v in scalars.items() if step in v})
  writer.close()


def curve(offset, n=3):
  return {i: offset + 0.5 * i for i in range(n)}


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("BATCH_RL_CACHE", str(tmp_path / "cache"))
  root = tmp_path / "sweep"
  for game in ("Pong", "Breakout"):
    for seed in (0, 1):
      for lr in (1e-4, 5e-5):
        write_run(root / game / f"lr{lr}" / f"s{seed}",
                  {"Rank/srank": curve(10 * seed + 1000 * lr),
                   "Eval/AverageReturn": curve(100 + seed)},
                  config_text(game, seed, lr=lr))
  return root


def test_parse_gin_config_labels_and_multiline_values():
  text = config_text("Pong", 3, regularizers="[@LpRegularizer()]") + (
      "CQLRegularizer.things = [\n    1,\n    2,\n]\nscope/DQNAgent.gamma = %GAMMA\n")
  config = gin_config.parse("```\n" + text + "\n```")
  assert config["FixedReplayRunner.seed"] == 3
  assert config["create_optimizer.learning_rate"] == 5e-5
  assert config["CQLRegularizer.things"] == [1, 2]
  assert str(config["scope/DQNAgent.gamma"]) == "%GAMMA"
  assert gin_config.agent_label(config) == "DQNAgent+LpRegularizer"
  # The operative config leaves out agent_fn when it is the default.
  del config["FixedReplayRunner.agent_fn"]
  assert gin_config.agent_label(config) == "DQNAgent+LpRegularizer"
  with pytest.raises(ValueError, match="not a gin config"):
    gin_config.parse("this is = = not gin")


def test_tidy_table_has_labels_hyperparameters_and_exact_values(sweep_dir):
  sweep = loading.load_sweep(str(sweep_dir))
  assert len(sweep.runs) == 8
  assert sweep.hyperparameters == ["create_optimizer.learning_rate"]
  assert list(sweep.scalars.columns) == ["run", "game", "domain", "agent", "seed",
                                         "create_optimizer.learning_rate", "iteration",
                                         "tag", "value"]
  assert set(sweep.scalars["game"]) == {"Pong", "Breakout"}
  assert set(sweep.scalars["agent"]) == {"DQNAgent"}
  assert len(sweep.scalars) == 8 * 2 * 3
  row = sweep.scalars[(sweep.scalars["run"] == os.path.join("Pong", "lr0.0001", "s1")) &
                      (sweep.scalars["tag"] == "Rank/srank")].sort_values("iteration")
  np.testing.assert_allclose(row["value"], [10.1, 10.6, 11.1], rtol=1e-6)
  assert list(row["iteration"]) == [0, 1, 2]
  assert set(row["seed"]) == {1}
  assert set(row["create_optimizer.learning_rate"]) == {1e-4}
  assert sweep.runs["complete"].all()
  assert sweep.problems == []
  wide = sweep.wide(["Rank/srank", "Eval/AverageReturn"])
  assert len(wide) == 8 * 3 and {"Rank/srank", "Eval/AverageReturn"} <= set(wide.columns)


def test_config_from_text_summary_when_config_gin_is_missing(tmp_path):
  write_run(tmp_path / "run", {"Rank/srank": curve(1)},
            config_text("Seaquest", 4, agent="C51Agent"), config_as_text=True)
  sweep = loading.load_sweep(str(tmp_path / "run"), cache=False)
  (run,) = sweep.runs.to_dict("records")
  assert (run["game"], run["agent"], run["seed"], run["config_source"]) == (
      "Seaquest", "C51Agent", 4, "Config/gin")


def test_run_without_config_and_missing_tags_are_named_and_the_rest_loads(tmp_path, caplog):
  write_run(tmp_path / "a", {"Rank/srank": curve(1), "Eval/AverageReturn": curve(2)},
            config_text("Pong", 0))
  write_run(tmp_path / "b", {"Rank/srank": curve(3)})  # no config, no return
  with caplog.at_level(logging.WARNING, logger="analysis"):
    sweep = loading.load_sweep(str(tmp_path), cache=False)
  assert any("run " in p and "b: no config.gin" in p for p in sweep.problems)
  assert "no config.gin" in caplog.text
  b = sweep.runs.set_index("run").loc["b"]
  assert (b["game"], b["agent"]) == ("unknown", "unknown")
  assert sweep.require(["Rank/srank", "Eval/AverageReturn", "Features/norm"], "test") == [
      "Rank/srank", "Eval/AverageReturn"]
  assert any("1 run(s) lack 'Eval/AverageReturn': b" in p for p in sweep.problems)
  assert any("no run logged 'Features/norm'" in p for p in sweep.problems)
  with pytest.raises(LookupError, match="Features/norm"):
    sweep.require(["Features/norm"], "test")


def test_empty_and_missing_logdir_say_what_is_wrong(tmp_path):
  with pytest.raises(loading.LogdirError, match="no such directory"):
    loading.load_sweep(str(tmp_path / "nope"))
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  with pytest.raises(loading.LogdirError, match="no TensorBoard event files"):
    loading.load_sweep(str(tmp_path / "empty"))


def test_in_progress_and_truncated_runs_load_what_they_have(tmp_path):
  write_run(tmp_path / "cut", {"Rank/srank": curve(1, n=5)},
            config_text("Pong", 0, iterations=200))
  (events,) = [p for p in os.listdir(tmp_path / "cut") if p.startswith("events")]
  path = tmp_path / "cut" / events
  size = os.path.getsize(path)
  with open(path, "r+b") as f:  # a writer killed mid-record
    f.truncate(size - 7)
  sweep = loading.load_sweep(str(tmp_path / "cut"), cache=False)
  iterations = sorted(sweep.scalars["iteration"])
  assert iterations == list(range(len(iterations))) and 4 <= len(iterations) <= 5
  assert not sweep.runs["complete"].iloc[0]
  assert any("in progress or cut off" in p for p in sweep.problems)


def test_long_runs_keep_every_step(tmp_path):
  write_run(tmp_path / "long", {"Rank/srank": {i: float(i) for i in range(300)}},
            config_text("Pong", 0, iterations=300))
  sweep = loading.load_sweep(str(tmp_path / "long"), cache=False)
  assert sorted(sweep.scalars["value"]) == [float(i) for i in range(300)]


def test_cache_reads_only_changed_runs(sweep_dir, monkeypatch):
  first = loading.load_sweep(str(sweep_dir))
  calls = []
  real = loading.read_run
  monkeypatch.setattr(loading, "read_run", lambda d: calls.append(d) or real(d))
  again = loading.load_sweep(str(sweep_dir))
  assert calls == []
  assert again.scalars.equals(first.scalars)
  # A run that logs one more iteration is read again, alone.
  run = sweep_dir / "Pong" / "lr5e-05" / "s0"
  writer = summary_writer.SummaryWriter(str(run))
  writer.scalars(3, {"Rank/srank": 42.0})
  writer.close()
  updated = loading.load_sweep(str(sweep_dir))
  assert [os.path.relpath(c, sweep_dir) for c in calls] == [os.path.join("Pong", "lr5e-05",
                                                                         "s0")]
  assert len(updated.scalars) == len(first.scalars) + 1
  assert 42.0 in set(updated.scalars["value"])


def test_a_runs_post_hoc_perturbed_evaluation_is_not_another_run(tmp_path):
  write_run(str(tmp_path / "seed_0"), {"Rank/srank": {0: 5.0}})
  write_run(str(tmp_path / "seed_0" / "perturbed"), {"Eval/Perturbed/shift/1": {0: 1.0}})
  assert loading.find_runs(str(tmp_path)) == ["seed_0"]

"""Evaluation-time input perturbations: the shift and the zoom against numpy and
hand-worked values, their randomness, the runner's tags, resume, the post-hoc command,
the robustness metric and the bad inputs."""
import importlib.util
import itertools
import os
import shutil

import gin
import jax
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from analysis import robustness
from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import summary_writer
from batch_rl.datasets import quickstart
from batch_rl.environments import perturbations
from batch_rl.runners import evaluate_perturbed
from batch_rl.runners import perturbed_evaluation
from batch_rl.runners import registry
from batch_rl.runners import stop_signal
from batch_rl.validation import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = "{'shift': [0, 2], 'scale': [0.5]}"


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


# kind and level are static: one compile per (kind, level, shape).
perturb = jax.jit(perturbations.perturb, static_argnums=(0, 1))


# Shapes and levels shared between tests, so that each compiles once.
MINATAR, ATARI = (32, 10, 10, 4, 1), (6, 84, 84, 4)
LEVEL = {"minatar": {"shift": 2, "scale": 0.75}, "atari": {"shift": 4, "scale": 0.75}}


def keys(n, seed=0):
  return jax.random.split(jax.random.PRNGKey(seed), n)


def numpy_shifts(state, pad):
  """{(dy, dx): np.pad(edge) + crop at that offset} of one state [H, W, ...]."""
  height, width = state.shape[:2]
  widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (state.ndim - 2)
  padded = np.pad(state, widths, mode="edge")
  return {(dy, dx): padded[dy:dy + height, dx:dx + width]
          for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)}


def offset_of(shifted, state, pad):
  matches = [o for o, ref in numpy_shifts(state, pad).items() if np.array_equal(ref, shifted)]
  assert len(matches) == 1, matches  # random content: exactly one offset fits
  return matches[0]


# ---------------------------------------------------------------------------- shift
@pytest.mark.parametrize("shape, level", [(MINATAR, LEVEL["minatar"]["shift"]),
                                          (ATARI, LEVEL["atari"]["shift"])])
def test_shift_is_an_edge_padded_crop_at_an_offset_in_range(shape, level):
  states = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
  out = np.asarray(perturb("shift", level, states, keys(shape[0])))
  assert out.dtype == np.uint8 and out.shape == states.shape
  offsets = [offset_of(out[i], states[i], level) for i in range(shape[0])]
  assert len(set(offsets)) > 1  # each state draws its own shift


def test_the_same_shift_moves_every_stacked_frame():
  frames = np.random.default_rng(1).integers(0, 256, ATARI).astype(np.uint8)
  level = LEVEL["atari"]["shift"]
  out = np.asarray(perturb("shift", level, frames, keys(ATARI[0], 1)))
  for i in range(ATARI[0]):
    per_frame = {offset_of(out[i, ..., f], frames[i, ..., f], level) for f in range(4)}
    assert len(per_frame) == 1, per_frame


def test_each_state_is_perturbed_by_its_own_key_alone():
  rng = np.random.default_rng(2)
  batch = np.repeat(rng.integers(0, 2, MINATAR[1:]).astype(np.uint8)[None], MINATAR[0], 0)
  others = rng.integers(0, 2, MINATAR).astype(np.uint8)
  row_keys = keys(MINATAR[0], 2)
  for kind, level in LEVEL["minatar"].items():
    out = np.asarray(perturb(kind, level, batch, row_keys))
    distinct = {out[i].tobytes() for i in range(MINATAR[0])}
    assert len(distinct) > 4, kind  # same picture, other draws
    for i in (0, 17):  # other states beside it, or another place: the same result
      mixed = others.copy()
      mixed[i] = batch[i]
      np.testing.assert_array_equal(np.asarray(perturb(kind, level, mixed, row_keys))[i],
                                    out[i])
      np.testing.assert_array_equal(np.asarray(perturb(
          kind, level, batch, row_keys[::-1]))[MINATAR[0] - 1 - i], out[i])


@pytest.mark.parametrize("kind", perturbations.KINDS)
def test_level_zero_is_the_identity(kind):
  for shape in ((5, 10, 10, 4, 1), (3, 84, 84, 4)):
    states = np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8)
    out = perturbations.perturb(kind, 0, states, keys(shape[0]))  # eager: no ops at all
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(out), states)


# ---------------------------------------------------------------------------- scale
def test_zoom_matches_a_hand_worked_4x4_image():
  # I[y, x] = 40 y + 4 x is linear, so the bilinear zoom is exact: 40 y' + 4 x' at the
  # source coordinates c + (y - c) / s, c = 1.5, clamped to [0, 3].
  image = (40 * np.arange(4)[:, None] + 4 * np.arange(4)[None, :]).astype(np.uint8)
  images = np.stack([image, image])[..., None]  # [2, 4, 4, 1]
  out = np.asarray(perturbations.zoom(images, np.array([2.0, 0.5])))[..., 0]
  # s = 2: sources 0.75, 1.25, 1.75, 2.25 -> 30 + 3, ...
  np.testing.assert_allclose(out[0], [[33, 35, 37, 39], [53, 55, 57, 59],
                                      [73, 75, 77, 79], [93, 95, 97, 99]])
  # s = 0.5: sources -1.5, 0.5, 2.5, 4.5 -> clamped 0, 0.5, 2.5, 3.
  np.testing.assert_allclose(out[1], [[0, 2, 10, 12], [20, 22, 30, 32],
                                      [100, 102, 110, 112], [120, 122, 130, 132]])


@pytest.mark.parametrize("factor", [1.37, 0.8])
def test_zoom_matches_scipy_bilinear_interpolation(factor):
  image = np.random.default_rng(4).random((84, 84, 3)).astype(np.float32)
  centre = 83 / 2
  source = centre + (np.arange(84) - centre) / factor
  ys, xs = np.meshgrid(source, source, indexing="ij")
  want = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float64), [ys, xs],
                                           order=1, mode="nearest") for c in range(3)], -1)
  got = np.asarray(perturbations.zoom(image[None], np.array([factor])))[0]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_scale_factors_are_log_uniform_in_the_levels_range():
  # On a ramp I[y, x] = x the zoomed picture's slope at the centre is 1 / s.
  ramp = np.broadcast_to(np.arange(84, dtype=np.float32), (84, 84))[None, ..., None]
  states = np.repeat(ramp, 400, axis=0)
  out = np.asarray(perturb("scale", 0.5, states, keys(400, 5)))
  factors = 1.0 / (out[:, 42, 42, 0] - out[:, 42, 41, 0])
  assert factors.min() >= 1 / 1.5 - 1e-4 and factors.max() <= 1.5 + 1e-4
  assert factors.min() < 0.7 and factors.max() > 1.43  # the range is spanned
  assert 0.4 < np.mean(factors > 1) < 0.6  # zooming in and out alike
  assert abs(np.mean(np.log(factors))) < 0.03


def test_uint8_in_uint8_out_and_binary_frames_stay_binary():
  minatar = np.random.default_rng(6).integers(0, 2, MINATAR).astype(np.uint8)
  atari = np.random.default_rng(6).integers(0, 256, ATARI).astype(np.uint8)
  for kind in perturbations.KINDS:
    out = np.asarray(perturb(kind, LEVEL["minatar"][kind], minatar, keys(MINATAR[0])))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert (out != minatar).any()
    out = np.asarray(perturb(kind, LEVEL["atari"][kind], atari, keys(ATARI[0])))
    assert out.dtype == np.uint8 and (out != atari).any()


# ---------------------------------------------------------------------------- the metric
def test_robustness_metric_on_hand_worked_values():
  np.testing.assert_allclose(robustness.robustness([3.0, 1.0], [4.0, 4.0]), [0.75, 0.25])
  # IceHockey-style shift: (0 + 2) / (-1 + 2); no ratio to a score of 0.
  np.testing.assert_allclose(robustness.robustness(0.0, -1.0, shift=2.0), 2.0)
  assert np.isnan(robustness.robustness(1.0, 0.0))
  scalars = pd.DataFrame([(5, "Eval/AverageReturn", 4.0), (5, "Eval/NumEpisodes", 10.0),
                          (5, "Eval/Perturbed/shift/2", 3.0),
                          (5, "Eval/PerturbedEpisodes/shift/2", 8.0),
                          (5, "Eval/Perturbed/scale/0.5", 1.0), (3, "Rank/srank", 50.0)],
                         columns=["iteration", "tag", "value"])
  table = robustness.run_table(scalars)
  rows = {(r.kind, r.level): (r.score, r.episodes, r.robustness) for r in table.itertuples()}
  assert rows.keys() == {("scale", 0.0), ("scale", 0.5), ("shift", 0.0), ("shift", 2.0)}
  assert rows[("shift", 2.0)] == (3.0, 8.0, 0.75)
  assert rows[("shift", 0.0)] == (4.0, 10.0, 1.0)
  assert rows[("scale", 0.5)][::2] == (1.0, 0.25)
  assert robustness.mean_robustness(table) == {"scale": 0.25, "shift": 0.75}
  # [1, 2, 3]: mean 2, sd 1, t(0.975, 2 dof) = 4.302653 -> 2 +- 2.48414.
  mean, low, high, n = robustness.mean_ci([1.0, 2.0, 3.0])
  assert (mean, n) == (2.0, 3)
  np.testing.assert_allclose([low, high], [2 - 2.48414, 2 + 2.48414], atol=1e-4)
  # Welch: b constant, so the interval is a's (dof 2).
  diff, low, high = robustness.difference_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
  np.testing.assert_allclose([diff, low, high], [2.0, 2 - 2.48414, 2 + 2.48414], atol=1e-4)


def test_due_every_n_iterations_and_after_the_last():
  due = lambda every: [t for t in range(5)
                       if perturbed_evaluation.PerturbedEvaluation(every=every).due(t, 5)]
  assert due(0) == [4] and due(2) == [1, 3, 4] and due(1) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, frame, expected", [
    (dict(kinds=["blur"]), None, ["`PerturbedEvaluation.kinds`", "'blur'", "'shift', 'scale'"]),
    (dict(levels={"noise": [1]}), None, ["`PerturbedEvaluation.levels`", "'shift', 'scale'"]),
    (dict(every=-1), None, ["`PerturbedEvaluation.every`", ">= 0"]),
    (dict(levels={"shift": [6]}), (10, 10, 4), ["`PerturbedEvaluation.levels`", "[0, 5]"]),
    (dict(levels={"shift": [1.5]}), (84, 84), ["`PerturbedEvaluation.levels`", "[0, 42]"]),
    (dict(levels={"scale": [1.5]}), (10, 10, 4), ["`PerturbedEvaluation.levels`", "[0, 1]"]),
    (dict(levels={"scale": [-0.1]}), (84, 84), ["`PerturbedEvaluation.levels`", "[0, 1]"]),
    (dict(), (4,), ["`PerturbedEvaluation.levels`", "image observations"]),
])
def test_bad_settings_name_the_binding(kwargs, frame, expected):
  with pytest.raises(ConfigError) as raised:
    perturbed_evaluation.PerturbedEvaluation(**kwargs).check(frame, 100, "FixedReplayRunner")
  lines = [l for l in str(raised.value).splitlines()  # gin appends where it was called
           if not l.strip().startswith("In call to configurable")]
  assert len(lines) == 1, lines
  message = lines[0]
  for part in expected:
    assert part in message, message


# ---------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "breakout" / "1" / "replay_logs")
  quickstart.log_behaviour_policy(path, num_checkpoints=1, capacity=1500, seed=0)
  return path


def bindings(replay_dir, *extra):
  return [f"load_fixed_replay.replay_dir = '{replay_dir}'",
          "FixedReplayRunner.game = 'breakout'", "FixedReplayRunner.domain = 'minatar'",
          "FixedReplayRunner.num_iterations = 2", "FixedReplayRunner.training_steps = 20",
          "FixedReplayRunner.evaluation_steps = 40",
          "FixedReplayRunner.diagnostics_batch_size = 64",
          "MinAtarEnvironment.minimal_action_set = True",
          "DQNAgent.network = @MinAtarDQNNetwork", "DQNAgent.target_update_period = 10",
          "FixedReplayRunner.perturbed_evaluation = @PerturbedEvaluation()",
          f"PerturbedEvaluation.levels = {LEVELS}", "PerturbedEvaluation.every = 1", *extra]


def make(base_dir, replay_dir, *extra):
  config_lib.parse_gin([], bindings(replay_dir, *extra))
  return registry.create_runner(base_dir=str(base_dir))


def scalars(directory):
  return {tag: values for tag, values in summary_writer.read_scalars(str(directory)).items()
          if not tag.startswith("Time/") and tag != "Train/StepsPerSecond"}


def files_of(directory):
  return {os.path.relpath(os.path.join(root, f), directory):
          os.stat(os.path.join(root, f)).st_mtime_ns
          for root, _, files in os.walk(directory) for f in files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, replay_dir):
  base = tmp_path_factory.mktemp("reference") / "run"
  make(base, replay_dir).run()
  gin.clear_config()
  return base


PERTURBED_TAGS = {"Eval/Perturbed/shift/0", "Eval/Perturbed/shift/2", "Eval/Perturbed/scale/0.5",
                  "Eval/PerturbedEpisodes/shift/0", "Eval/PerturbedEpisodes/shift/2",
                  "Eval/PerturbedEpisodes/scale/0.5"}


def test_the_runner_logs_every_level_once_per_due_iteration(reference):
  logged = scalars(reference)
  assert PERTURBED_TAGS <= set(logged)
  for tag in PERTURBED_TAGS:
    assert {s: len(v) for s, v in logged[tag].items()} == {0: 1, 1: 1}, tag
  # Level 0 plays the plain evaluation's episodes: same environments, seeds and keys.
  assert logged["Eval/Perturbed/shift/0"] == logged["Eval/AverageReturn"]
  assert logged["Eval/PerturbedEpisodes/shift/0"] == logged["Eval/NumEpisodes"]
  assert all(v[0] >= 1 for v in logged["Eval/PerturbedEpisodes/shift/2"].values())


class StopInPhase(stop_signal.GracefulStop):
  """A stop flag that turns on `checks` looks after the perturbed phase `target` of
  `iteration` has started (the Evaluator looks once per environment step)."""

  def __init__(self, checks):
    super().__init__()
    self.checks_left = None
    self.checks = checks

  @property
  def requested(self):
    if self.checks_left is None:
      return None
    self.checks_left -= 1
    return "SIGTERM" if self.checks_left < 0 else None

  @requested.setter
  def requested(self, value):
    del value


def test_a_run_stopped_inside_a_perturbed_phase_resumes_exactly(tmp_path, reference,
                                                                replay_dir):
  base = tmp_path / "stopped"
  runner = make(base, replay_dir)
  stop = runner._stop = StopInPhase(checks=5)  # pylint: disable=protected-access
  evaluator = runner._evaluate  # pylint: disable=protected-access
  plain = evaluator.evaluate_seeds

  def evaluate_seeds(params, iteration, should_stop=None, perturbation=None, steps=None):
    if iteration == 1 and perturbation == ("scale", 0.5):
      stop.checks_left = stop.checks
    return plain(params, iteration, should_stop, perturbation=perturbation, steps=steps)

  evaluator.evaluate_seeds = evaluate_seeds
  with pytest.raises(stop_signal.Preempted):
    runner.run()
  assert checkpointing.list_partial(str(base / "checkpoints")) == [1]
  assert set(scalars(base)["Eval/Perturbed/shift/2"]) == {0}  # iteration 1 not logged
  gin.clear_config()
  make(base, replay_dir).run()
  got, want = scalars(base), scalars(reference)
  assert sorted(got) == sorted(want)
  for tag in want:  # every step once, the same value (NaN where the reference has NaN)
    assert sorted(got[tag]) == sorted(want[tag]), tag
    for step in want[tag]:
      np.testing.assert_array_equal(got[tag][step], want[tag][step], err_msg=tag)


def test_post_hoc_evaluation_logs_what_the_run_logged_and_touches_nothing_of_it(
    tmp_path, reference):
  run = tmp_path / "run"
  shutil.copytree(reference, run)
  before = files_of(run)
  iteration, written = evaluate_perturbed.evaluate_run(
      str(run), bindings=[f"PerturbedEvaluation.levels = {LEVELS}"])
  assert iteration == 1
  assert {k: v for k, v in files_of(run).items() if not k.startswith("perturbed")} == before
  logged, post_hoc = scalars(run), scalars(run / "perturbed")
  assert set(post_hoc) == PERTURBED_TAGS | {"Eval/AverageReturn", "Eval/NumEpisodes"}
  for tag in post_hoc:  # the run's own values at its newest checkpoint's step
    assert post_hoc[tag] == {1: logged[tag][1]}, tag
  assert written.keys() == post_hoc.keys()
  # Again with one more level: only that one is evaluated, nothing logged twice.
  _, again = evaluate_perturbed.evaluate_run(
      str(run), bindings=["PerturbedEvaluation.levels = {'shift': [0, 1, 2], 'scale': [0.5]}"])
  assert set(again) == {"Eval/Perturbed/shift/1", "Eval/PerturbedEpisodes/shift/1"}
  assert all(len(v) == 1 for by_step in scalars(run / "perturbed").values()
             for v in by_step.values())
  # Another step budget into the same folder is refused, naming the setting.
  with pytest.raises(ConfigError, match="evaluation_steps: 40 -> 30"):
    evaluate_perturbed.evaluate_run(str(run), bindings=["PerturbedEvaluation.evaluation_steps = 30"])


def test_post_hoc_refuses_a_run_without_checkpoint_and_bad_levels(tmp_path, reference, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(reference / "config.gin", empty / "config.gin")
  assert evaluate_perturbed.main(["--run_dir", str(empty)]) == 2
  assert "has no checkpoint" in capsys.readouterr().err
  run = tmp_path / "run"
  shutil.copytree(reference, run)
  status = evaluate_perturbed.main(["--run_dir", str(run), "--gin_bindings",
                                "PerturbedEvaluation.levels = {'shift': [9]}"])
  error = capsys.readouterr().err
  assert status == 2 and error.startswith("error: `PerturbedEvaluation.levels`")
  assert "[0, 5]" in error and "In call to configurable" not in error
  assert not (run / "perturbed").exists()


@pytest.mark.parametrize("binding, name", [
    ("PerturbedEvaluation.kinds = ['blur']", "PerturbedEvaluation.kinds"),
    ("PerturbedEvaluation.every = -2", "PerturbedEvaluation.every"),
    ("PerturbedEvaluation.levels = {'shift': [6]}", "PerturbedEvaluation.levels"),
])
def test_the_runner_refuses_bad_perturbations_before_writing(tmp_path, replay_dir, binding,
                                                             name):
  with pytest.raises(ConfigError, match=f"`{name}`"):
    make(tmp_path / "never", replay_dir, binding)
  assert not (tmp_path / "never").exists()


def test_the_experiment_refuses_unfinished_and_missing_runs(tmp_path, reference, capsys):
  spec = importlib.util.spec_from_file_location(
      "robustness_experiment", os.path.join(REPO, "experiments", "robustness.py"))
  experiment = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(experiment)
  unfinished = tmp_path / "unfinished"
  shutil.copytree(reference, unfinished)
  os.remove(unfinished / "checkpoints" / "ckpt_000001.msgpack")
  table = tmp_path / "table.md"
  status = experiment.main(["--dqn_runs", str(reference), str(unfinished),
                            str(tmp_path / "missing"), "--bc_runs", str(reference),
                            "--table", str(table), "--figure", str(tmp_path / "f.png")])
  error = capsys.readouterr().err
  assert status == 1 and not table.exists()
  assert f"DQN {unfinished}: unfinished: iteration 1 of 2 checkpointed" in error
  assert f"DQN {tmp_path / 'missing'}: no such run" in error
  assert "BC has 1 runs; the claim needs at least 3 seeds" in error


def test_the_gin_file_stacks_on_the_quickstart_with_levels_valid_for_both_domains():
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "quickstart.gin"),
                        os.path.join(REPO, "gin_configs", "evaluation", "perturbed.gin")], [])
  bound = gin.get_bindings("FixedReplayRunner")["perturbed_evaluation"]
  assert isinstance(bound, perturbed_evaluation.PerturbedEvaluation)
  assert {k for k, _ in bound.settings} == {"shift", "scale"} and bound.every == 0
  for frame in ((10, 10, 4), (84, 84)):
    bound.check(frame, 100, "FixedReplayRunner")

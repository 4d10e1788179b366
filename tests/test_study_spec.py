"""The study file (batch_rl/study/spec.py): expansion into runs, run names, gin literals,
and every bad input as one ConfigError naming the file and the axis, before anything
is written; plus the `plan` command."""
import contextlib
import io
import os
import subprocess
import sys

import gin
import pytest

from batch_rl.study import __main__ as study_main
from batch_rl.study import launch as launch_lib
from batch_rl.study import spec
from batch_rl.validation import ConfigError
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "gin_configs/gridworld/base.gin"
LP = "gin_configs/regularizers/lp.gin"

DEMO = f"""
name = "demo"
gin_files = ["{BASE}"]
bindings = ["GridworldRunner.num_iterations = 20"]

[axes]
"GridworldEnv.features" = ["smooth", "two_hot"]
"create_optimizer.learning_rate" = [1e-4, 0.01]
"GridworldRunner.dataset_episodes" = [50]
[axes.agent]
fqi = {{}}
lp = {{ gin_files = ["{LP}"], bindings = ["LpRegularizer.coefficient = 0.001"] }}

[seeds]
binding = "GridworldRunner.seeds"
values = [[0, 1], [2]]

[names]
"create_optimizer.learning_rate" = "lr"

[[exclude]]
"GridworldEnv.features" = "two_hot"
agent = "lp"
"""


@pytest.fixture(autouse=True)
def clear_gin():
  yield
  gin.clear_config()


def write(tmp_path, text, name="study.toml"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_expansion_order_names_and_exclude(tmp_path):
  study = spec.parse(DEMO, str(tmp_path / "demo.toml"))
  runs = study.runs(str(tmp_path / "out"))
  assert [r.name for r in runs] == [
      "smooth/lr1e-4/fqi/seeds_0-1", "smooth/lr1e-4/fqi/seeds_2",
      "smooth/lr1e-4/lp/seeds_0-1", "smooth/lr1e-4/lp/seeds_2",
      "smooth/lr0.01/fqi/seeds_0-1", "smooth/lr0.01/fqi/seeds_2",
      "smooth/lr0.01/lp/seeds_0-1", "smooth/lr0.01/lp/seeds_2",
      "two_hot/lr1e-4/fqi/seeds_0-1", "two_hot/lr1e-4/fqi/seeds_2",
      "two_hot/lr0.01/fqi/seeds_0-1", "two_hot/lr0.01/fqi/seeds_2",
  ]
  lp = runs[2]
  assert lp.run_dir == str(tmp_path / "out" / "smooth" / "lr1e-4" / "lp" / "seeds_0-1")
  assert lp.gin_files == (BASE, LP)
  assert lp.bindings == (
      "GridworldRunner.num_iterations = 20",
      "GridworldEnv.features = 'smooth'",
      "create_optimizer.learning_rate = 0.0001",
      "GridworldRunner.dataset_episodes = 50",
      "LpRegularizer.coefficient = 0.001",
      "GridworldRunner.seeds = [0, 1]",
  )
  assert lp.axes == (("GridworldEnv.features", "smooth"),
                     ("create_optimizer.learning_rate", "0.0001"), ("agent", "lp"),
                     ("GridworldRunner.seeds", "[0, 1]"))
  fqi = runs[-1]
  assert fqi.gin_files == (BASE,)
  assert fqi.bindings[-1] == "GridworldRunner.seeds = [2]"
  assert fqi.command()[1:3] == [os.path.join(REPO, "train.py"),
                                f"--base_dir={fqi.run_dir}"]
  assert study.name == "demo"


def test_the_demo_parses_as_gin_for_every_run(tmp_path):
  path = write(tmp_path, DEMO)
  assert len(spec.load(path).runs(str(tmp_path))) == 12


def test_int_seeds_single_values_and_defaults(tmp_path):
  text = f"""
gin_files = ["{BASE}"]
[axes]
"GridworldRunner.target" = ["soft_q"]
"GridworldRunner.reinitialize" = [true, false]
[seeds]
binding = "GridworldEnv.seed"
values = [3]
"""
  study = spec.parse(text, str(tmp_path / "tiny.toml"))
  assert study.name == "tiny"
  runs = study.runs("out")
  assert [r.name for r in runs] == ["reinitializeTrue/seed_3", "reinitializeFalse/seed_3"]
  assert runs[0].bindings == ("GridworldRunner.target = 'soft_q'",
                              "GridworldRunner.reinitialize = True", "GridworldEnv.seed = 3")
  assert runs[0].axes == (("GridworldRunner.reinitialize", "True"),)


def test_no_axes_and_no_seeds_is_one_run(tmp_path):
  study = spec.parse(f'gin_files = ["{BASE}"]\n', str(tmp_path / "one.toml"))
  assert [r.name for r in study.runs("out")] == ["run"]


@pytest.mark.parametrize("value, literal", [
    ("breakout", "'breakout'"),
    ("@MinAtarDQNNetwork", "@MinAtarDQNNetwork"),
    ("@LpRegularizer()", "@LpRegularizer()"),
    ("%GAMMA", "%GAMMA"),
    (True, "True"),
    (False, "False"),
    (3, "3"),
    (1e-4, "0.0001"),
    (0.5, "0.5"),
    ([64, 64], "[64, 64]"),
    (["a", 1.5, [True]], "['a', 1.5, [True]]"),
    ({"a": 1}, "{'a': 1}"),
])
def test_gin_literals(value, literal):
  assert spec.gin_literal(value, "here") == literal


def test_non_finite_floats_have_no_gin_literal():
  with pytest.raises(ConfigError, match="here"):
    spec.gin_literal(float("inf"), "here")


@pytest.mark.parametrize("value, text", [
    (200, "200"), (200.0, "200"), (0.01, "0.01"), (1e-4, "1e-4"), (2.5e-4, "2.5e-4"),
    (1e6, "1e6"), (0.001, "1e-3"), (3.125e-4, "3.125e-4"), (-0.5, "-0.5"), (0.0, "0"),
    (1234567.0, "1234567"),
])
def test_compact_numbers(value, text):
  assert spec.compact_number(value) == text


@pytest.mark.parametrize("value, component", [
    ("breakout", "breakout"), ("space invaders", "space_invaders"), ("@mlp_model", "mlp_model"),
    ("a/b", "a_b"), (".hidden", "_.hidden"),
])
def test_string_values_name_their_runs_safely(tmp_path, value, component):
  text = f'[axes]\n"GridworldEnv.features" = ["{value}", "other"]\n'
  runs = spec.parse(text, str(tmp_path / "s.toml")).runs("out")
  assert runs[0].name == component


# (study text, what the message must name besides the file). Each is refused before
# anything is written.
BAD = {
    "axis without values": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = []\n',
        ["axis 'GridworldRunner.gradient_steps'", "no values"]),
    "named axis without labels": (
        f'gin_files = ["{BASE}"]\n[axes.agent]\n', ["axis 'agent'", "no labels"]),
    "two axes bind one parameter": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = [1, 2]\n'
        '[axes.agent]\nfast = { bindings = ["GridworldRunner.gradient_steps = 5"] }\n',
        ["`GridworldRunner.gradient_steps`", "axis 'GridworldRunner.gradient_steps'",
         "axis 'agent'"]),
    "an axis and a constant binding": (
        f'gin_files = ["{BASE}"]\nbindings = ["GridworldRunner.gradient_steps = 3"]\n'
        '[axes]\n"GridworldRunner.gradient_steps" = [1, 2]\n',
        ["the study's `bindings`", "axis 'GridworldRunner.gradient_steps'"]),
    "an axis and the seeds": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.seeds" = [[1], [2]]\n'
        '[seeds]\nbinding = "GridworldRunner.seeds"\nvalues = [[0]]\n',
        ["axis 'GridworldRunner.seeds'", "[seeds]"]),
    "exclude names an unknown axis": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = [1, 2]\n'
        '[[exclude]]\n"GridworldRunner.batch_size" = 3\n',
        ["[[exclude]] number 1", "'GridworldRunner.batch_size'"]),
    "exclude names an unknown value": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = [1, 2]\n'
        '[[exclude]]\n"GridworldRunner.gradient_steps" = 3\n',
        ["[[exclude]] number 1", "axis 'GridworldRunner.gradient_steps' has no value 3"]),
    "missing gin file": (
        'gin_files = ["gin_configs/gridworld/nope.gin"]\n',
        ["gin_files", "gin_configs/gridworld/nope.gin"]),
    "missing gin file of a label": (
        f'gin_files = ["{BASE}"]\n[axes.agent]\nfqi = {{}}\n'
        'lp = { gin_files = ["gin_configs/nope.gin"] }\n',
        ["axis 'agent': label 'lp'", "gin_configs/nope.gin"]),
    "unknown parameter axis": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.nope" = [1, 2]\n',
        ["axis 'GridworldRunner.nope'", "doesn't have a parameter named 'nope'"]),
    "unknown binding of a label": (
        f'gin_files = ["{BASE}"]\n[axes.agent]\nfqi = {{}}\n'
        'odd = { bindings = ["NotAConfigurable.x = 1"] }\n',
        ["axis 'agent' (label 'odd')", "NotAConfigurable"]),
    "a value gin cannot resolve": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.model_fn" = ["@mlp_model", '
        '"@no_such_model"]\n', ["axis 'GridworldRunner.model_fn'", "@no_such_model"]),
    "a constant binding that is not gin": (
        f'gin_files = ["{BASE}"]\nbindings = ["GridworldRunner.gradient_steps = (1"]\n',
        ["bindings", "is not a gin binding"]),
    "TOML syntax error": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = [1 2]\n',
        ["not valid TOML", "line 3"]),
    "unknown top-level key": (
        f'gin_files = ["{BASE}"]\nbinding = ["GridworldRunner.gradient_steps = 3"]\n',
        ["unknown keys ['binding']"]),
    "short name of an unknown axis": (
        f'gin_files = ["{BASE}"]\n[names]\n"GridworldRunner.gradient_steps" = "T"\n',
        ["[names]", "'GridworldRunner.gradient_steps'"]),
    "two runs with one name": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldEnv.features" = ["a b", "a_b"]\n',
        ["two runs would have the directory 'a_b'"]),
    "bad seeds": (
        f'gin_files = ["{BASE}"]\n[seeds]\nbinding = "GridworldRunner.seeds"\n'
        'values = [1.5]\n', ["[seeds] values"]),
    "every run excluded": (
        f'gin_files = ["{BASE}"]\n[axes]\n"GridworldRunner.gradient_steps" = [1]\n'
        '[[exclude]]\n"GridworldRunner.gradient_steps" = 1\n', ["exclude every run"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_is_one_error_naming_file_and_axis(tmp_path, case):
  text, expected = BAD[case]
  path = write(tmp_path, text)
  study_dir = tmp_path / "study"
  with pytest.raises(ConfigError) as error:
    launch_lib.launch(path, str(study_dir), "local")
  message = str(error.value)
  assert path in message
  for part in expected:
    assert part in message, message
  assert "\n" not in message.strip(), message
  assert not study_dir.exists()


def test_not_a_toml_file(tmp_path):
  path = write(tmp_path, "GridworldRunner.num_iterations = 20\n", name="fqi.gin")
  with pytest.raises(ConfigError, match="not a TOML file"):
    spec.load(path)


def test_unknown_executor_and_option_are_refused_before_writing(tmp_path):
  path = write(tmp_path, f'gin_files = ["{BASE}"]\n')
  study_dir = tmp_path / "study"
  with pytest.raises(ConfigError, match="--executor=nope"):
    launch_lib.launch(path, str(study_dir), "nope")
  with pytest.raises(ConfigError, match="--executor=local does not take --partition"):
    launch_lib.launch(path, str(study_dir), "local", partition="gpu")
  assert not study_dir.exists()


def test_unwritable_study_dir_is_named(tmp_path):
  path = write(tmp_path, f'gin_files = ["{BASE}"]\n')
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ConfigError, match="--study_dir="):
    launch_lib.launch(path, str(blocker / "study"), "local")


def test_shipped_studies_are_valid():
  sizes = {}
  for name in sorted(os.listdir(os.path.join(REPO, "studies"))):
    study = spec.load(os.path.join(REPO, "studies", name))
    sizes[name] = len(study.runs("out"))
  assert sizes["gridworld_smoke.toml"] == 4
  assert sizes["iup_offline_lp.toml"] == 50


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "batch_rl.study", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=helpers.SUBPROCESS_TIMEOUT,
                        check=False)


def main(*args):
  """`python -m batch_rl.study ARGS` in this process: (exit status, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = study_main.main(list(args))
  return rc, out.getvalue(), err.getvalue()


def test_plan_prints_the_runs_and_launches_nothing(tmp_path):
  rc, out, err = main("plan", os.path.join(REPO, "studies", "gridworld_smoke.toml"))
  assert rc == 0, err
  lines = out.splitlines()
  assert lines[1].split() == ["run", "GridworldRunner.gradient_steps",
                              "GridworldRunner.seeds"]
  assert [line.split() for line in lines[2:6]] == [
      ["T2/seeds_0", "2", "[0]"], ["T2/seeds_1", "2", "[1]"],
      ["T20/seeds_0", "20", "[0]"], ["T20/seeds_1", "20", "[1]"]]
  assert lines[6].startswith("4 runs")
  study_dir = tmp_path / "nothing"
  rc, out, err = main("plan", os.path.join(REPO, "studies", "gridworld_smoke.toml"),
                      f"--study_dir={study_dir}")
  assert rc == 0, err
  assert "4 to launch, 0 skipped." in out
  assert not study_dir.exists()


def test_cli_bad_input_exits_2_with_one_error_paragraph(tmp_path):
  """Through `python -m batch_rl.study`, as a user meets it."""
  path = write(tmp_path, BAD["exclude names an unknown axis"][0])
  result = run_cli("launch", path, f"--study_dir={tmp_path / 'study'}", "--executor=local")
  assert result.returncode == 2
  assert result.stderr.startswith("error: Study file ")
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "study").exists()

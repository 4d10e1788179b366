"""The gridworld through train.py's path (parse_gin + create_runner).

Every gin file is parsed and built into a runner whose settings are checked against the
file; three representative ones also run (offline FQI with two seeds, T=200 with both the
Lp and the DR3 term in one program, the deep linear network) and write their tags.
Each run is one compiled program, and compilation dominates a test of a few iterations,
so the other variants' training code paths are run by tests/test_gridworld_fqi.py
(supervised, online + re-initialisation) and their targets are checked there against the
float64 solvers (oracle, FQE, MC): rerunning every file would cost a compile each.
Bad input, and the flat coefficients the regulariser terms replaced, give clear messages.
"""
import glob
import os

import gin
import jax
import numpy as np
import pytest

from batch_rl import config as config_lib
from batch_rl import regularizers
from batch_rl import summary_writer
from batch_rl.runners import common, registry
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks
from batch_rl.gridworld import tabular

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, "gin_configs", "gridworld")
GIN_FILES = sorted(f for f in glob.glob(os.path.join(GIN_DIR, "*.gin"))
                   if not f.endswith("base.gin"))
SMALL = ["GridworldEnv.width = 6", "GridworldEnv.height = 6", "GridworldRunner.seeds = [3]"]
# Shrink a run: a 6x6 grid (deep linear D = 180), 2 iterations of 2 steps, cheap compile.
TINY = SMALL + ["GridworldRunner.num_iterations = 2", "GridworldRunner.log_every = 1",
                "GridworldRunner.gradient_steps = 2", "GridworldRunner.dataset_episodes = 4",
                "GridworldRunner.fast_compile = True"]
TAGS = ("Rank/srank", "Train/Loss", "Train/TDError", "Eval/AverageReturn",
        "Gridworld/srank_all_states", "Gridworld/stable_rank", "Gridworld/QError_mean",
        "Gridworld/NormalizedReturn")

LP = (("LpRegularizer", {"coefficient": 1e-3, "method": "gram"}),)
DR3 = (("DR3Regularizer", {"coefficient": 1e-3, "config": regularizers.DR3_PAPER}),)

# What each file sets (on top of base.gin: offline soft FQI, T = 10, MLP, smooth features).
# `regularizers`: (class name, attributes) of each term.
EXPECTED = {
    "deep_linear.gin": dict(gradient_steps=10, full_batch=True, log_every=10),
    "dr3.gin": dict(gradient_steps=200, regularizers=DR3),
    "fqi_t10.gin": dict(gradient_steps=10),
    "fqi_t200.gin": dict(gradient_steps=200),
    "lp.gin": dict(gradient_steps=200, regularizers=LP),
    "onehot.gin": dict(gradient_steps=200),
    "online_n10.gin": dict(gradient_steps=10, env_steps_per_iteration=1),
    "online_n200.gin": dict(gradient_steps=200, env_steps_per_iteration=1),
    "oracle.gin": dict(gradient_steps=200, target=fqi.Target.ORACLE),
    "pe_fqe.gin": dict(gradient_steps=200, target=fqi.Target.FQE),
    "pe_mc.gin": dict(gradient_steps=200, target=fqi.Target.MC),
    "reinit.gin": dict(gradient_steps=200, reinitialize=True),
    "supervised.gin": dict(gradient_steps=20, target=fqi.Target.Q_STAR, full_batch=True),
}
DEFAULTS = dict(target=fqi.Target.SOFT_Q, full_batch=False, reinitialize=False,
                regularizers=(), env_steps_per_iteration=0,
                log_every=1, batch_size=128, buffer_capacity=10_000, dataset_episodes=200)


@pytest.fixture(autouse=True)
def _clear_gin():
  yield
  gin.clear_config()


def _runner(path, bindings, base_dir):
  gin.clear_config()
  config_lib.parse_gin([path], bindings)
  return registry.create_runner(base_dir=str(base_dir))


def _setting(config, key):
  value = getattr(config, key)
  if key == "regularizers":
    return tuple((type(term).__name__, vars(term)) for term in value)
  return value


def test_every_gin_file_is_covered():
  assert sorted(EXPECTED) == sorted(os.path.basename(f) for f in GIN_FILES)


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_gin_file_builds_its_variant(path, tmp_path):
  runner = _runner(path, SMALL, tmp_path / "run")
  name = os.path.basename(path)
  for key, value in {**DEFAULTS, **EXPECTED[name]}.items():
    assert _setting(runner.config, key) == value, (name, key)
  assert runner.num_iterations == 500 and runner.seeds == (3,)
  assert runner.model.eig_features == (name == "deep_linear.gin")
  feats = runner.env.features
  if name == "onehot.gin":  # two-hot (e_x, e_y)
    assert feats.shape == (36, 12)
    np.testing.assert_array_equal(feats.sum(1), 2.0)
  else:
    assert feats.shape == (36, 16)
  assert runner.describe()
  assert not (tmp_path / "run").exists()  # nothing written before run()


@pytest.mark.parametrize("name, term, settings", [
    ("lp.gin", "LpRegularizer", {"coefficient": 1e-3, "method": "svd"}),
    ("dr3.gin", "DR3Regularizer", {"coefficient": 0.1, "config": regularizers.DR3_PAPER}),
    ("cql.gin", "CQLRegularizer", None),  # its values are that file's business
])
def test_shared_regulariser_files_stack_on_a_gridworld_file(name, term, settings, tmp_path):
  """gin_configs/regularizers/<name> after a gridworld file adds its term to the FQI loss."""
  gin.clear_config()
  config_lib.parse_gin([os.path.join(GIN_DIR, "fqi_t10.gin"),
                        os.path.join(REPO, "gin_configs", "regularizers", name)], SMALL)
  runner = registry.create_runner(base_dir=str(tmp_path / "run"))
  ((got_term, got_settings),) = _setting(runner.config, "regularizers")
  assert got_term == term
  if settings is not None:
    assert got_settings == settings


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
  """fqi_t10.gin, two seeds, 3 fitting iterations: (runner, history, base_dir)."""
  out = tmp_path_factory.mktemp("fqi_t10")
  bindings = TINY + ["GridworldRunner.seeds = [3, 4]", "GridworldRunner.num_iterations = 3"]
  runner = _runner(os.path.join(GIN_DIR, "fqi_t10.gin"), bindings, out)
  history = runner.run()
  gin.clear_config()
  return runner, history, out


def test_offline_run_writes_tags(offline_run):
  runner, _, out = offline_run
  assert os.path.isfile(out / "config.gin")
  for seed in runner.seeds:
    scalars = summary_writer.read_scalars(str(out / f"seed_{seed}"))
    for tag in TAGS:
      assert sorted(scalars[tag]) == [0, 1, 2], tag


def test_vmapped_seeds_differ_and_metrics_are_complete(offline_run):
  runner, m, _ = offline_run
  e, state = runner.env, runner.state
  w = state.params["params"]["Dense_0"]["kernel"]
  assert not np.allclose(w[0], w[1])                                         # init
  assert not np.array_equal(state.buffer.action[0], state.buffer.action[1])  # data
  for tag in ("Rank/srank", "Rank/sigma_max", "Rank/sigma_min", "Features/dead_units",
              "Features/dot_next", "Train/Loss", "Train/TDError", "Eval/AverageReturn",
              "Gridworld/srank_all_states", "Gridworld/srank_nonwall",
              "Gridworld/stable_rank", "Gridworld/sigma_max_sq", "Gridworld/sigma_min_sq",
              "Gridworld/QError_mean", "Gridworld/QError_max", "Gridworld/TQError_mean",
              "Gridworld/NormalizedReturn", "Gridworld/ExactReturn"):
    assert m[tag].shape == (2, 3) and np.isfinite(m[tag]).all(), tag
  assert (m["Gridworld/srank_all_states"] <= 64).all()
  assert (m["Gridworld/stable_rank"] >= 1).all()
  assert np.array_equal(np.asarray(state.iteration), [3, 3])
  # The frozen table is the network's Q on every state; metrics agree with it.
  p0 = jax.tree.map(lambda x: x[0], state.params)
  np.testing.assert_allclose(state.q_table[0], runner.model.q_table(p0), rtol=1e-6)
  err = np.abs(np.asarray(state.q_table[0]) - e.q_star)
  assert m["Gridworld/QError_mean"][0, -1] == pytest.approx(err.mean(), rel=1e-4)
  ret = tabular.expected_return(e.transitions, e.rewards,
                                tabular.boltzmann_policy(np.asarray(state.q_table[0],
                                                                    np.float64), 0.1),
                                e.start_state, e.horizon)
  assert m["Gridworld/ExactReturn"][0, -1] == pytest.approx(ret, rel=1e-3, abs=1e-3)


def test_dataset_rollouts_follow_the_mdp(offline_run):
  """The offline buffer holds 4 episodes of the uniform policy with soft MC returns."""
  runner, _, _ = offline_run
  e, buf = runner.env, jax.device_get(runner.state.buffer)
  h, n = e.horizon, 4 * e.horizon
  assert int(buf.count[0]) == n
  s, a, s2, g = buf.state[0, :n], buf.action[0, :n], buf.next_state[0, :n], buf.mc_return[0, :n]
  assert (s[::h] == e.start_state).all()                # every episode starts at start
  for ep in range(4):
    np.testing.assert_array_equal(s[ep * h + 1:(ep + 1) * h], s2[ep * h:(ep + 1) * h - 1])
  assert (e.transitions[s, a, s2] > 0).all()            # only possible transitions
  # Soft MC return-to-go, recomputed in float64 from the same trajectory.
  bonus = tabular.entropy_bonus(tabular.uniform_policy(e.num_states, 5), e.temperature)
  for ep in range(4):
    ss, nn = s[ep * h:(ep + 1) * h], s2[ep * h:(ep + 1) * h]
    ref, acc = np.zeros(h), 0.0
    for t in reversed(range(h)):
      acc = e.rewards[ss[t]] + (e.gamma * (bonus[nn[t]] + acc) if t < h - 1 else 0.0)
      ref[t] = acc
    np.testing.assert_allclose(g[ep * h:(ep + 1) * h], ref, rtol=1e-5, atol=1e-5)


def test_penalties_run_and_write_tags(tmp_path):
  """lp.gin (Lp bound by name) with the runner's own DR3 term: both in one program."""
  runner = _runner(os.path.join(GIN_DIR, "lp.gin"),
                   TINY + ["GridworldRunner.regularizers = [@DR3Regularizer()]",
                           "DR3Regularizer.coefficient = 0.001"], tmp_path)
  # The runner's own terms first, then those bound by name.
  assert [type(t).__name__ for t in runner.config.regularizers] == [
      "DR3Regularizer", "LpRegularizer"]
  m = runner.run()
  scalars = summary_writer.read_scalars(str(tmp_path / "seed_3"))
  for tag in TAGS + ("Train/LpPenalty", "Train/DR3"):
    assert sorted(scalars[tag]) == [0, 1], tag
  assert (m["Train/LpPenalty"] >= 0).all() and np.isfinite(m["Train/DR3"]).all()
  # Loss = TD + 0.001 Lp + 0.001 DR3 (iteration means of the per-step values).
  np.testing.assert_allclose(
      m["Train/Loss"], m["Gridworld/TDLoss"] + 1e-3 * (m["Train/LpPenalty"] + m["Train/DR3"]),
      rtol=1e-4)


def test_deep_linear_runs_and_logs_eigen_rank(tmp_path):
  runner = _runner(os.path.join(GIN_DIR, "deep_linear.gin"), TINY, tmp_path)
  assert isinstance(runner.model, networks.GridModel)
  m = runner.run()
  scalars = summary_writer.read_scalars(str(tmp_path / "seed_3"))
  for tag in TAGS + ("Rank/srank_eig",):
    assert sorted(scalars[tag]) == [0, 1], tag
  d = 36 * 5  # features of the 6x6 grid's (s, a) pairs
  assert ((m["Rank/srank_eig"] >= 1) & (m["Rank/srank_eig"] <= d)).all()
  assert ((m["Gridworld/srank_all_states"] >= 1)
          & (m["Gridworld/srank_all_states"] <= d)).all()


@pytest.mark.parametrize("binding, message", [
    ("GridworldRunner.srank_delta = 1.5", r"`GridworldRunner\.srank_delta` must be in \(0, 1\)"),
    ("GridworldRunner.srank_delta = 0.0", r"`GridworldRunner\.srank_delta`"),
    ("GridworldEnv.feature_dim = 0", r"`GridworldEnv\.feature_dim` must be >= 1"),
    ("GridworldEnv.wall_fraction = 0.7", r"`GridworldEnv\.wall_fraction`"),
    ("GridworldRunner.target = 'td3'", r"`GridworldRunner\.target` must be one of"),
    ("GridworldRunner.full_batch = True\nregularization.dr3 = @DR3Regularizer()",
     r"`GridworldRunner\.full_batch` .* phi\(s'\) \(DR3\)"),
    ("regularization.vib = @VIBRegularizer()", r"VIBRegularizer needs network options"),
])
def test_bad_input_is_a_config_error_before_writing(binding, message, tmp_path):
  config_lib.parse_gin([os.path.join(GIN_DIR, "fqi_t10.gin")], [binding])
  out = tmp_path / "run"
  with pytest.raises(common.ConfigError, match=message):
    registry.create_runner(base_dir=str(out))
  assert not out.exists()


def test_bad_term_setting_names_its_binding(tmp_path):
  config_lib.parse_gin([os.path.join(GIN_DIR, "lp.gin")], ["LpRegularizer.coefficient = -1.0"])
  out = tmp_path / "run"
  with pytest.raises(ValueError, match=r"LpRegularizer\.coefficient must be >= 0"):
    registry.create_runner(base_dir=str(out))
  assert not out.exists()


@pytest.mark.parametrize("binding, message", [
    ("GridworldRunner.lp_coefficient = 0.001",
     r"`GridworldRunner\.lp_coefficient` was replaced .* bind `regularization\.lp = "
     r"@LpRegularizer\(\)` with `LpRegularizer\.coefficient = 0\.001` and "
     r"`LpRegularizer\.method = 'gram'` \(gin_configs/regularizers/lp\.gin"),
    ("GridworldRunner.dr3_coefficient = 0.0",
     r"`GridworldRunner\.dr3_coefficient` was replaced .* bind `regularization\.dr3 = "
     r"@DR3Regularizer\(\)` with `DR3Regularizer\.coefficient = 0\.0` and "
     r"`DR3Regularizer\.variant = 'paper'` \(gin_configs/regularizers/dr3\.gin"),
])
def test_replaced_coefficients_say_what_to_bind(binding, message, tmp_path):
  config_lib.parse_gin([os.path.join(GIN_DIR, "fqi_t10.gin")], [binding])
  out = tmp_path / "run"
  with pytest.raises(common.ConfigError, match=message):
    registry.create_runner(base_dir=str(out))
  assert not out.exists()


def test_an_interrupted_run_resumes_with_every_step_logged_once(tmp_path):
  """A run stopped after one call and rerun with the full budget logs what an
  uninterrupted run logs, each fitting iteration exactly once."""
  path = os.path.join(GIN_DIR, "fqi_t10.gin")
  bindings = TINY + ["GridworldRunner.iterations_per_call = 2"]
  whole = tmp_path / "whole"
  _runner(path, bindings + ["GridworldRunner.num_iterations = 4"], whole).run()
  resumed = tmp_path / "resumed"
  _runner(path, bindings + ["GridworldRunner.num_iterations = 2"], resumed).run()
  # An interrupted call that logged iteration 2 before it could checkpoint.
  extra = summary_writer.SummaryWriter(str(resumed / "seed_3"))
  extra.scalars(2, {"Train/Loss": 123.0})
  extra.close()
  _runner(path, bindings + ["GridworldRunner.num_iterations = 4"], resumed).run()
  a = summary_writer.read_scalars(str(whole / "seed_3"))
  b = summary_writer.read_scalars(str(resumed / "seed_3"))
  for tag in ("Train/Loss", "Gridworld/srank_all_states", "Eval/AverageReturn"):
    assert b[tag] == a[tag], tag
  assert {s: len(v) for s, v in b["Train/Loss"].items()} == {0: 1, 1: 1, 2: 1, 3: 1}
  # A finished run says so and trains nothing.
  assert _runner(path, bindings + ["GridworldRunner.num_iterations = 4"], resumed).run() == {}

"""Rank and plasticity diagnostics under the names the field uses, against numpy.

Roy and Vetterli's effective rank, Lyle et al.'s feature rank, ReDo's dormant units of
every hidden layer (Sokar et al. 2023), the parameters' norm and distance from their
initialisation: each against a float64 numpy reference written here, on hand-worked and
random inputs; the networks' per-layer activations against a numpy forward pass; the
vmapped diagnostics per seed against solo calls; and a short offline run, stopped and
resumed, whose logged norms are those of its checkpoints measured from the parameters
its seed initialises (tests/test_resume_exactly.py checks that a resumed run logs every
tag as an uninterrupted one).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import diagnostics
from batch_rl import networks
from batch_rl import summary_writer
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.runners import seed_axis
from batch_rl.runners import stop_signal
from batch_rl.runners.diagnose import make_diagnose
from tests import helpers
from tests.test_resume_exactly import StopAfterChecks
from tests.test_runner import clear_gin, replay_dir, small_bindings  # pylint: disable=unused-import

# ------------------------------------------------------------------ numpy references


def _np_erank(sv):
  """Roy and Vetterli (2007): exp(-sum p log p), p = sv / sum(sv), float64 loop."""
  sv = np.asarray(sv, np.float64)
  total = sv.sum()
  return float(np.exp(-sum(s / total * np.log(s / total) for s in sv if s > 0)))


def _np_lyle(phi, eps=0.01):
  """Lyle et al. (2022): singular values of Phi / sqrt(n) above eps, float64 SVD."""
  phi = np.asarray(phi, np.float64)
  sv = np.linalg.svd(phi / np.sqrt(phi.shape[0]), compute_uv=False)
  return int(np.sum(sv > eps))


def _np_redo_fraction(h, tau):
  """ReDo (Sokar et al. 2023): unit i (the last axis) is dormant iff
  mean_x |h_i(x)| / ((1/H) sum_j mean_x |h_j(x)|) <= tau, the mean over every other
  axis (batch and spatial positions)."""
  h = np.asarray(h, np.float64)
  units = h.shape[-1]
  means = [np.mean(np.abs(h[..., i])) for i in range(units)]
  layer = sum(means) / units
  return sum(1 for m in means if m / layer <= tau) / units


def _assert_fraction(got, expected):
  """A fraction of units, up to float32 rounding (one unit more or less is >= 1/512)."""
  np.testing.assert_allclose(float(got), expected, rtol=1e-6, atol=0)


def _np_norm(leaves):
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in leaves)))


def _np_minatar_hidden(params, states):
  """The MinAtar network's hidden activations in numpy: conv 3x3 VALID + relu, then
  the row-major flatten, Dense + relu."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
  x = np.asarray(states, np.float64)
  x = x.reshape(x.shape[:3] + (-1,))  # [B, 10, 10, C * S]
  patches = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))
  conv = np.einsum("bijcuv,uvcf->bijf", patches, p["Conv_0"]["kernel"])
  conv = np.maximum(conv + p["Conv_0"]["bias"], 0.0)
  dense = conv.reshape(conv.shape[0], -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
  return {"Conv_0": conv, "Dense_0": np.maximum(dense, 0.0)}


def _with_spectrum(s, n, d, seed):
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
  v, _ = np.linalg.qr(rng.standard_normal((d, len(s))))
  return u @ np.diag(s) @ v.T


# ------------------------------------------------------------------ effective rank (Roy)


@pytest.mark.parametrize("sv, expected", [
    ([1.0, 1.0, 0.0, 0.0], 2.0),               # p = (1/2, 1/2): exp(log 2)
    ([5.0, 5.0, 5.0], 3.0),                    # uniform over k: k
    ([2.0, 0.0, 0.0], 1.0),                    # rank one
    # p = (3/4, 1/4): H = 0.75 ln(4/3) + 0.25 ln 4 = 0.215762 + 0.346574 = 0.562335.
    ([3.0, 1.0], 1.754765),
    ([0.0, 0.0], 0.0),                         # the zero matrix
])
def test_effective_rank_roy_hand_worked(sv, expected):
  got = diagnostics.effective_rank_roy(jnp.asarray(sv, jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == ()
  np.testing.assert_allclose(float(got), expected, rtol=1e-6)
  if expected:
    np.testing.assert_allclose(float(got), _np_erank(sv), rtol=1e-6)


def test_effective_rank_roy_of_matrices_from_the_shared_svd():
  # A Phi with singular values (1, 1, 0, 0): effective rank 2 (float32 SVD noise in
  # the zero singular values adds ~1e-6).
  phi = _with_spectrum([1.0, 1.0], 64, 4, seed=0).astype(np.float32)
  out = jax.jit(diagnostics.all_diagnostics)(jnp.asarray(phi))
  np.testing.assert_allclose(float(out["Rank/effective_rank_roy"]), 2.0, rtol=1e-5)
  # Random spectra against the float64 reference; invariant to the scale.
  erank = jax.jit(lambda p: diagnostics.effective_rank_roy(diagnostics.singular_values(p)))
  rng = np.random.default_rng(1)
  for _ in range(3):
    phi = (rng.standard_normal((128, 16)) * np.exp(rng.uniform(-3, 1, 16))).astype(np.float32)
    ref = _np_erank(np.linalg.svd(phi.astype(np.float64), compute_uv=False))
    assert 2 < ref < 15
    np.testing.assert_allclose(float(erank(phi)), ref, rtol=1e-5)
    np.testing.assert_allclose(float(erank(1e-3 * phi)), ref, rtol=1e-4)
  assert np.isnan(float(diagnostics.effective_rank_roy(jnp.array([1.0, jnp.nan]))))


# ------------------------------------------------------------------ feature rank (Lyle)


def test_feature_rank_lyle_hand_worked_and_unlike_rank_rel_and_srank():
  # 4 rows, singular values (10, 0.05, 0.03, 0.01): over sqrt(4) = 2 they are
  # (5, 0.025, 0.015, 0.005), three above 0.01. rank_rel counts sigma > 0.01 * 10:
  # one; srank: 10 / 10.09 = 0.99108 >= 0.99 at k = 1.
  all_diagnostics = jax.jit(diagnostics.all_diagnostics)
  phi = np.diag([10.0, 0.05, 0.03, 0.01]).astype(np.float32)
  out = all_diagnostics(jnp.asarray(phi))
  assert float(out["Rank/feature_rank_lyle"]) == 3 == _np_lyle(phi)
  assert float(out["Rank/rank_rel"]) == 1
  assert float(out["Rank/srank"]) == 1
  # An absolute floor: 1e-3 * phi has (0.005, ...) / ... -> none above; the
  # scale-free counts do not move.
  small = all_diagnostics(jnp.asarray(1e-3 * phi))
  assert float(small["Rank/feature_rank_lyle"]) == 0 == _np_lyle(1e-3 * phi)
  assert float(small["Rank/rank_rel"]) == 1 and float(small["Rank/srank"]) == 1
  # n is the number of rows: the same singular values in a 400-row matrix are
  # divided by 20: (0.5, 0.0025, 0.0015, 0.0005) -> 1.
  tall = _with_spectrum([10.0, 0.05, 0.03, 0.01], 400, 4, seed=2).astype(np.float32)
  assert float(diagnostics.feature_rank_lyle(diagnostics.singular_values(
      jnp.asarray(tall)), 400)) == 1 == _np_lyle(tall)
  assert int(diagnostics.feature_rank_lyle(jnp.array([1.0, jnp.inf]), 4)) == -1


def test_feature_rank_lyle_random_matrices_match_numpy():
  rng = np.random.default_rng(3)
  for n, d in ((256, 32), (24, 64)):
    # Column scales from 1e-4 to 1: singular values on both sides of 0.01 sqrt(n).
    phi = (rng.standard_normal((n, d)) * np.logspace(-4, 0, d)).astype(np.float32)
    sv = np.linalg.svd(phi.astype(np.float64) / np.sqrt(n), compute_uv=False)
    assert np.min(np.abs(sv - 0.01)) > 1e-4  # not a float32 coin flip
    ref = _np_lyle(phi)
    assert 0 < ref < min(n, d)
    sv = jax.jit(diagnostics.singular_values)(jnp.asarray(phi))
    assert int(diagnostics.feature_rank_lyle(sv, n)) == ref


# ------------------------------------------------------------------ dormant units (ReDo)


def test_redo_on_a_conv_feature_map_hand_worked():
  # [N=2, H=2, W=2, C=3]: channel 0 all ones (mean |h| 1), channel 1 all zeros,
  # channel 2 one entry 0.2 of 8 (mean 0.025). Layer average 1.025 / 3 = 0.341667;
  # scores (2.9268, 0, 0.07317).
  h = np.zeros((2, 2, 2, 3), np.float32)
  h[..., 0] = 1.0
  h[1, 0, 1, 2] = 0.2
  np.testing.assert_allclose(diagnostics.dormant_scores(jnp.asarray(h)),
                             [3 / 1.025, 0.0, 0.075 / 1.025], rtol=1e-6)
  got = jax.device_get(diagnostics.layer_dormant_fractions({"Conv_0": jnp.asarray(h)}))
  assert got.keys() == {"Dormant/tau0/Conv_0", "Dormant/tau0.025/Conv_0",
                        "Dormant/tau0.1/Conv_0"}
  _assert_fraction(got["Dormant/tau0/Conv_0"], 1 / 3)      # the zero channel only
  _assert_fraction(got["Dormant/tau0.025/Conv_0"], 1 / 3)  # 0.073 > 0.025
  _assert_fraction(got["Dormant/tau0.1/Conv_0"], 2 / 3)
  for tau in diagnostics.DORMANT_TAUS:
    _assert_fraction(got[diagnostics.dormant_tag(tau, "Conv_0")], _np_redo_fraction(h, tau))


def test_redo_random_conv_and_dense_layers_match_numpy():
  rng = np.random.default_rng(4)
  # Channels of spread-out scales, some dead: relu(N(0, s_c) - shift_c).
  scale = np.exp(rng.uniform(-5, 1, 24))
  shift = np.where(rng.random(24) < 0.25, 100.0, 0.0)
  conv = np.maximum(rng.standard_normal((16, 5, 5, 24)) * scale - shift, 0).astype(np.float32)
  dense = np.maximum(rng.standard_normal((64, 40)) * np.exp(rng.uniform(-5, 1, 40))
                     - np.where(rng.random(40) < 0.2, 100.0, 0.0), 0).astype(np.float32)
  got = jax.device_get(jax.jit(diagnostics.layer_dormant_fractions)(
      {"Conv_1": conv, "Dense_0": dense}))
  assert len(got) == 6
  for name, h in (("Conv_1", conv), ("Dense_0", dense)):
    fractions = [_np_redo_fraction(h, tau) for tau in diagnostics.DORMANT_TAUS]
    assert len(set(fractions)) == 3  # the taus tell the units apart
    for tau, ref in zip(diagnostics.DORMANT_TAUS, fractions):
      _assert_fraction(got[diagnostics.dormant_tag(tau, name)], ref)
    assert got[diagnostics.dormant_tag(0.0, name)] > 0  # the dead units count
  # A conv map's units are its channels, averaged over batch and positions: the
  # same as the [N * H * W, C] matrix of its positions.
  flat = jax.jit(diagnostics.layer_dormant_fractions)({"Conv_1": conv.reshape(-1, 24)})
  for tag, value in flat.items():
    assert float(value) == got[tag]
  assert np.isnan(float(diagnostics.layer_dormant_fractions(
      {"x": jnp.ones((2, 3, 3)).at[0, 0, 0].set(jnp.nan)})["Dormant/tau0.1/x"]))
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    diagnostics.layer_dormant_fractions({"x": jnp.ones(3)})


# ------------------------------------------------------------------ parameters


def test_parameter_norms_match_numpy():
  rng = np.random.default_rng(5)
  params = {"params": {"Conv_0": {"kernel": rng.standard_normal((3, 3, 4, 8)),
                                  "bias": rng.standard_normal(8)},
                       "Dense_0": {"kernel": rng.standard_normal((20, 5)),
                                   "bias": np.zeros(5)}}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  moved = jax.tree.map(lambda a: a + 0.01 * jnp.arange(a.size).reshape(a.shape), params)
  out = jax.jit(diagnostics.parameter_diagnostics)(moved, params)
  np.testing.assert_allclose(float(out["Params/weight_norm"]),
                             _np_norm(jax.tree_util.tree_leaves(moved)), rtol=1e-6)
  diffs = [0.01 * np.arange(a.size) for a in jax.tree_util.tree_leaves(params)]
  np.testing.assert_allclose(float(out["Params/distance_from_init"]), _np_norm(diffs),
                             rtol=1e-5)
  assert float(jax.jit(diagnostics.parameter_diagnostics)(params, params)[
      "Params/distance_from_init"]) == 0.0
  assert set(jax.eval_shape(diagnostics.parameter_diagnostics, params)) == {
      "Params/weight_norm"}
  # Hand-worked: leaves (3, 4) and (12,): sqrt(9 + 16 + 144) = 13.
  assert float(diagnostics.global_norm({"a": jnp.array([3.0, 4.0]),
                                        "b": jnp.array([12.0])})) == 13.0


# ------------------------------------------------------------------ networks


def _uint8(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 2, shape), jnp.uint8)


def test_minatar_and_mlp_hidden_activations_match_a_numpy_forward():
  net = networks.MinAtarDQNNetwork(num_actions=3)
  agent = dqn.DQNAgent(3, network=networks.MinAtarDQNNetwork)
  variables = helpers.random_params(agent, 0, (10, 10, 4, 1))
  states = _uint8((6, 10, 10, 4, 1), seed=1)
  capture = jax.jit(lambda v, x: networks.hidden_activations(net, v, x))
  out, hidden = capture(variables, states)
  assert list(hidden) == ["Conv_0", "Dense_0"]
  ref = _np_minatar_hidden(variables, states)
  for name in ref:
    np.testing.assert_allclose(hidden[name], ref[name], rtol=1e-5, atol=1e-5, err_msg=name)
  np.testing.assert_array_equal(out.representation, hidden["Dense_0"])
  head = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]["Dense_1"])
  np.testing.assert_allclose(out.q_values, ref["Dense_0"] @ head["kernel"] + head["bias"],
                             rtol=1e-5, atol=1e-5)
  # init's variables are the parameters alone: checkpoints keep their layout.
  assert list(jax.eval_shape(net.init, jax.random.PRNGKey(0), states)) == ["params"]

  mlp = networks.MLPQNetwork(num_actions=2, hidden_sizes=(5, 7, 3))
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 6, 1)), jnp.float32)
  rng = np.random.default_rng(3)
  v = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32),
                   jax.eval_shape(mlp.init, jax.random.PRNGKey(0), x))
  _, hidden = jax.jit(lambda v, x: networks.hidden_activations(mlp, v, x))(v, x)
  assert list(hidden) == ["Dense_0", "Dense_1", "Dense_2"]
  h = np.asarray(x, np.float64).reshape(4, -1)
  for name in hidden:
    layer = v["params"][name]
    h = np.maximum(h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"]), 0)
    np.testing.assert_allclose(hidden[name], h, rtol=1e-5, atol=1e-6, err_msg=name)


def test_nature_hidden_activations_are_its_conv_maps_and_representation():
  for padding, spatial in (("SAME", (21, 11, 11)), ("VALID", (20, 9, 7))):
    net = networks.NatureDQNNetwork(num_actions=4, padding=padding)
    x = jnp.asarray(np.random.default_rng(3).integers(0, 256, (2, 84, 84, 4)), jnp.uint8)
    shapes = jax.eval_shape(lambda v, s: networks.hidden_activations(net, v, s)[1],
                            jax.eval_shape(net.init, jax.random.PRNGKey(0), x), x)
    assert {k: v.shape for k, v in shapes.items()} == {
        "Conv_0": (2, spatial[0], spatial[0], 32), "Conv_1": (2, spatial[1], spatial[1], 64),
        "Conv_2": (2, spatial[2], spatial[2], 64), "Dense_0": (2, 512)}
  # The SAME network's maps chain into its representation: relu(flatten(Conv_2) W + b).
  agent = dqn.DQNAgent(4, network=networks.NatureDQNNetwork)
  variables = helpers.random_params(agent, 0, (84, 84, 4))
  out, hidden = jax.jit(lambda v, s: networks.hidden_activations(agent.network, v, s))(
      variables, x[:1])
  dense = variables["params"]["Dense_0"]
  phi = np.maximum(np.asarray(hidden["Conv_2"], np.float64).reshape(1, -1)
                   @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"]), 0)
  np.testing.assert_allclose(out.representation, phi, rtol=1e-4, atol=1e-5)
  assert all(float(jnp.min(h)) >= 0 for h in hidden.values())  # post-relu


# ------------------------------------------------------------------ the diagnose function


def _agent_and_batch():
  agent = dqn.DQNAgent(3, network=networks.MinAtarDQNNetwork)
  batch = helpers.random_transitions(seed=6, batch_size=64)
  return agent, batch


def _params_with_dead_units(agent, seed):
  """Random parameters with 3 conv channels and 10 representation units dead."""
  params = jax.tree.map(np.array, helpers.random_params(agent, seed, (10, 10, 4, 1)))
  params["params"]["Conv_0"]["bias"][:3] = -100.0
  params["params"]["Dense_0"]["bias"][:10] = -100.0
  return jax.tree.map(jnp.asarray, params)


def test_diagnose_per_layer_and_parameters_solo_and_vmapped_per_seed():
  agent, batch = _agent_and_batch()
  params = [_params_with_dead_units(agent, s) for s in (0, 1)]
  initial = [_params_with_dead_units(agent, s) for s in (2, 3)]
  keys = [jax.random.PRNGKey(s) for s in (4, 5)]
  sample = lambda key, data: data  # the batch itself
  solo = make_diagnose(agent, sample, 0.01)
  alone = [jax.device_get(solo(params[k], params[k], batch, keys[k], initial[k]))
           for k in (0, 1)]
  # Seed 0 against numpy.
  got = alone[0]
  ref = _np_minatar_hidden(params[0], batch.state)
  for name, h in ref.items():
    for tau in diagnostics.DORMANT_TAUS:
      _assert_fraction(got[diagnostics.dormant_tag(tau, name)], _np_redo_fraction(h, tau))
  assert got["Dormant/tau0/Conv_0"] >= 3 / 16 and got["Dormant/tau0/Dense_0"] >= 10 / 128
  # Features/dormant stays: the penultimate layer's entry at tau 0.1.
  assert got["Features/dormant"] == got["Dormant/tau0.1/Dense_0"]
  assert got["Features/dead_units"] == got["Dormant/tau0/Dense_0"]
  leaves = jax.tree_util.tree_leaves
  np.testing.assert_allclose(got["Params/weight_norm"], _np_norm(leaves(params[0])),
                             rtol=1e-6)
  np.testing.assert_allclose(
      got["Params/distance_from_init"],
      _np_norm([np.asarray(a, np.float64) - b
                for a, b in zip(leaves(params[0]), leaves(initial[0]))]), rtol=1e-6)
  phi = np.asarray(agent.apply(params[0], batch.state).representation, np.float64)
  np.testing.assert_allclose(got["Rank/effective_rank_roy"],
                             _np_erank(np.linalg.svd(phi, compute_uv=False)), rtol=1e-5)
  assert got["Rank/feature_rank_lyle"] == _np_lyle(phi)
  # Vmapped over the seeds (parameters, keys and initial parameters stacked): each
  # seed's values are its solo ones.
  seeds = seed_axis.SeedAxis([0, 1])
  vmapped = make_diagnose(agent, sample, 0.01, seeds.vmap)
  stacked = jax.device_get(vmapped(seeds.stack(params), seeds.stack(params), batch,
                                   seeds.stack(keys), seeds.stack(initial)))
  new_tags = {"Rank/effective_rank_roy", "Rank/feature_rank_lyle", "Params/weight_norm",
              "Params/distance_from_init"} | {
                  diagnostics.dormant_tag(t, n) for t in diagnostics.DORMANT_TAUS
                  for n in ("Conv_0", "Dense_0")}
  assert new_tags <= set(stacked)
  for seed_values, seed_alone in zip(seeds.split(stacked), alone):
    assert set(seed_alone) == set(seed_values)
    for tag in seed_alone:
      np.testing.assert_allclose(seed_values[tag], seed_alone[tag], rtol=1e-5, atol=1e-6,
                                 err_msg=tag)
  assert alone[0]["Params/distance_from_init"] != alone[1]["Params/distance_from_init"]


# ------------------------------------------------------------------ a real offline run

NEW_TAGS = ({"Rank/effective_rank_roy", "Rank/feature_rank_lyle", "Params/weight_norm",
             "Params/distance_from_init"} |
            {f"Dormant/tau{t}/{layer}" for t in ("0", "0.025", "0.1")
             for layer in ("Conv_0", "Dense_0")})


def _runner(base_dir, replay_dir):
  from batch_rl.runners import offline  # pylint: disable=g-import-not-at-top
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
  config_lib.parse_gin([], small_bindings(replay_dir, num_iterations=2, seed=2))
  return offline.FixedReplayRunner(base_dir=str(base_dir))


def test_offline_run_stopped_and_resumed_logs_the_tags_from_the_seeds_init(
    replay_dir, tmp_path):
  # Stopped in iteration 1's training (30 train calls and a 60-step evaluation per
  # iteration), then resumed by a new runner from the partial checkpoint: that
  # process never held the freshly initialised state.
  runner = _runner(tmp_path / "run", replay_dir)
  runner._stop = StopAfterChecks(105)  # pylint: disable=protected-access
  with pytest.raises(stop_signal.Preempted):
    runner.run()
  assert checkpointing.list_iterations(str(tmp_path / "run" / "checkpoints")) == [0]
  runner = _runner(tmp_path / "run", replay_dir)
  runner.run()
  logged = summary_writer.read_scalars(str(tmp_path / "run"))
  for tag in NEW_TAGS:
    assert {s: len(v) for s, v in logged[tag].items()} == {0: 1, 1: 1}, tag
  # The logged norms are those of the checkpointed parameters, and the distance is
  # from the parameters the seed initialises (recomputed here with agent.init).
  initial = runner.agent.init(jax.random.fold_in(jax.random.PRNGKey(2), 0),
                              agent_common.state_spec(runner.replay.state_shape))
  initial_leaves = jax.tree_util.tree_leaves(initial.params)
  for iteration in (0, 1):
    saved = checkpointing.restore(str(tmp_path / "run" / "checkpoints"), iteration, initial)
    leaves = jax.tree_util.tree_leaves(saved.params)
    np.testing.assert_allclose(logged["Params/weight_norm"][iteration][0],
                               _np_norm(leaves), rtol=1e-5)
    distance = _np_norm([np.asarray(a, np.float64) - b
                         for a, b in zip(leaves, initial_leaves)])
    assert distance > 0
    np.testing.assert_allclose(logged["Params/distance_from_init"][iteration][0], distance,
                               rtol=1e-5)
    assert logged["Features/dormant"][iteration] == \
        logged["Dormant/tau0.1/Dense_0"][iteration]
  # Before the first update the distance is 0.
  # pylint: disable=protected-access
  state = runner._initial_state
  at_init = runner._diagnose(state.params, state.target_params, runner._data,
                             jax.random.PRNGKey(0), runner._initial_params)
  # pylint: enable=protected-access
  assert float(at_init["Params/distance_from_init"]) == 0.0
  np.testing.assert_allclose(float(at_init["Params/weight_norm"]), _np_norm(initial_leaves),
                             rtol=1e-6)

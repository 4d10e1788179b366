"""The exact dataset Hessian of a TD loss and its spectrum (batch_rl/hessian.py) against
finite differences, and the post-hoc command (runners/hessian_spectrum.py) end to end
on a tiny bsuite catch run, against a Hessian recomputed here."""
import functools
import os
import subprocess
import sys

import gin
import jax
import jax.numpy as jnp
from jax import flatten_util
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import hessian
from batch_rl import networks
from batch_rl import summary_writer
from batch_rl.agents import dqn
from batch_rl.datasets import bsuite_data
from batch_rl.datasets import fixed_replay
from batch_rl.replay import sampler
from batch_rl.runners import hessian_spectrum
from batch_rl.validation import ConfigError
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def x64():
  """float64 JAX inside the test, the previous setting restored after it."""
  previous = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  yield
  jax.config.update("jax_enable_x64", previous)


# ----------------------------------------------------------- a tiny regression net
def _tiny_params(rng):
  """A 2-3-1 tanh MLP; ravel_pytree orders a dict's keys: b1, b2, w1, w2."""
  return {"w1": rng.normal(size=(2, 3)), "b1": rng.normal(size=3),
          "w2": rng.normal(size=(3, 1)), "b2": rng.normal(size=1)}


def _tiny_data(rng, n):
  return {"x": rng.normal(size=(n, 2)), "y": rng.normal(size=n)}


def _tiny_loss(params, batch):
  """Mean of a smooth, non-quadratic per-sample loss (log cosh of the error), in JAX."""
  hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
  error = (hidden @ params["w2"] + params["b2"])[:, 0] - batch["y"]
  return jnp.mean(jnp.log(jnp.cosh(error)))


def _numpy_tiny_loss(params, batch):
  """The same loss written again in float64 numpy."""
  hidden = np.tanh(batch["x"] @ params["w1"] + params["b1"])
  error = (hidden @ params["w2"] + params["b2"])[:, 0] - batch["y"]
  return float(np.mean(np.log(np.cosh(error))))


def _finite_difference_hessian(params, batch, h=1e-4):
  """Central second differences of the numpy loss, entry by entry, in ravel order
  (keys sorted, each array row-major)."""
  coordinates = [(k, i) for k in sorted(params) for i in range(params[k].size)]

  def loss_at(*moves):
    moved = {k: v.copy() for k, v in params.items()}
    for (k, i), step in moves:
      moved[k].reshape(-1)[i] += step
    return _numpy_tiny_loss(moved, batch)

  size = len(coordinates)
  out = np.zeros((size, size))
  for a, ca in enumerate(coordinates):
    for b, cb in enumerate(coordinates[:a + 1]):
      out[a, b] = out[b, a] = (loss_at((ca, h), (cb, h)) - loss_at((ca, h), (cb, -h))
                               - loss_at((ca, -h), (cb, h)) + loss_at((ca, -h), (cb, -h))
                               ) / (4 * h * h)
  return out


def test_dataset_hessian_equals_a_finite_difference_hessian(x64):
  del x64
  rng = np.random.default_rng(0)
  params, batch = _tiny_params(rng), _tiny_data(rng, 16)
  reference = _finite_difference_hessian(params, batch)
  # Columns in blocks of 4 (the last one padded), and all 13 at once (jax.hessian).
  blocked, whole = (np.asarray(hessian.dataset_hessian(_tiny_loss, params, [batch],
                                                       columns_per_pass=columns))
                    for columns in (4, None))
  for exact in (blocked, whole):
    assert exact.dtype == np.float64 and exact.shape == (13, 13)
    np.testing.assert_allclose(exact, reference, atol=1e-6 * np.abs(reference).max())
    np.testing.assert_allclose(exact, exact.T, rtol=0, atol=1e-12)
  np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-14)
  assert np.abs(reference).max() > 0.1  # a real test: the Hessian is far from zero


def test_a_float32_hessian_is_float32_and_close():
  rng = np.random.default_rng(0)
  params, batch = _tiny_params(rng), _tiny_data(rng, 16)
  reference = _finite_difference_hessian(params, batch)
  single = jax.tree.map(lambda x: np.asarray(x, np.float32), (params, batch))
  exact = hessian.dataset_hessian(_tiny_loss, *single[:1], [single[1]])
  assert exact.dtype == jnp.float32
  np.testing.assert_allclose(exact, reference, atol=1e-4 * np.abs(reference).max())


def test_chunks_of_unequal_size_give_the_hessian_of_the_mean_over_all(x64):
  del x64
  rng = np.random.default_rng(1)
  params, whole = _tiny_params(rng), _tiny_data(rng, 11)
  bounds = [0, 5, 10, 11]  # 5, 5 and 1 transitions
  chunks = (jax.tree.map(lambda x, a=a, b=b: x[a:b], whole)
            for a, b in zip(bounds[:-1], bounds[1:]))
  seen = []
  chunked = hessian.dataset_hessian(_tiny_loss, params, chunks, columns_per_pass=5,
                                    progress=lambda *a: seen.append(a[:2]))
  assert seen == [(1, 5), (2, 10), (3, 11)]
  np.testing.assert_allclose(chunked, _finite_difference_hessian(params, whole),
                             atol=1e-6 * np.abs(chunked).max())
  one = hessian.dataset_hessian(_tiny_loss, params, [whole])
  np.testing.assert_allclose(chunked, one, rtol=1e-10, atol=1e-12)


def test_flat_loss_flattens_in_ravel_order():
  rng = np.random.default_rng(2)
  params, batch = _tiny_params(rng), _tiny_data(rng, 4)
  f, theta0, unravel = hessian.flat_loss(lambda p: _tiny_loss(p, batch), params)
  expected = np.concatenate([params[k].reshape(-1) for k in sorted(params)])
  np.testing.assert_allclose(theta0, expected, rtol=1e-6)
  np.testing.assert_allclose(f(theta0), _numpy_tiny_loss(params, batch), rtol=1e-5)
  np.testing.assert_allclose(unravel(theta0)["w1"], params["w1"], rtol=1e-6)


# ------------------------------------------------------------------- spectrum
def test_spectrum_summary_of_a_known_spectrum():
  rotation, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(6, 6)))
  values = np.array([-2.0, -1e-4, 0.0, 1e-4, 0.5, 4.0])
  matrix = rotation @ np.diag(values) @ rotation.T
  matrix[0, 1] += 1e-9  # not exactly symmetric: symmetrised first
  eigenvalues = hessian.hessian_eigenvalues(matrix)
  np.testing.assert_allclose(eigenvalues, values, atol=1e-9)
  summary = hessian.spectrum_summary(eigenvalues, tol=1e-3)  # band |lambda| <= 4e-3
  assert summary["fraction_near_zero"] == pytest.approx(3 / 6)
  assert summary["num_negative"] == 1 and summary["negative_fraction"] == pytest.approx(1 / 6)
  assert summary["max_eigenvalue"] == pytest.approx(4.0)
  assert summary["min_eigenvalue"] == pytest.approx(-2.0)
  assert summary["trace"] == pytest.approx(np.trace(matrix))
  assert summary["num_parameters"] == 6
  assert hessian.spectrum_summary(np.zeros(4))["fraction_near_zero"] == 1.0


# ------------------------------------------------------------------ the size check
def _mlp_parameters(hidden_sizes, state_shape=(10, 5, 1), num_actions=3):
  """Parameters of an MLPQNetwork on bsuite catch states, counted without running it."""
  net = networks.MLPQNetwork(num_actions=num_actions, hidden_sizes=hidden_sizes)
  shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1,) + state_shape))
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))


def test_the_default_limit_takes_a_1x64_catch_mlp_and_refuses_a_2x512_one():
  small, large = _mlp_parameters((64,)), _mlp_parameters((512, 512))
  assert small == 50 * 64 + 64 + 64 * 3 + 3
  assert hessian.estimate_bytes(small) == small * small * 4
  hessian.check_size(small)
  with pytest.raises(ConfigError) as raised:
    hessian.check_size(large, binding="`hessian_spectrum.max_parameters`")
  message = str(raised.value)
  assert f"{large:,} parameters" in message
  assert f"{large * large * 4:,} bytes" in message and "GiB" in message
  assert f"{hessian.DEFAULT_MAX_PARAMETERS:,}" in message
  assert "`hessian_spectrum.max_parameters`" in message and "\n" not in message


def test_a_too_large_network_is_refused_before_anything_is_computed():
  params = {"w": np.zeros(hessian.DEFAULT_MAX_PARAMETERS + 1, np.float32)}
  read = []

  def batches():
    read.append(True)
    yield {"x": np.zeros((1, 1))}

  def loss(params, batch):
    raise AssertionError("the loss was evaluated")

  with pytest.raises(ConfigError, match=r"16,385 parameters.*`my.limit`"):
    hessian.dataset_hessian(loss, params, batches(), binding="`my.limit`")
  assert not read


# ----------------------------------------------------- the TD-loss adapter on DQN
def _float_transitions(seed, batch_size, num_actions=3, shape=(2, 1)):
  rng = np.random.default_rng(seed)
  terminal = rng.random(batch_size) < 0.25
  return sampler.Transition(
      state=jnp.asarray(rng.normal(size=(batch_size,) + shape), jnp.float32),
      action=jnp.asarray(rng.integers(0, num_actions, batch_size), jnp.int32),
      reward=jnp.asarray(rng.normal(size=batch_size), jnp.float32),
      next_state=jnp.asarray(rng.normal(size=(batch_size,) + shape), jnp.float32),
      next_action=jnp.asarray(rng.integers(0, num_actions, batch_size), jnp.int32),
      terminal=jnp.asarray(terminal),
      discount=jnp.asarray(0.99 * (1 - terminal), jnp.float32),
      index=jnp.arange(batch_size, dtype=jnp.int32))


def _tiny_dqn(**network_options):
  return dqn.DQNAgent(3, network=functools.partial(networks.MLPQNetwork, hidden_sizes=(3,),
                                                   **network_options),
                      loss_type="huber", huber_delta=1.0)


def test_td_loss_hessian_quadratic_form_matches_a_finite_difference_of_the_loss(x64):
  del x64
  agent = _tiny_dqn()
  as64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)
  params = as64(helpers.random_params(agent, 0, (2, 1)))
  target = as64(helpers.random_params(agent, 1, (2, 1)))  # not the online ones
  batches = [_float_transitions(4, 10), _float_transitions(5, 10)]  # one compilation
  matrix = np.asarray(hessian.dataset_hessian(
      hessian.td_loss_on_batch(agent, target, jax.random.PRNGKey(0)), params, batches,
      columns_per_pass=8))
  theta0, unravel = flatten_util.ravel_pytree(params)
  key = jax.random.PRNGKey(9)

  @jax.jit
  def reference_loss(theta):  # the agent's own loss, target held fixed, over all 20
    return sum(agent.loss(unravel(theta), target, b, key)[0] for b in batches) / 2

  h = 1e-4
  for seed in range(3):
    v = np.random.default_rng(seed).normal(size=theta0.shape)
    v /= np.linalg.norm(v)
    second = (float(reference_loss(theta0 + h * v)) - 2 * float(reference_loss(theta0))
              + float(reference_loss(theta0 - h * v))) / h ** 2
    assert v @ matrix @ v == pytest.approx(second, rel=1e-4, abs=1e-6)
  assert np.abs(matrix).max() > 1e-2


def test_td_loss_adapter_turns_dropout_off():
  noisy, plain = _tiny_dqn(dropout_rate=0.5), _tiny_dqn()
  params = helpers.random_params(plain, 0, (2, 1))
  batch = _float_transitions(6, 16)
  keys = [jax.random.PRNGKey(k) for k in range(2)]

  @jax.jit
  def losses():
    own = [noisy.loss(params, params, batch, k)[0] for k in keys]
    adapted = [hessian.td_loss_on_batch(noisy, params, k)(params, batch) for k in keys]
    return own, adapted, plain.loss(params, params, batch, keys[0])[0]

  own, adapted, expected = jax.tree.map(float, losses())
  assert own[0] != own[1]  # the agent's own loss drops out
  assert adapted == pytest.approx([expected, expected], rel=1e-6)


# ------------------------------------------------------ the command, end to end
GAME, NOISE, SEED, STEPS = "catch", 0.1, 0, 1000  # the shared bsuite_cache dataset
WIDTH = 8


@pytest.fixture(scope="module")
def catch_run(tmp_path_factory, bsuite_cache):
  """(run directory, dataset directory) of a 2-iteration offline DQN run (a 1 x 8 MLP)
  on a 1000-step catch dataset, trained by train.py."""
  cache = bsuite_cache
  replay_dir = bsuite_data.bsuite_dataset(GAME, NOISE, SEED, STEPS, cache)
  run = str(tmp_path_factory.mktemp("runs") / "catch_1x8")
  bindings = [f"bsuite_dataset.game = '{GAME}'", f"bsuite_dataset.noise_level = {NOISE}",
              f"bsuite_dataset.seed = {SEED}", f"bsuite_dataset.num_steps = {STEPS}",
              f"bsuite_dataset.cache_dir = '{cache}'",
              "FixedReplayRunner.num_iterations = 2", "FixedReplayRunner.training_steps = 50",
              "FixedReplayRunner.evaluation_steps = 20", "mlp_hidden_sizes.depth = 1",
              f"mlp_hidden_sizes.width = {WIDTH}"]
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), f"--base_dir={run}",
       f"--gin_files={os.path.join(REPO, 'gin_configs', 'bsuite', 'dqn.gin')}",
       *[f"--gin_bindings={b}" for b in bindings]],
      capture_output=True, text=True, cwd=REPO, timeout=helpers.SUBPROCESS_TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  yield run, replay_dir
  gin.clear_config()  # the command parses the run's config in this process


def _reference_eigenvalues(run, replay_dir, iteration, num_transitions):
  """eigvalsh of the Hessian of the agent's loss on the first transitions of the data,
  recomputed here: the data loaded and gathered, the checkpoint read without a template,
  one jax.hessian of the whole batch."""
  replay = fixed_replay.load_fixed_replay(replay_dir, stack_size=1, update_horizon=1,
                                          gamma=0.99)
  batch = sampler.gather_transitions(
      replay.arrays, jnp.asarray(replay.arrays.valid[:num_transitions]), stack_size=1,
      update_horizon=1, gamma=0.99)
  _, state = checkpointing.read_state_dict(os.path.join(run, "checkpoints"), iteration)
  params, target = state["params"], state["target_params"]
  agent = dqn.DQNAgent(3, network=functools.partial(networks.MLPQNetwork,
                                                    hidden_sizes=(WIDTH,)),
                       gamma=0.99, loss_type="huber")
  theta0, unravel = flatten_util.ravel_pytree(params)
  loss = lambda theta: agent.loss(unravel(theta), target, batch, jax.random.PRNGKey(0))[0]
  matrix = np.asarray(jax.hessian(loss)(theta0), np.float64)
  return np.linalg.eigvalsh((matrix + matrix.T) / 2), theta0.size


def test_the_command_writes_the_spectrum_of_the_runs_td_loss_hessian(catch_run, tmp_path,
                                                                     capsys):
  run, replay_dir = catch_run
  out = str(tmp_path / "hessian")
  args = ["--run_dir", run, "--max_transitions=200", "--chunk_size=100", "--out", out]
  assert hessian_spectrum.main(args) == 0
  saved = np.load(os.path.join(out, "hessian_1.npz"))  # the newest checkpoint
  assert sorted(os.listdir(out))[-2:] == ["hessian_1.npz", "settings.json"]
  assert int(saved["iteration"]) == 1 and int(saved["num_transitions"]) == 200
  size = 50 * WIDTH + WIDTH + WIDTH * 3 + 3
  assert int(saved["num_parameters"]) == size

  reference, reference_size = _reference_eigenvalues(run, replay_dir, 1, 200)
  assert reference_size == size
  scale = np.abs(reference).max()
  assert scale > 1e-3
  np.testing.assert_allclose(np.sort(saved["eigenvalues"]), reference, rtol=0,
                             atol=1e-4 * scale)

  scalars = summary_writer.read_scalars(out)
  assert set(scalars) == set(hessian_spectrum.TAGS.values())
  value = {tag: by_step[1] for tag, by_step in scalars.items()}
  assert all(len(v) == 1 for v in value.values())
  assert value["Hessian/max_eigenvalue"][0] == pytest.approx(reference.max(), rel=1e-4)
  assert value["Hessian/min_eigenvalue"][0] == pytest.approx(reference.min(),
                                                             abs=1e-4 * scale)
  tol = hessian.DEFAULT_TOL  # counts of the reference just inside and outside the band
  fraction = value["Hessian/fraction_near_zero"][0]
  assert np.mean(np.abs(reference) <= 0.9 * tol * scale) <= fraction + 1e-9
  assert fraction <= np.mean(np.abs(reference) <= 1.1 * tol * scale) + 1e-9
  assert 0 < fraction < 1
  negative = value["Hessian/negative_fraction"][0]
  assert np.mean(reference < -1.1 * tol * scale) - 1e-9 <= negative
  assert negative <= np.mean(reference < -0.9 * tol * scale) + 1e-9

  # A rerun finds the iteration done and logs nothing twice.
  assert hessian_spectrum.main(args) == 0
  assert all(len(by_step[1]) == 1 for by_step in summary_writer.read_scalars(out).values())
  capsys.readouterr()
  # Another --max_transitions into the same --out is refused.
  assert hessian_spectrum.main(args[:1] + [run, "--max_transitions=100", "--out", out]) == 2
  assert "other settings" in capsys.readouterr().err


def test_the_command_refuses_missing_iterations_and_large_networks(catch_run, tmp_path,
                                                                   capsys):
  run, _ = catch_run
  out = str(tmp_path / "hessian")
  assert hessian_spectrum.main(["--run_dir", run, "--iterations=0,7", "--out", out]) == 2
  err = capsys.readouterr().err
  assert "iteration(s) 7" in err and "it holds 0, 1" in err
  assert "FixedReplayRunner.keep_checkpoints" in err
  assert hessian_spectrum.main(["--run_dir", run, "--max_parameters=100", "--out", out]) == 2
  err = capsys.readouterr().err
  size = 50 * WIDTH + WIDTH + WIDTH * 3 + 3
  assert f"{size:,} parameters" in err and "--max_parameters" in err
  assert not os.path.exists(out)  # nothing written

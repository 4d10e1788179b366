"""Per-layer srank and activation sparsity (the empirical study's Figure 23 and
Appendix A.14), against the paper's own rank code (its Appendix A.11) in numpy."""
import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import diagnostics
from batch_rl import networks
from batch_rl.agents import dqn
from batch_rl.runners.diagnose import make_diagnose
from tests import helpers


def compute_rank_from_features(feature_matrix, rank_delta=0.01):
  """Gulcehre et al. 2022, Appendix A.11, as printed there."""
  sing_values = np.linalg.svd(feature_matrix, compute_uv=False)
  cumsum = np.cumsum(sing_values)
  nuclear_norm = np.sum(sing_values)
  approximate_rank_threshold = 1.0 - rank_delta
  threshold_crossed = (cumsum >= approximate_rank_threshold * nuclear_norm)
  effective_rank = sing_values.shape[0] - np.sum(threshold_crossed) + 1
  return effective_rank


def test_layer_ranks_and_sparsity_match_numpy():
  rng = np.random.default_rng(0)
  low_rank = rng.random(size=(256, 3)) @ rng.random(size=(3, 40))  # >= 0, rank 3
  activations = {
      "Dense_0": jnp.asarray(np.maximum(rng.normal(size=(256, 64)), 0.0), jnp.float32),
      "Dense_1": jnp.asarray(np.maximum(low_rank, 0.0), jnp.float32),
      "Conv_0": jnp.asarray(np.maximum(rng.normal(size=(256, 4, 4, 5)) - 0.5, 0.0),
                            jnp.float32),
  }
  got = jax.device_get(diagnostics.layer_diagnostics(activations, delta=0.01))
  for name, h in activations.items():
    flat = np.asarray(h, np.float64).reshape(256, -1)
    assert got[f"Rank/srank/{name}"] == compute_rank_from_features(flat)
    assert got[f"Features/sparsity/{name}"] == pytest.approx(np.mean(flat == 0.0))
  assert 1 <= got["Rank/srank/Dense_1"] <= 3  # rank 3, unchanged by the ReLU
  cheap = diagnostics.layer_diagnostics(activations, ranks=False)
  assert set(cheap) == {f"Features/sparsity/{n}" for n in activations}


def test_sparsity_counts_zeros_not_negative_values():
  h = jnp.asarray([[0.0, -0.5, 1e-8, 2.0], [0.0, 0.0, -1.0, 3.0]])
  assert float(diagnostics.activation_sparsity(h)) == pytest.approx(4 / 8)


@pytest.fixture
def layer_ranks_bound():
  gin.clear_config()
  gin.bind_parameter("diagnose_fn.layer_ranks", True)
  yield
  gin.clear_config()


def test_diagnose_logs_every_layers_rank_when_bound(layer_ranks_bound):
  agent = dqn.DQNAgent(3, network=networks.MLPQNetwork)  # hidden (64, 64)
  batch = helpers.random_transitions(seed=2, batch_size=128, state_shape=(10, 5, 1))
  params = helpers.random_params(agent, 0, (10, 5, 1))
  got = jax.device_get(make_diagnose(agent, lambda key, data: data, 0.01)(
      params, params, batch, jax.random.PRNGKey(0), params))
  _, hidden = networks.hidden_activations(agent.network, params, batch.state)
  assert list(hidden) == ["Dense_0", "Dense_1"]
  for name, h in hidden.items():
    flat = np.asarray(h, np.float64)
    assert got[f"Rank/srank/{name}"] == compute_rank_from_features(flat)
    assert got[f"Features/sparsity/{name}"] == pytest.approx(np.mean(flat == 0.0), abs=1e-6)
  # The penultimate layer's entry is the representation's srank.
  assert got["Rank/srank/Dense_1"] == got["Rank/srank"]


def test_gram_image_matches_numpy():
  rng = np.random.default_rng(3)
  phi = np.maximum(rng.normal(size=(16, 8)), 0.0)
  gram = np.abs(phi @ phi.T)
  np.testing.assert_allclose(np.asarray(diagnostics.gram_image(jnp.asarray(phi))),
                             gram / gram.max(), rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(diagnostics.gram_image(jnp.zeros((4, 3)))))

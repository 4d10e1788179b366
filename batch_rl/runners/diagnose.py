"""The per-iteration diagnostics of the value-based runners, as one jitted function."""
from typing import Callable

import gin
import jax
import jax.numpy as jnp

from batch_rl import diagnostics
from batch_rl import losses
from batch_rl import networks
from batch_rl import regularizers


def make_diagnose(agent, sample_fn: Callable, srank_delta: float,
                  vmap: Callable = lambda fn, in_axes: fn):
  """Jitted `(params, target_params, data, key, initial_params=None) -> {tag: value}`
  (`diagnose_fn`) on the batch `sample_fn(key, data)` draws; `vmap` wraps it before jit
  (per seed: parameters, keys and initial parameters stacked, the data shared; one SVD
  per seed, batched)."""
  return jax.jit(vmap(diagnose_fn(agent, sample_fn, srank_delta), (0, 0, None, 0, 0)))


@gin.configurable(allowlist=["layer_ranks"])
def diagnose_fn(agent, sample_fn: Callable, srank_delta: float,
                layer_ranks: bool = False) -> Callable:
  """The pure `(params, target_params, data, key, initial_params=None) -> {tag: value}`
  that `make_diagnose` jits.

  One SVD of Phi on the batch (diagnostics.all_diagnostics: srank and the other ranks,
  Roy's effective rank and Lyle's feature rank among them), DR3's action-aware dot
  products with the backup's a' and the dataset's next action, mean Q(s, a_data) and
  mean max_a Q(s, a), and, where the data has returns-to-go, Q(s, a_data) against the
  Monte-Carlo return. Then the plasticity diagnostics: ReDo's dormant fraction of every
  hidden layer of the agent's network (`networks.hidden_activations`) at each of
  diagnostics.DORMANT_TAUS on the batch's states, the parameters' global norm and,
  given `initial_params` (the online parameters before any update), their distance
  from them. Every hidden layer's activation sparsity, and with `layer_ranks` (gin:
  `diagnose_fn.layer_ranks = True`) its srank (diagnostics.layer_diagnostics: one SVD
  per layer, off by default for its cost on convolutional layers).
  """
  action_dots = regularizers.DR3Config(features="action")
  # jnp.linalg.eig (eigenvalue srank, IUP Appendix A.7) has no TPU kernel.
  compute_srank_eig = jax.default_backend() != "tpu"

  def diagnose(params, target_params, data, key, initial_params=None):
    sample_key, backup_key = jax.random.split(key)
    batch = sample_fn(sample_key, data)
    online = agent.apply(params, batch.state)
    phi_next = agent.apply(params, batch.next_state).representation
    metrics = diagnostics.all_diagnostics(online.representation, phi_next,
                                          delta=srank_delta,
                                          compute_srank_eig=compute_srank_eig)
    # DR3's phi(s, a)^T phi(s', a') with action-aware features (phi (x) e_a): a' from
    # the agent's own backup, and the dataset's next action (the SARSA pairing).
    for tag, next_action in (
        ("Features/dot_next_backup",
         agent.backup_next_action(params, target_params, batch, backup_key)),
        ("Features/dot_next_data", batch.next_action)):
      metrics[tag] = regularizers.dr3_penalty(
          online.representation, phi_next, action=batch.action, next_action=next_action,
          num_actions=agent.num_actions, config=action_dots)
    q_data = losses.select(online.q_values, batch.action)
    metrics["Value/QData"] = jnp.mean(q_data)
    metrics["Value/QMax"] = jnp.mean(jnp.max(online.q_values, axis=-1))
    if batch.return_to_go is not None:
      # Over/under-estimation against the discounted return the data actually got.
      metrics["Value/MCReturn"] = jnp.mean(batch.return_to_go)
      metrics["Value/QMinusMCReturn"] = jnp.mean(q_data - batch.return_to_go)
    activations = _hidden_activations(agent, params, batch.state)
    metrics.update(diagnostics.layer_dormant_fractions(activations))
    metrics.update(diagnostics.layer_diagnostics(activations, srank_delta, layer_ranks))
    metrics.update(diagnostics.parameter_diagnostics(params, initial_params))
    return metrics

  return diagnose


def _hidden_activations(agent, params, states) -> dict[str, jax.Array]:
  """{layer: post-activation output} of the agent's network on `states`, in the
  deterministic mode `agent.apply(params, states)` runs it in; {} for an agent
  without a Flax `network`. The forward pass is the one `agent.apply` makes on the
  same inputs, which XLA computes once."""
  network = getattr(agent, "network", None)
  if network is None or not hasattr(network, "apply"):
    return {}
  return networks.hidden_activations(network, params, states)[1]

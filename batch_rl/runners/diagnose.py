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

  if getattr(agent, "continuous_actions", False):
    return _continuous_diagnose(agent, sample_fn, srank_delta, layer_ranks,
                                compute_srank_eig)

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
    metrics["Value/QMax"] = jnp.mean(jnp.max(online.q_values, axis=-1))
    _value_and_plasticity(metrics, losses.select(online.q_values, batch.action), batch,
                          _hidden_activations(agent, params, batch.state), params,
                          initial_params, srank_delta, layer_ranks)
    return metrics

  return diagnose


def _continuous_diagnose(agent, sample_fn: Callable, srank_delta: float,
                         layer_ranks: bool, compute_srank_eig: bool) -> Callable:
  """The diagnostics of an actor-critic agent (agents/base.py's ContinuousAgent).

  Phi is the critic's phi(s, a) at the dataset's (s, a); phi_next is phi(s', a') with
  a' ~ pi(.|s') (the soft backup's action, DR3's actor-critic pairing), so
  `Features/dot_next` and `Features/dot_next_backup` are the same dot product here;
  `Features/dot_next_data` pairs s' with the dataset's next action. `Value/QMax` is
  Q(s, a) at the policy's deterministic action, the actor's stand-in for max_a.
  """

  def diagnose(params, target_params, data, key, initial_params=None):
    sample_key, backup_key = jax.random.split(key)
    batch = sample_fn(sample_key, data)
    online = agent.apply(params, batch.state, actions=batch.action)
    next_action = agent.backup_next_action(params, target_params, batch, backup_key)
    phi_next = agent.apply(params, batch.next_state, actions=next_action).representation
    metrics = diagnostics.all_diagnostics(online.representation, phi_next,
                                          delta=srank_delta,
                                          compute_srank_eig=compute_srank_eig)
    plain_dots = regularizers.DR3Config(features="state")
    metrics["Features/dot_next_backup"] = regularizers.dr3_penalty(
        online.representation, phi_next, config=plain_dots)
    phi_next_data = agent.apply(params, batch.next_state,
                                actions=batch.next_action).representation
    metrics["Features/dot_next_data"] = regularizers.dr3_penalty(
        online.representation, phi_next_data, config=plain_dots)
    metrics["Value/QMax"] = jnp.mean(agent.apply(params, batch.state).q_values)
    _value_and_plasticity(metrics, online.q_values[:, 0], batch,
                          agent.hidden_activations(params, batch.state, batch.action),
                          params, initial_params, srank_delta, layer_ranks)
    return metrics

  return diagnose


def _value_and_plasticity(metrics: dict, q_data: jax.Array, batch, activations: dict,
                          params, initial_params, srank_delta: float,
                          layer_ranks: bool) -> None:
  """Adds Q(s, a_data) (against the data's Monte-Carlo return where it has one) and
  the per-layer and parameter diagnostics to `metrics`."""
  metrics["Value/QData"] = jnp.mean(q_data)
  if batch.return_to_go is not None:
    # Over/under-estimation against the discounted return the data actually got.
    metrics["Value/MCReturn"] = jnp.mean(batch.return_to_go)
    metrics["Value/QMinusMCReturn"] = jnp.mean(q_data - batch.return_to_go)
  metrics.update(diagnostics.layer_dormant_fractions(activations))
  metrics.update(diagnostics.layer_diagnostics(activations, srank_delta, layer_ranks))
  metrics.update(diagnostics.parameter_diagnostics(params, initial_params))


def _hidden_activations(agent, params, states) -> dict[str, jax.Array]:
  """{layer: post-activation output} of the agent's network on `states`, in the
  deterministic mode `agent.apply(params, states)` runs it in; {} for an agent
  without a Flax `network`. The forward pass is the one `agent.apply` makes on the
  same inputs, which XLA computes once."""
  network = getattr(agent, "network", None)
  if network is None or not hasattr(network, "apply"):
    return {}
  return networks.hidden_activations(network, params, states)[1]

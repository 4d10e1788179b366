"""The per-iteration diagnostics of the value-based runners, as one jitted function."""
from typing import Callable

import jax
import jax.numpy as jnp

from batch_rl import diagnostics
from batch_rl import losses
from batch_rl import regularizers


def make_diagnose(agent, sample_fn: Callable, srank_delta: float,
                  vmap: Callable = lambda fn, in_axes: fn):
  """Jitted `(params, target_params, data, key) -> {tag: value}` on the batch
  `sample_fn(key, data)` draws; `vmap` wraps it before jit (per seed: parameters and
  keys stacked, the data shared; one SVD per seed, batched).

  One SVD of Phi on the batch (diagnostics.all_diagnostics), DR3's action-aware dot
  products with the backup's a' and the dataset's next action, mean Q(s, a_data) and
  mean max_a Q(s, a), and, where the data has returns-to-go, Q(s, a_data) against the
  Monte-Carlo return.
  """
  action_dots = regularizers.DR3Config(features="action")
  # jnp.linalg.eig (eigenvalue srank, IUP Appendix A.7) has no TPU kernel.
  compute_srank_eig = jax.default_backend() != "tpu"

  def diagnose(params, target_params, data, key):
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
    return metrics

  return jax.jit(vmap(diagnose, (0, 0, None, 0)))

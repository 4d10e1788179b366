"""CQL-SAC: SAC with the continuous CQL(H) penalty on its critics (Kumar et al. 2020,
"Conservative Q-Learning for Offline Reinforcement Learning", Section 3.2 and its
released code's `min_q_version = 3`).

Each critic Q_i gets min_q_weight * (log sum_a exp Q_i(s, a) - Q_i(s, a_data)), the
log-sum-exp estimated from `num_sampled_actions` uniform actions and as many from
pi(.|s) and from pi(.|s') (all evaluated at s, importance-weighted by their
densities: sac_losses.cql_logsumexp). The sampled actions carry no gradient, so the
penalty reaches the critics only. Two variants:

* fixed weight (`target_action_gap` None): the penalty as it is;
* Lagrange (`target_action_gap` tau set): the critics minimise
  alpha' (min_q_weight * gap_i - tau) with alpha' = exp(log alpha') learned to keep
  the gap near tau (sac_losses.cql_lagrange_losses; the multiplier's loss is the
  mean over the two critics, as the released code's).
"""
from typing import Optional

import gin
import jax
import jax.numpy as jnp
import optax

from batch_rl import validation
from batch_rl.agents import sac
from batch_rl.agents import sac_losses


@gin.configurable(denylist=["action_spec"])
class CQLSACAgent(sac.SACAgent):
  """SAC plus CQL(H). Defaults are the CQL code's MuJoCo settings: policy Adam 1e-4,
  critics 3e-4, min_q_weight 5, 10 sampled actions per kind, temperature 1.

  Args:
    action_spec, and every SACAgent argument.
    min_q_weight: alpha of CQL(H) (the paper's 5.0 for Gym MuJoCo; 10.0 in its
      Lagrange runs with tau 10 or 5).
    num_sampled_actions: N actions of each kind in the log-sum-exp estimate.
    cql_temperature: temperature of the log-sum-exp.
    target_action_gap: tau of the Lagrange variant, or None for the fixed weight.
  """

  def __init__(self, action_spec, actor_learning_rate: float = 1e-4,
               min_q_weight: float = 5.0, num_sampled_actions: int = 10,
               cql_temperature: float = 1.0, target_action_gap: Optional[float] = None,
               **kwargs):
    owner = type(self).__name__
    validation.check_positive(f"{owner}.min_q_weight", min_q_weight)
    validation.check_int_at_least(f"{owner}.num_sampled_actions", num_sampled_actions, 1)
    validation.check_positive(f"{owner}.cql_temperature", cql_temperature)
    if target_action_gap is not None:
      validation.check_positive(f"{owner}.target_action_gap", target_action_gap)
    self.min_q_weight = min_q_weight
    self.num_sampled_actions = num_sampled_actions
    self.cql_temperature = cql_temperature
    self.target_action_gap = target_action_gap
    super().__init__(action_spec, actor_learning_rate=actor_learning_rate, **kwargs)

  def _extra_optimizers(self, critic_learning_rate: float) -> dict:
    if self.target_action_gap is None:
      return {}
    return {"log_alpha_prime": optax.adam(critic_learning_rate)}

  def _extra_params(self) -> dict:
    if self.target_action_gap is None:
      return {}
    return {"log_alpha_prime": jnp.zeros((), jnp.float32)}

  def _extra_critic_loss(self, params, batch, q1, q2, key, metrics):
    n = self.num_sampled_actions
    size = batch.state.shape[0]
    uniform_key, current_key, next_key = jax.random.split(key, 3)
    repeat = lambda x: jnp.repeat(x, n, axis=0)  # state b's rows are b*n ... b*n+n-1
    states, next_states = repeat(batch.state), repeat(batch.next_state)
    uniform = jax.random.uniform(uniform_key, (size * n, self.action_size),
                                 minval=-1.0, maxval=1.0)
    current, log_prob_current = self.policy_sample(params["actor"], states, current_key)
    following, log_prob_next = self.policy_sample(params["actor"], next_states, next_key)
    current, following = jax.lax.stop_gradient(current), jax.lax.stop_gradient(following)
    # One pass of the critics over the 3N actions per state, all at s.
    outs = self.critics(params["critic"], jnp.concatenate([states] * 3),
                        jnp.concatenate([uniform, current, following]))
    reshape = lambda q: q[:, 0].reshape(3, size, n)
    gaps = []
    for out, q_data in zip(outs, (q1, q2)):
      q_random, q_current, q_next = reshape(out.q_values)
      logsumexp = sac_losses.cql_logsumexp(
          q_random, q_current, q_next, log_prob_current.reshape(size, n),
          log_prob_next.reshape(size, n), self.action_size, self.cql_temperature)
      gaps.append(self.min_q_weight * sac_losses.cql_penalty(logsumexp,
                                                             q_data.q_values[:, 0]))
    metrics["Train/CQLLoss"] = 0.5 * (gaps[0] + gaps[1]) / self.min_q_weight
    if self.target_action_gap is None:
      return gaps[0] + gaps[1]
    terms = [sac_losses.cql_lagrange_losses(gap, params["log_alpha_prime"],
                                            self.target_action_gap) for gap in gaps]
    metrics["Train/CQLAlphaPrime"] = jnp.clip(jnp.exp(params["log_alpha_prime"]), 0.0, 1e6)
    return terms[0][0] + terms[1][0] + 0.5 * (terms[0][1] + terms[1][1])

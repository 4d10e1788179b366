"""SACAgent and CQLSACAgent on the shared core: each loss part's gradient reaches only
its own parameters and equals the gradient of the part written out here, the Polyak
target, the policy's actions in the box, the CQL terms, DR3 with a' ~ pi, and the
contract checks (agents of the wrong kind, discrete-only regularisers)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl.agents import base
from batch_rl.agents import common
from batch_rl.agents import cql_sac
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms
from batch_rl.agents import sac
from batch_rl.agents import sac_losses
from batch_rl.environments import specs
from batch_rl.replay import sampler

OBS, ACT, B = 5, 2, 16
# A box that is not [-1, 1], so that the affine maps are exercised.
SPEC = specs.BoxActionSpec((ACT,), (-2.0, 0.0), (2.0, 1.0))


def small(cls=sac.SACAgent, **kwargs):
  from batch_rl import actor_critic_networks as acn
  return cls(action_spec=SPEC, batch_size=B,
             critic_network=lambda: acn.TwinCriticNetwork(hidden_sizes=(16, 8)),
             policy_network=lambda action_size: acn.GaussianPolicyNetwork(
                 action_size=action_size, hidden_sizes=(16,)), **kwargs)


def batch(seed=0):
  rng = np.random.default_rng(seed)
  low, high = SPEC.low_array, SPEC.high_array
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return sampler.Transition(
      state=f32(rng.normal(size=(B, OBS, 1))),
      action=f32(rng.uniform(low, high, (B, ACT))),
      reward=f32(rng.normal(size=B)), next_state=f32(rng.normal(size=(B, OBS, 1))),
      next_action=f32(rng.uniform(low, high, (B, ACT))),
      terminal=jnp.asarray(rng.random(B) < 0.2), discount=f32(0.99 * (rng.random(B) > 0.2)),
      index=jnp.arange(B))


def init(agent, seed=0):
  return agent.init(jax.random.PRNGKey(seed), common.state_spec((OBS, 1), jnp.float32))


def unit(actions):
  low, high = SPEC.low_array, SPEC.high_array
  return 2.0 * (np.asarray(actions) - low) / (high - low) - 1.0


def test_each_part_of_the_loss_moves_only_its_own_parameters():
  agent = small()
  state = init(agent)
  params, target, data = state.params, state.target_params, batch()
  key = jax.random.PRNGKey(3)
  grads = jax.grad(lambda p: agent.loss(p, target, data, key)[0])(params)
  next_key, actor_key, _, _ = jax.random.split(key, 4)

  def critic_part(critic_params):  # the soft TD loss alone, written out again
    mean, log_std = agent.policy.apply(params["actor"], data.next_state)
    next_unit, next_log_prob = sac_losses.sample_tanh_gaussian(next_key, mean, log_std)
    tq1, tq2 = agent.critic.apply(target["critic"], data.next_state, next_unit)
    alpha = jnp.exp(params["log_alpha"])
    y = data.reward + data.discount * (jnp.minimum(tq1.q_values[:, 0], tq2.q_values[:, 0])
                                       - alpha * next_log_prob)
    q1, q2 = agent.critic.apply(critic_params, data.state, jnp.asarray(unit(data.action)))
    return (jnp.mean((q1.q_values[:, 0] - y) ** 2)
            + jnp.mean((q2.q_values[:, 0] - y) ** 2))

  def actor_part(actor_params):
    mean, log_std = agent.policy.apply(actor_params, data.state)
    noise = jax.random.normal(actor_key, mean.shape)
    pre = mean + jnp.exp(log_std) * noise
    log_prob = sac_losses.tanh_gaussian_log_prob(mean, log_std, pre)
    q1, q2 = agent.critic.apply(params["critic"], data.state, jnp.tanh(pre))
    alpha = jnp.exp(params["log_alpha"])
    return jnp.mean(alpha * log_prob - jnp.minimum(q1.q_values[:, 0], q2.q_values[:, 0]))

  expected_critic = jax.grad(critic_part)(params["critic"])
  expected_actor = jax.grad(actor_part)(params["actor"])
  for got, want in zip(jax.tree.leaves(grads["critic"]), jax.tree.leaves(expected_critic)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  for got, want in zip(jax.tree.leaves(grads["actor"]), jax.tree.leaves(expected_actor)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
  # d/d log_alpha of -alpha * mean(log pi + target entropy), log pi held fixed.
  mean, log_std = agent.policy.apply(params["actor"], data.state)
  _, log_prob = sac_losses.sample_tanh_gaussian(actor_key, mean, log_std)
  alpha = float(np.exp(params["log_alpha"]))
  want = -alpha * float(np.mean(np.asarray(log_prob) - ACT))  # target entropy -|A|
  np.testing.assert_allclose(grads["log_alpha"], want, rtol=1e-4)


def test_target_is_a_polyak_average_after_every_update():
  agent = small(target_update_tau=0.1)
  state = init(agent)
  update = jax.jit(learner.make_update(agent.loss, agent.optimizer, 1,
                                       agent.target_update_tau))
  new, _ = update(state, batch(), jax.random.PRNGKey(0), jax.random.PRNGKey(1))
  for online, old_target, new_target in zip(jax.tree.leaves(new.params),
                                            jax.tree.leaves(state.target_params),
                                            jax.tree.leaves(new.target_params)):
    np.testing.assert_allclose(new_target, 0.9 * np.asarray(old_target)
                               + 0.1 * np.asarray(online), rtol=1e-5, atol=1e-7)


def test_actions_lie_in_the_box_and_evaluation_is_the_mean():
  agent = small()
  state = init(agent)
  data = batch()
  keys = jax.random.split(jax.random.PRNGKey(0), B)
  for epsilon in (0.0, 1.0):
    actions = np.asarray(agent.act(state.params, data.state, keys, epsilon))
    assert actions.shape == (B, ACT)
    assert not specs.out_of_box(actions, SPEC)[0].any()
  mean, _ = agent.policy.apply(state.params["actor"], data.state)
  want = SPEC.low_array + 0.5 * (np.tanh(np.asarray(mean)) + 1) * (
      SPEC.high_array - SPEC.low_array)
  np.testing.assert_allclose(agent.evaluation_act(state.params, data.state, keys, 0.0),
                             want, rtol=1e-5, atol=1e-6)
  # Row b's action depends on key b only (batched evaluation).
  alone = agent.act(state.params, data.state[3:4], keys[3:4], 0.0)
  np.testing.assert_allclose(alone[0], agent.act(state.params, data.state, keys, 0.0)[3],
                             rtol=1e-5, atol=1e-6)
  # The training policy samples: two keys give two actions.
  other = agent.act(state.params, data.state, jax.random.split(jax.random.PRNGKey(1), B), 0.)
  assert not np.allclose(other, agent.act(state.params, data.state, keys, 0.0))


def test_cql_penalty_and_its_lagrange_multiplier():
  fixed = small(cql_sac.CQLSACAgent, min_q_weight=2.0, num_sampled_actions=4)
  state = init(fixed)
  _, metrics = fixed.loss(state.params, state.target_params, batch(), jax.random.PRNGKey(0))
  sac_loss, sac_metrics = small().loss(state.params, state.target_params, batch(),
                                       jax.random.PRNGKey(0))
  # On the same parameters and key, CQL adds exactly min_q_weight times the two
  # critics' gaps to SAC's loss, and leaves the TD part as it is.
  np.testing.assert_allclose(
      float(metrics["Train/Loss"]) - float(sac_loss),
      2.0 * 2 * float(metrics["Train/CQLLoss"]), rtol=1e-4)
  assert sac_metrics["Train/TDLoss"] == pytest.approx(float(metrics["Train/TDLoss"]))

  lagrange = small(cql_sac.CQLSACAgent, min_q_weight=2.0, num_sampled_actions=4,
                   target_action_gap=1e6)  # the gap is far below: alpha' must shrink
  state = init(lagrange)
  update = jax.jit(learner.make_update(lagrange.loss, lagrange.optimizer, 1, 0.005))
  for i in range(3):
    state, metrics = update(state, batch(i), jax.random.PRNGKey(i), jax.random.PRNGKey(i))
  assert float(state.params["log_alpha_prime"]) < 0.0


def test_dr3_pairs_phi_s_a_with_phi_next_at_a_policy_action():
  regularizer = regularizer_terms.DR3Regularizer(coefficient=0.5)
  agent = small(regularizers=[regularizer])
  state = init(agent)
  data = batch()
  key = jax.random.PRNGKey(5)
  _, metrics = agent.loss(state.params, state.target_params, data, key)
  next_key = jax.random.split(key, 4)[0]
  mean, log_std = agent.policy.apply(state.params["actor"], data.next_state)
  next_unit, _ = sac_losses.sample_tanh_gaussian(next_key, mean, log_std)
  phi = agent.critic.apply(state.params["critic"], data.state,
                           jnp.asarray(unit(data.action)))[0].representation
  phi_next = agent.critic.apply(state.params["critic"], data.next_state,
                                next_unit)[0].representation
  want = np.mean(np.sum(np.asarray(phi) * np.asarray(phi_next), axis=1))
  np.testing.assert_allclose(metrics["Train/DR3"], want, rtol=1e-4)


def test_contract_and_refused_terms():
  agent = small()
  assert isinstance(agent, base.ContinuousAgent)
  base.check_agent(agent, "OnlineRunner.agent_fn")
  with pytest.raises(ValueError, match=r"CURLRegularizer.*LpRegularizer, DR3Regularizer"):
    small(regularizers=[regularizer_terms.CURLRegularizer()])
  with pytest.raises(ValueError, match="BoxActionSpec"):
    sac.SACAgent(action_spec=specs.DiscreteActionSpec(3))


def test_runners_refuse_an_agent_of_the_wrong_kind():
  from batch_rl.agents import dqn
  from batch_rl.environments import factory
  from batch_rl.runners import common as runner_common
  hopper = factory.create_environment("mujoco:Hopper-v5", seed=0)
  with pytest.raises(runner_common.ConfigError,
                     match=r"OnlineRunner.agent_fn.*DQNAgent.*discrete.*mujoco:Hopper-v5"):
    runner_common.build_agent(dqn.DQNAgent, "OnlineRunner.agent_fn", hopper,
                              "mujoco:Hopper-v5")
  cartpole = factory.create_environment("gym:CartPole-v1", seed=0)
  with pytest.raises(runner_common.ConfigError,
                     match=r"SACAgent.*continuous.*gym:CartPole-v1.*2 discrete"):
    runner_common.build_agent(sac.SACAgent, "OnlineRunner.agent_fn", cartpole,
                              "gym:CartPole-v1")
  built = runner_common.build_agent(sac.SACAgent, "OnlineRunner.agent_fn", hopper,
                                    "mujoco:Hopper-v5")
  assert built.action_shape == (3,)

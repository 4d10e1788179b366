"""FQE: the target bootstraps with a checkpointed policy's action at s'."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batch_rl import checkpointing
from batch_rl import networks
from batch_rl.agents import bc
from batch_rl.agents import dqn
from batch_rl.agents import fixed_policy
from tests import helpers

STATE_SHAPE = (10, 10, 4, 1)
A = 3


def np_huber(error):
  return np.where(np.abs(error) <= 1.0, 0.5 * error**2, np.abs(error) - 0.5)


@pytest.fixture(scope="module")
def policy_run(tmp_path_factory):
  """A BC run's directory with two checkpoints (iterations 4 and 7) of random params."""
  run_dir = tmp_path_factory.mktemp("bc_run")
  agent = bc.BCAgent(A, network=networks.MinAtarDQNNetwork)
  params = {}
  for iteration, seed in ((4, 10), (7, 11)):
    state = agent.init(jax.random.PRNGKey(seed), STATE_SHAPE)
    state = state.replace(params=helpers.random_params(agent, seed, STATE_SHAPE))
    checkpointing.save(str(run_dir / "checkpoints"), iteration, state)
    params[iteration] = state.params
  return str(run_dir), agent, params


def fqe_agent(run_dir, **policy_kwargs):
  policy = functools.partial(fixed_policy.CheckpointPolicy, checkpoint_dir=run_dir,
                             **policy_kwargs)
  return dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="fqe",
                      evaluation_policy=policy)


@pytest.mark.parametrize("iteration", [None, 4])
def test_fqe_loss_matches_numpy_with_the_policys_greedy_action(policy_run, iteration):
  run_dir, policy_agent, policy_params = policy_run
  agent = fqe_agent(run_dir, iteration=iteration)
  assert agent.evaluation_policy.iteration == (7 if iteration is None else 4)
  online = helpers.random_params(agent, 0, STATE_SHAPE)
  target = helpers.random_params(agent, 1, STATE_SHAPE)
  batch = helpers.random_transitions(batch_size=16)
  loss, metrics = agent.loss(online, target, batch, jax.random.PRNGKey(0))

  logits = np.asarray(policy_agent.apply(policy_params[iteration or 7], batch.next_state).q_values)
  next_action = logits.argmax(axis=1)
  q = np.asarray(agent.apply(online, batch.state).q_values, np.float64)
  next_q = np.asarray(agent.apply(target, batch.next_state).q_values, np.float64)
  rows = np.arange(16)
  target_value = (np.asarray(batch.reward) + np.asarray(batch.discount) *
                  next_q[rows, next_action])
  error = target_value - q[rows, np.asarray(batch.action)]
  np.testing.assert_allclose(loss, np_huber(error).mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["Train/TDError"], np.abs(error).mean(), rtol=1e-5)
  # The policy's actions are not the dataset's nor the argmax of Q_target here, so
  # FQE is a different backup from SARSA and Q-learning on this batch.
  assert not np.array_equal(next_action, np.asarray(batch.next_action))
  assert not np.array_equal(next_action, next_q.argmax(axis=1))


def test_sample_mode_draws_from_the_policys_softmax(policy_run):
  run_dir, policy_agent, policy_params = policy_run
  states = helpers.random_transitions(batch_size=4).state
  logits = np.asarray(policy_agent.apply(policy_params[7], states).q_values, np.float64)
  temperature = 2.0
  policy = fixed_policy.CheckpointPolicy(A, networks.MinAtarDQNNetwork, checkpoint_dir=run_dir,
                                         mode="sample", temperature=temperature)
  draws = np.asarray(jax.jit(jax.vmap(policy, in_axes=(None, 0)))(
      states, jax.random.split(jax.random.PRNGKey(0), 20_000)))  # [N, 4]
  probs = np.exp(logits / temperature)
  probs /= probs.sum(axis=1, keepdims=True)
  for row in range(4):
    freq = np.bincount(draws[:, row], minlength=A) / len(draws)
    # Binomial standard error <= 0.0036 at N = 20,000; 5 of them.
    np.testing.assert_allclose(freq, probs[row], atol=0.018)
  greedy = fixed_policy.CheckpointPolicy(A, networks.MinAtarDQNNetwork, checkpoint_dir=run_dir)
  np.testing.assert_array_equal(greedy(states, None), logits.argmax(axis=1))


def test_fqe_trains_a_step_through_the_learner(policy_run):
  from batch_rl.agents import learner  # pylint: disable=g-import-not-at-top
  agent = fqe_agent(policy_run[0])
  state = agent.init(jax.random.PRNGKey(0), STATE_SHAPE)
  batch = helpers.random_transitions()
  step = jax.jit(learner.make_train_step(agent.loss, agent.optimizer, lambda k, d: batch, 5))
  new_state, _, metrics = step(state, None)
  assert np.isfinite(float(metrics["Train/Loss"])) and int(new_state.step) == 1


def test_fqe_bad_input_is_named(policy_run, tmp_path):
  run_dir = policy_run[0]
  with pytest.raises(ValueError, match="evaluation_policy"):
    dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="fqe")
  with pytest.raises(ValueError, match="evaluation_policy"):
    dqn.DQNAgent(A, network=networks.MinAtarDQNNetwork, backup="sarsa",
                 evaluation_policy=functools.partial(fixed_policy.CheckpointPolicy,
                                                     checkpoint_dir=run_dir))
  with pytest.raises(ValueError, match="checkpoint_dir` is required"):
    fqe_agent(None)
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    fqe_agent(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"iteration 5 .* \[4, 7\]"):
    fqe_agent(run_dir, iteration=5)
  with pytest.raises(ValueError, match="CheckpointPolicy.mode"):
    fqe_agent(run_dir, mode="boltzmann")
  # A checkpoint of another network (Atari-sized head on MinAtar states) is caught at init.
  agent = fqe_agent(run_dir, network=networks.MinAtarDQNNetwork, outputs_per_action=5)
  with pytest.raises(ValueError, match="does not hold parameters of MinAtarDQNNetwork"):
    agent.init(jax.random.PRNGKey(0), STATE_SHAPE)

"""Evaluation protocol (Dopamine's _run_one_phase) on scripted environments."""
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import networks
from batch_rl.agents import common
from batch_rl.agents import dqn
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from tests import helpers


class ScriptedEnv:
  """Episodes of given lengths; reward 1 per step; frame = [episode index, step]."""

  observation_shape = (2,)
  stack_size = 3
  num_actions = 2

  def __init__(self, lengths, truncate_at=None):
    self.lengths = list(lengths)
    self.truncate_at = truncate_at
    self.episode = -1
    self.t = 0
    self.seen_states = []
    self.steps_taken = 0

  def reset(self):
    self.episode += 1
    self.t = 0
    return np.array([self.episode + 1, 0], np.uint8)

  def step(self, action):
    del action
    self.t += 1
    self.steps_taken += 1
    length = self.lengths[self.episode % len(self.lengths)]
    terminal = self.t >= length
    truncated = self.truncate_at is not None and self.t >= self.truncate_at and not terminal
    return np.array([self.episode + 1, self.t], np.uint8), 1.0, terminal, truncated


def recording_policy(envs):
  def policy(states, key):
    del key
    for env, state in zip(envs, states):
      env.seen_states.append(state.copy())
    return np.zeros(len(states), np.int32)
  return policy


def test_single_env_is_dopamines_loop():
  # Budget 12: episodes of 5, 5 (10 steps) then a third of 5 played to its end.
  env = ScriptedEnv([5])
  result = evaluation.evaluate(recording_policy([env]), [env], 12, jax.random.PRNGKey(0))
  assert result.episode_lengths == (5, 5, 5)
  assert result.num_steps == 15
  assert result.average_return == 5.0
  assert result.metrics() == {"Eval/AverageReturn": 5.0, "Eval/NumEpisodes": 3.0}


def test_budget_reached_exactly_at_episode_end_stops():
  env = ScriptedEnv([4, 6])
  result = evaluation.evaluate(recording_policy([env]), [env], 10, jax.random.PRNGKey(0))
  assert result.episode_lengths == (4, 6) and result.num_steps == 10


def test_truncated_episodes_count_as_complete():
  env = ScriptedEnv([100], truncate_at=7)
  result = evaluation.evaluate(recording_policy([env]), [env], 10, jax.random.PRNGKey(0))
  assert result.episode_lengths == (7, 7)


def test_states_are_zero_padded_frame_stacks_reset_each_episode():
  env = ScriptedEnv([3])
  evaluation.evaluate(recording_policy([env]), [env], 6, jax.random.PRNGKey(0))
  states = np.array(env.seen_states)  # [steps, 2, stack 3]
  # Episode 1: [0, 0, f0], [0, f0, f1], [f0, f1, f2]; then a fresh zero-padded stack.
  np.testing.assert_array_equal(states[0], [[0, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(states[1], [[0, 1, 1], [0, 0, 1]])
  np.testing.assert_array_equal(states[2], [[1, 1, 1], [0, 1, 2]])
  np.testing.assert_array_equal(states[3], [[0, 0, 2], [0, 0, 0]])


def test_lockstep_envs_finish_open_episodes_and_start_none_after_budget():
  envs = [ScriptedEnv([3]), ScriptedEnv([5])]
  result = evaluation.evaluate(recording_policy(envs), envs, 8, jax.random.PRNGKey(0))
  # Steps 1-3: env0 ends ep (6 steps total), restarts; steps 4-5: env1 ends at 10 >= 8,
  # stops; env0's second episode ends at its step 6 (total 11) and stops.
  assert sorted(result.episode_lengths) == [3, 3, 5]
  assert result.num_steps == 11
  assert [env.steps_taken for env in envs] == [6, 5]


def test_policy_keys_differ_between_steps():
  keys = []
  env = ScriptedEnv([4])

  def policy(states, key):
    keys.append(np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key))
    return np.zeros(len(states), np.int32)

  evaluation.evaluate(policy, [env], 4, jax.random.PRNGKey(0))
  assert len({k.tobytes() for k in keys}) == 4


def test_epsilon_greedy_row_keys_make_each_row_independent_of_the_batch():
  q_values = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)), jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(1), 5)
  batched = common.epsilon_greedy(q_values, keys, 0.5)
  alone = [int(common.epsilon_greedy(q_values[b:b + 1], keys[b:b + 1], 0.5)[0])
           for b in range(5)]
  assert batched.tolist() == alone
  # epsilon 0 is greedy; epsilon 1 draws uniformly, from the row's own key.
  assert common.epsilon_greedy(q_values, keys, 0.0).tolist() == jnp.argmax(
      q_values, axis=1).tolist()
  many = jax.random.split(jax.random.PRNGKey(2), 4000)
  random_actions = common.epsilon_greedy(jnp.zeros((4000, 4)), many, 1.0)
  assert set(np.asarray(random_actions).tolist()) == {0, 1, 2, 3}


def test_batched_minatar_evaluation_plays_each_envs_episodes_as_alone():
  """Env i in a lockstep batch plays the episodes it plays alone (same seed, key, id)."""
  seeds = [11, 12, 13]
  make = lambda i: factory.create_environment("minatar:breakout", seed=seeds[i])
  probe = make(0)
  state_shape = tuple(probe.observation_shape) + (probe.stack_size,)
  agent = dqn.DQNAgent(num_actions=probe.num_actions, network=networks.MinAtarDQNNetwork)
  params = helpers.random_params(agent, 0, state_shape)
  act = jax.jit(agent.act)
  policy = lambda states, keys: act(params, states, keys, 0.3)  # randomness matters
  key = jax.random.PRNGKey(5)

  batched = evaluation.evaluate(policy, [make(i) for i in range(3)], 400, key)
  assert batched.episode_envs and set(batched.episode_envs) == {0, 1, 2}
  for i in range(3):
    returns, lengths = batched.of_env(i)
    alone = evaluation.evaluate(policy, [make(i)], 10**6, key, max_episodes=len(returns),
                                env_ids=[i])
    assert (alone.episode_returns, alone.episode_lengths) == (returns, lengths), i
    assert sum(lengths) > 20 and len(returns) >= 2
  # Env 0 is the single-environment path of the runners (num_eval_envs = 1).
  returns, lengths = batched.of_env(0)
  single = evaluation.evaluate(policy, [make(0)], 10**6, key, max_episodes=len(returns))
  assert single.episode_lengths == lengths
  # The policy's randomness matters: env 0 with env 1's stream plays other episodes.
  other = evaluation.evaluate(policy, [make(0)], 10**6, key, max_episodes=len(returns),
                              env_ids=[1])
  assert other.episode_lengths != lengths


def test_groups_play_as_each_group_alone():
  """evaluate_groups: each group its own budget, key and result, stepped together."""
  seeds = [21, 22, 23, 24]
  make = lambda i: factory.create_environment("minatar:breakout", seed=seeds[i])
  probe = make(0)
  agent = dqn.DQNAgent(num_actions=probe.num_actions, network=networks.MinAtarDQNNetwork)
  params = helpers.random_params(agent, 0, tuple(probe.observation_shape) + (1,))
  act = jax.jit(agent.act)
  policy = lambda states, keys: act(params, states, keys, 0.3)
  keys = [jax.random.PRNGKey(7), jax.random.PRNGKey(8)]
  together = evaluation.evaluate_groups(policy, [make(i) for i in range(4)], 150, keys)
  for group, key in enumerate(keys):
    alone = evaluation.evaluate(policy, [make(2 * group), make(2 * group + 1)], 150, key)
    assert together[group] == alone, group
  assert together[0].episode_returns != together[1].episode_returns


def test_vector_atari_plays_the_python_envs_episodes():
  """The C++ vector env seeded with atari.ale_seed(s) plays AtariEnvironment(seed=s)'s
  episodes: the same frames, so the same returns under the same policy keys."""
  from batch_rl.environments import atari  # pylint: disable=g-import-not-at-top
  from batch_rl.environments import atari_vector  # pylint: disable=g-import-not-at-top
  seeds = [s for s in range(10) if atari.ale_seed(s) >= 0][:2]
  python_envs = [atari.AtariEnvironment("Pong", seed=s, max_episode_steps=60)
                 for s in seeds]
  vector = atari_vector.AtariVectorEnvironments(
      "Pong", [atari.ale_seed(s) for s in seeds], max_episode_steps=60)
  agent = dqn.DQNAgent(num_actions=vector.num_actions)
  params = helpers.random_params(agent, 0, (84, 84, 4))
  act = jax.jit(agent.act)
  policy = lambda states, keys: act(params, states, keys, 0.5)
  key = jax.random.PRNGKey(3)
  expected = evaluation.evaluate(policy, python_envs, 200, key)
  found = evaluation.evaluate(policy, vector, 200, key)
  vector.close()
  assert found == expected
  assert found.num_episodes >= 4 and found.episode_lengths[0] == 60


def test_atari_evaluation_uses_the_vector_env_unless_bound_off():
  from batch_rl.environments import atari_vector  # pylint: disable=g-import-not-at-top
  batch = evaluation.create_environments("atari:Pong", [1, 2])
  assert isinstance(batch, atari_vector.AtariVectorEnvironments) and batch.num_envs == 2
  batch.close()
  python = evaluation.create_environments("atari:Pong", [1, 2], atari_vector_env=False)
  assert isinstance(python, evaluation.LockstepEnvs) and python.num_envs == 2
  minatar = evaluation.create_environments("minatar:breakout", [1])
  assert isinstance(minatar, evaluation.LockstepEnvs)


def test_a_reused_vector_env_evaluates_as_a_fresh_one(tmp_path):
  """The runner's Evaluator reseeds one vector env for every phase: iteration t's
  phase is the one a fresh Evaluator plays for t (what a resumed run does)."""
  import gin  # pylint: disable=g-import-not-at-top
  from batch_rl.runners import common as runner_common  # pylint: disable=g-import-not-at-top
  agent = dqn.DQNAgent(num_actions=4)
  params = helpers.random_params(agent, 0, (84, 84, 4))
  gin.parse_config("AtariEnvironment.max_episode_steps = 100")
  try:
    make = lambda: runner_common.Evaluator("atari:Breakout", agent.act, seed=4,
                                           key=jax.random.PRNGKey(4), num_envs=2, steps=300,
                                           epsilon=0.5)
    reused = make()
    phases = [reused(params, iteration) for iteration in range(3)]
    fresh = make()(params, 2)
  finally:
    gin.clear_config()
  assert phases[2] == fresh
  assert phases[1] != phases[2]  # the phases are seeded per iteration

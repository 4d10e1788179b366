"""The gridworld's data on device: the MDP as arrays, the FIFO buffer, the rollouts.

Everything here is a pure, jittable function of arrays; the FQI program
(`batch_rl/gridworld/fqi.py`) fits its Q-network to the transitions these produce.
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

from batch_rl.gridworld import tabular


@flax.struct.dataclass
class EnvArrays:
  """The MDP and its exact solutions as device arrays (float32)."""

  transitions: jax.Array  # [S, A, S]
  rewards: jax.Array      # [S]
  q_star: jax.Array       # [S, A]
  q_data_policy: jax.Array  # [S, A], soft Q^pi of the data policy (FQE / MC reference)
  data_policy: jax.Array  # [S, A], collects the offline data; the policy FQE evaluates
  walls: jax.Array        # bool [S]
  start_state: jax.Array  # int32 scalar
  return_random: jax.Array
  return_expert: jax.Array
  gamma: float = flax.struct.field(pytree_node=False)
  alpha: float = flax.struct.field(pytree_node=False)
  horizon: int = flax.struct.field(pytree_node=False)


def env_arrays(env, data_policy: str = "uniform") -> EnvArrays:
  """EnvArrays of a `GridworldEnv`; data_policy "uniform" or "expert" (softmax(Q*/a))."""
  if data_policy == "uniform":
    pi = tabular.uniform_policy(env.num_states, env.num_actions)
  elif data_policy == "expert":
    pi = tabular.boltzmann_policy(env.q_star, env.temperature)
  else:
    raise ValueError(f"data policy must be 'uniform' or 'expert', got {data_policy!r}")
  q_pi = tabular.policy_evaluation(env.transitions, env.rewards, env.gamma, pi,
                                   env.temperature)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  return EnvArrays(
      transitions=f32(env.transitions), rewards=f32(env.rewards), q_star=f32(env.q_star),
      q_data_policy=f32(q_pi), data_policy=f32(pi), walls=jnp.asarray(env.walls),
      start_state=jnp.asarray(env.start_state, jnp.int32),
      return_random=f32(env.return_random), return_expert=f32(env.return_expert),
      gamma=float(env.gamma), alpha=float(env.temperature), horizon=int(env.horizon))


@flax.struct.dataclass
class Buffer:
  """FIFO ring buffer of transitions (s, a, s', soft MC return-to-go)."""

  state: jax.Array      # int32 [C]
  action: jax.Array     # int32 [C]
  next_state: jax.Array  # int32 [C]
  mc_return: jax.Array  # float32 [C] (0 for online data)
  count: jax.Array      # int32, transitions ever added

  @classmethod
  def empty(cls, capacity: int) -> "Buffer":
    z = jnp.zeros((capacity,), jnp.int32)
    return cls(z, z, z, jnp.zeros((capacity,), jnp.float32), jnp.zeros((), jnp.int32))

  @property
  def capacity(self) -> int:
    return self.state.shape[0]

  def size(self) -> jax.Array:
    return jnp.minimum(self.count, self.capacity)

  def add(self, s, a, s2, g) -> "Buffer":
    idx = (self.count + jnp.arange(s.shape[0])) % self.capacity
    return Buffer(self.state.at[idx].set(s), self.action.at[idx].set(a),
                  self.next_state.at[idx].set(s2), self.mc_return.at[idx].set(g),
                  self.count + s.shape[0])

  def sample_indices(self, key, n: int) -> jax.Array:
    return jax.random.randint(key, (n,), 0, jnp.maximum(self.size(), 1))


def step_env(key, s, policy, env: EnvArrays):
  """(a, s') int32: a ~ policy[s], s' ~ P(.|s, a)."""
  ka, ks = jax.random.split(key)
  a = jax.random.categorical(ka, jnp.log(policy[s]))
  s2 = jax.random.categorical(ks, jnp.log(env.transitions[s, a]))
  return a.astype(jnp.int32), s2.astype(jnp.int32)


def rollout_dataset(key, env: EnvArrays, num_episodes: int):
  """`num_episodes` episodes of `env.horizon` steps of env.data_policy from the start.

  Returns flat int32 s, a, s' and float32 soft Monte-Carlo returns-to-go
  G_t = r(s_t) + gamma (alpha H(pi(.|s_{t+1})) + G_{t+1}), truncated at the episode end
  (a Monte-Carlo target for soft Q^pi; the truncation bias is gamma^(horizon - t)).
  """
  logp = jnp.log(jnp.where(env.data_policy > 0, env.data_policy, 1.0))
  entropy = -jnp.sum(env.data_policy * logp, axis=-1)

  def episode(k):
    def step(s, kt):
      a, s2 = step_env(kt, s, env.data_policy, env)
      return s2, (s, a, s2)

    _, (s, a, s2) = jax.lax.scan(step, env.start_state, jax.random.split(k, env.horizon))

    def back(g_next, x):
      s_t, s2_t, last = x
      g = env.rewards[s_t] + env.gamma * jnp.where(
          last, 0.0, env.alpha * entropy[s2_t] + g_next)
      return g, g

    last = jnp.arange(env.horizon) == env.horizon - 1
    _, g = jax.lax.scan(back, jnp.zeros(()), (s, s2, last), reverse=True)
    return s, a, s2, g

  s, a, s2, g = jax.vmap(episode)(jax.random.split(key, num_episodes))
  return s.reshape(-1), a.reshape(-1), s2.reshape(-1), g.reshape(-1)


def collect(key, buffer: Buffer, env_state, env_time, policy, env: EnvArrays,
            num_steps: int):
  """`num_steps` online steps of `policy` from (env_state, env_time) into the buffer.

  Episodes restart at the start state after `env.horizon` steps and continue across
  calls. Returns (buffer, env_state, env_time).
  """

  def step(carry, k):
    s, t = carry
    a, s2 = step_env(k, s, policy, env)
    done = t + 1 >= env.horizon
    return (jnp.where(done, env.start_state, s2), jnp.where(done, 0, t + 1)), (s, a, s2)

  (s, t), (ss, aa, ss2) = jax.lax.scan(step, (env_state, env_time),
                                       jax.random.split(key, num_steps))
  buffer = buffer.add(ss, aa, ss2, jnp.zeros(ss.shape, jnp.float32))
  return buffer, s, t

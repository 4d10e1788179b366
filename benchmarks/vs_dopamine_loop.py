r"""Our training step against a Dopamine-style one, on the same machine and network.

  python benchmarks/vs_dopamine_loop.py [--steps 40]

Dopamine's offline JAX DQN agent cannot be imported with current jax, so its loop is
emulated: one host-side numpy minibatch from dopamine-rl's OutOfGraphReplayBuffer,
then one jit call taking the batch as arguments (no target-sync branch, which only
flatters it). Ours: the Runner's CPU path, sampling inside the jitted step. Same
Nature DQN network (SAME padding), DQN loss, Adam, batch 32, 20,000 random frames.
"""
import argparse
import tempfile, time
import jax, jax.numpy as jnp, numpy as np, optax
from dopamine.tf.replay_memory import circular_replay_buffer as crb
from batch_rl.agents import dqn, learner
from batch_rl.datasets import dqn_replay_format as fmt, fixed_replay, sampler
parser = argparse.ArgumentParser(); parser.add_argument('--steps', type=int, default=40)
n = parser.parse_args().steps
tmp = tempfile.mkdtemp(); C = 20000; rng = np.random.default_rng(0)
term = (rng.uniform(size=C) < 0.002).astype(np.uint8)
fmt.write_shard(tmp, 0, observation=rng.integers(0, 255, (C, 84, 84), dtype=np.uint8),
                action=rng.integers(0, 6, C).astype(np.int32), reward=np.zeros(C, np.float32), terminal=term, add_count=C)
agent = dqn.DQNAgent(num_actions=6)
state = agent.init(jax.random.PRNGKey(0), (84, 84, 4))
# Dopamine style
buf = crb.OutOfGraphReplayBuffer((84, 84), 4, C, 32); buf.load(tmp, 0)
@jax.jit
def update(state, s, a, r, ns, t):
  batch = sampler.Transition(s, a, r, ns, a, t, 0.99 * (1 - t.astype(jnp.float32)), a)
  grads, m = jax.grad(agent.loss, has_aux=True)(state.params, state.target_params, batch, None)
  upd, opt = agent.optimizer.update(grads, state.opt_state, state.params)
  return state.replace(params=optax.apply_updates(state.params, upd), opt_state=opt), m
def dopa_step(state):
  s, a, r, ns, na, nr, t, idx = buf.sample_transition_batch()
  return update(state, s, a, r, ns, t.astype(bool))
st, _ = dopa_step(state); jax.block_until_ready(st)
t0 = time.perf_counter()
for _ in range(n): st, m = dopa_step(st)
jax.block_until_ready(st); print(f"dopamine-style: {n/(time.perf_counter()-t0):.1f} steps/s")
data = jax.device_put(fixed_replay.load_fixed_replay(tmp, stack_size=4).arrays)
step = learner.make_train_step(agent.loss, agent.optimizer, lambda k, d: sampler.sample_transitions(k, d, 32, stack_size=4), 2000)
f = learner.make_train_steps(step, 1); tot = learner.zero_metrics(step, state, data)
st, tt = f(state, data, tot); jax.block_until_ready(st)
t0 = time.perf_counter()
for _ in range(n): st, tt = f(st, data, tt)
jax.block_until_ready(st); print(f"ours (K=1): {n/(time.perf_counter()-t0):.1f} steps/s")

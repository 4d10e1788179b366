"""Online training: the agent acts, fills a device replay buffer, and updates n times
per environment step (IUP Section 3 / Appendix A.2: n = 0.25 is Dopamine's DQN, one
update every 4 steps; n = 1, 4, 8, 16 reuse each datum more).

Each environment step is one jitted call: add (o_t, a_t, r_t, terminal_t) to the
buffer (Dopamine's add semantics), run the updates due at this step fused (the same
pure train step as offline, sampling from the buffer inside jit), and pick a_{t+1}
epsilon-greedily on the next state. The environment itself runs on the host.

Training acts in ONE environment, as Dopamine does (one stream of transitions, added
in order, that the replay's n-step returns and the logged dataset follow). Acting in
several environments at once would not pay where the environment's step is a small
share of the fused jitted add + update + act call (`python benchmarks/online_throughput.py`
prints that share; README quotes it). Evaluation, where
no replay is involved, does step several environments in lockstep (`num_eval_envs`).

Dopamine's online defaults: replay capacity 1M, training starts after 20,000 steps,
epsilon decays linearly from 1 to 0.01 over 250,000 steps after those (Dopamine's
`linearly_decaying_epsilon` with warmup), the target network is copied every 8,000
environment steps, an iteration is 250,000 training steps then 125,000 evaluation
steps. At the end of an episode (game over or the 27,000-step limit) the last entry is
stored as terminal, as Dopamine's `end_episode` did.

Resuming: each iteration's checkpoint holds the agent(s) (tandem and forked included),
the replay buffer with its priorities (beside it, `ckpt_<i>.arrays.npz`), the loop's
counters and keys, and the environment's exact state (its `snapshot()`: MinAtar's game
and RandomState, the ALE's `cloneState(include_rng=True)` with the preprocessing's
screens, gymnasium's env), so a rerun continues mid-episode as if never stopped. On
SIGTERM or SIGUSR2 the run stops after its current environment step (or inside the
evaluation, which is then replayed) with a partial checkpoint of that position; a rerun
logs exactly the scalars an uninterrupted run logs.

`log_dataset=True` writes the buffer after every iteration in the DQN Replay format
(replay_logs/ under base_dir, suffix = iteration), which `train.py` offline reads
unchanged.

Seeds (`num_seeds = S`): seeds seed, ..., seed + S - 1 train in one jitted program
(runners/seed_axis.py). Each seed has its own environment (seeded as its solo run
seeds it), replay buffer, keys, agent(s), totals and episode returns; the buffers,
states, totals, actions and keys are stacked on a leading seed axis and the per-step
function is vmapped over it, while the S environments step on the host one after the
other. The step count, and with it epsilon, the update schedule and the fork, is
shared. Seed k writes <base_dir>/seed_<k>/ as a solo run with `seed = k` would: its
scalars, config, replay_logs/ and checkpoints, so each seed directory resumes, or
continues, as a solo run.
"""
import functools
import logging
import math
import os
import time
from typing import Callable, Optional

import flax.serialization
import flax.traverse_util
import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import checkpointing
from batch_rl import summary_writer
from batch_rl import validation
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.replay import circular_buffer
from batch_rl.replay import prioritized_buffer
from batch_rl.runners import common
from batch_rl.runners import run_dir
from batch_rl.runners import seed_axis
from batch_rl.runners import stop_signal
from batch_rl.runners.common import ConfigError
from batch_rl.runners.diagnose import make_diagnose
from batch_rl.tf_utils import gfile

log = logging.getLogger("batch_rl")


def linearly_decaying_epsilon(decay_period: int, step: int, warmup_steps: int,
                              epsilon: float) -> float:
  """Dopamine's schedule: 1 during warmup, then linear to `epsilon` over decay_period."""
  steps_left = decay_period + warmup_steps - step
  bonus = (1.0 - epsilon) * steps_left / decay_period
  return epsilon + float(np.clip(bonus, 0.0, 1.0 - epsilon))


def updates_at_step(step: int, updates_per_step: float) -> int:
  """Gradient updates due at training step `step` (0-based) for n = updates_per_step.

  floor(n (step + 1)) - floor(n step): n = 0.25 gives one update at steps 3, 7, ...;
  n = 8 gives 8 at every step; n = 1.5 alternates 1 and 2.
  """
  return math.floor(updates_per_step * (step + 1) + 1e-9) - math.floor(
      updates_per_step * step + 1e-9)


def _check_settings(*, updates_per_step, num_iterations, training_steps, num_eval_envs,
                    epsilon_decay_period, evaluation_steps, eval_epsilon, epsilon_train,
                    srank_delta, diagnostics_batch_size, keep_checkpoints,
                    target_update_env_steps, prioritized_replay, tandem, fork_step,
                    num_seeds) -> None:
  """ConfigError naming the first OnlineRunner binding out of its range."""
  if not updates_per_step > 0:
    raise ConfigError(f"`OnlineRunner.updates_per_step` must be > 0 (e.g. 0.25, 1, 8), "
                      f"got {updates_per_step}.")
  common.check_at_least_one(
      "OnlineRunner", num_iterations=num_iterations, training_steps=training_steps,
      num_eval_envs=num_eval_envs, epsilon_decay_period=epsilon_decay_period,
      diagnostics_batch_size=diagnostics_batch_size, keep_checkpoints=keep_checkpoints,
      num_seeds=num_seeds,
      **({} if target_update_env_steps is None else
         {"target_update_env_steps": target_update_env_steps}))
  common.check_runner_values("OnlineRunner", evaluation_steps=evaluation_steps,
                             eval_epsilon=eval_epsilon, srank_delta=srank_delta)
  validation.check_in_range("OnlineRunner.epsilon_train", epsilon_train, 0.0, 1.0)
  if tandem not in (None, "tandem", "forked"):
    raise ConfigError(f"`OnlineRunner.tandem` must be None, 'tandem' or 'forked', got "
                      f"{tandem!r}.")
  if tandem and prioritized_replay:
    raise ConfigError("`OnlineRunner.tandem` runs with uniform replay only (whose "
                      "priorities would the passive agent follow?); unset "
                      "`OnlineRunner.prioritized_replay`.")
  if tandem == "forked" and not 0 <= fork_step:
    raise ConfigError(f"`OnlineRunner.fork_step` must be >= 0, got {fork_step}.")


# The loop's carry (see `_fresh_start`): counters every seed shares, the seeds' device
# values (stacked on the seed axis like the state) and their host values (one list
# entry per seed). A seed's checkpoint holds them all as its solo run's carry.
SHARED_CARRY = ("step", "env_steps", "updates", "passive_updates", "seconds")
STACKED_CARRY = ("action", "key", "totals")
PER_SEED_CARRY = ("frame", "stack", "episode_return", "episode_length", "returns")


@gin.configurable(denylist=["base_dir"])
class OnlineRunner:
  """Online DQN-style training with n updates per environment step.

  Args:
    base_dir: this run's directory.
    game, domain: as FixedReplayRunner ("Pong"/"atari", "breakout"/"minatar").
    agent_fn: agent constructor taking `num_actions` (gin: `@DQNAgent`), or for an
      environment with continuous actions `action_spec` (`@SACAgent`).
    num_iterations: iterations (200 in Dopamine).
    training_steps: environment steps per iteration (250,000).
    evaluation_steps: agent steps of each evaluation phase (125,000; 0 = none).
    eval_epsilon: epsilon of evaluation (0.001).
    num_eval_envs: environments stepped in lockstep during evaluation.
    updates_per_step: n > 0, gradient updates per environment step; fractions run one
      update every 1/n steps (0.25 = Dopamine's update_period 4).
    min_replay_history: environment steps before training starts (20,000).
    replay_capacity: entries of the circular buffer (1,000,000).
    epsilon_train, epsilon_decay_period: Dopamine's training epsilon schedule.
    target_update_env_steps: copy the target network every this many environment
      steps (8,000, Dopamine's DQN), i.e. every n * this many updates; None keeps the
      agent's own `target_update_period` (in updates).
    clip_rewards: store rewards clipped to [-1, 1] (Dopamine's DQN).
    seed: seeds network init, acting, sampling and the environments.
    diagnostics_batch_size, srank_delta: as FixedReplayRunner, on the replay buffer.
    log_dataset: write the buffer as DQN Replay checkpoint `iteration` after each one.
    prioritized_replay: Dopamine Rainbow's prioritized replay (replay/
      prioritized_buffer.py); agents whose loss takes its weights: DQNAgent, C51Agent.
    tandem: None, "tandem" or "forked": also train a passive agent on exactly the
      active agent's minibatches, in the same order (Ostrovski et al. 2021; empirical
      study Section 9). "tandem": the passive agent has its own initialisation from
      the start and both learn; "forked": at environment step `fork_step` the passive
      agent starts as a copy of the active one, and the active agent is frozen from
      then on (it keeps generating data with its fixed policy). Its metrics, diagnostics and evaluation are logged under
      "Passive/" + the usual tag; the active agent's under the usual tags.
    fork_step: environment step of the fork (tandem="forked").
    keep_checkpoints: checkpoints kept (each holds the agent, the replay buffer and
      the environment's state, so that the run resumes exactly).
    compress_checkpoints: deflate the replay buffer in checkpoints (level 1): frames
      compress well, so the files are far smaller and quicker to resume from, at a
      similar write time (`python benchmarks/checkpoint_cost.py` prints both ways).
    num_seeds: seeds seed, ..., seed + num_seeds - 1 trained together in one jitted
      program, vmapped over a leading seed axis, each with its own environment,
      replay buffer and agent(s); seed k writes the run directory <base_dir>/seed_<k>
      that a solo run with `seed = k` would (runners/seed_axis.py). Prioritized replay
      and tandem runs vmap as well.
  """

  def __init__(self, base_dir: str, game: str = "Pong", domain: str = "atari",
               agent_fn: Callable[..., dqn.DQNAgent] = dqn.DQNAgent,
               num_iterations: int = 200, training_steps: int = 250_000,
               evaluation_steps: int = 125_000, eval_epsilon: float = 0.001,
               num_eval_envs: int = 1, updates_per_step: float = 0.25,
               min_replay_history: int = 20_000, replay_capacity: int = 1_000_000,
               epsilon_train: float = 0.01, epsilon_decay_period: int = 250_000,
               target_update_env_steps: Optional[int] = 8000, clip_rewards: bool = True,
               seed: int = 0, diagnostics_batch_size: int = 2048,
               srank_delta: float = 0.01, log_dataset: bool = False,
               prioritized_replay: bool = False, tandem: Optional[str] = None,
               fork_step: int = 0, keep_checkpoints: int = 2,
               compress_checkpoints: bool = True, num_seeds: int = 1):
    common.check_base_dir(base_dir)
    _check_settings(
        updates_per_step=updates_per_step, num_iterations=num_iterations,
        training_steps=training_steps, num_eval_envs=num_eval_envs,
        epsilon_decay_period=epsilon_decay_period, evaluation_steps=evaluation_steps,
        eval_epsilon=eval_epsilon, epsilon_train=epsilon_train, srank_delta=srank_delta,
        diagnostics_batch_size=diagnostics_batch_size, keep_checkpoints=keep_checkpoints,
        target_update_env_steps=target_update_env_steps,
        prioritized_replay=prioritized_replay, tandem=tandem, fork_step=fork_step,
        num_seeds=num_seeds)
    self.base_dir = base_dir
    self.seeds = seed_axis.SeedAxis(range(seed, seed + num_seeds))
    self.run_dirs = self.seeds.run_dirs(base_dir)
    self.checkpoint_dirs = [os.path.join(d, "checkpoints") for d in self.run_dirs]
    self.checkpoint_dir = self.checkpoint_dirs[0]
    run_dir.check_same_run(base_dir)
    self.num_iterations = num_iterations
    self.finished = all(common.is_finished(d, num_iterations) for d in self.checkpoint_dirs)
    if self.finished:  # nothing to build: run() says so and returns
      return
    self.env_name = f"{domain}:{game}"
    # Each seed's own environment, seeded as its solo run seeds it.
    self.envs = [factory.create_environment(self.env_name, seed=common.seed_int(k, 4))
                 for k in self.seeds.seeds]
    self.agent = common.build_agent(agent_fn, "OnlineRunner.agent_fn",
                                    self.env, self.env_name)
    stack, n, gamma = self.env.stack_size, self.agent.update_horizon, self.agent.gamma
    needed = max(self.agent.batch_size, stack + n + 1)
    if replay_capacity < needed:
      raise ConfigError(
          f"`OnlineRunner.replay_capacity` = {replay_capacity} is smaller than the batch "
          f"({self.agent.batch_size}) or the frame stack plus n-step horizon ({stack} + "
          f"{n} + 1); it must be >= {needed}.")
    if not 0 <= min_replay_history <= replay_capacity:
      raise ConfigError(f"`OnlineRunner.min_replay_history` must be in [0, replay_capacity "
                        f"= {replay_capacity}], got {min_replay_history}.")
    self.training_steps = training_steps
    self.evaluation_steps = evaluation_steps
    self.updates_per_step = updates_per_step
    self.min_replay_history = min_replay_history
    self.replay_capacity = replay_capacity
    self.epsilon_train = epsilon_train
    self.epsilon_decay_period = epsilon_decay_period
    self.clip_rewards = clip_rewards
    self.seed = seed
    self.log_dataset = log_dataset
    self.keep_checkpoints = keep_checkpoints
    self.compress_checkpoints = compress_checkpoints
    self._stop = stop_signal.GracefulStop()
    # The last logged iteration's metrics, one dict per seed.
    self._last_metrics: list[dict[str, float]] = [{}] * len(self.seeds)
    self.state_shape = tuple(self.env.observation_shape) + (stack,)
    # The replay, the acting states and the network's dummy inputs take the
    # environment's dtypes (uint8 frames for Atari and MinAtar).
    self.observation_spec = factory.observation_spec_of(self.env)
    self._action_spec = factory.action_spec_of(self.env)
    self._state_spec = agent_common.state_spec(self.state_shape, self.observation_spec.dtype)
    self._keys = [jax.random.PRNGKey(k) for k in self.seeds.seeds]
    self._initial_state = self.seeds.stack([
        common.init_agent_state(self.agent, jax.random.fold_in(key, 0), self._state_spec,
                                self.env_name) for key in self._keys])
    if prioritized_replay and not self.agent.supports_prioritized_replay:
      raise ConfigError(f"`OnlineRunner.prioritized_replay` needs an agent whose loss takes "
                        f"importance weights (DQNAgent, C51Agent), not "
                        f"{type(self.agent).__name__}.")
    self.prioritized_replay = prioritized_replay
    self.tandem, self.fork_step = tandem, fork_step
    target_period = self.agent.target_update_period
    if target_update_env_steps is not None:
      target_period = max(1, round(target_update_env_steps * updates_per_step))
    self.target_update_period = target_period

    shape = dict(stack_size=stack, update_horizon=n, gamma=gamma)
    self._build_replay(replay_capacity, target_period, shape)
    solo_state = self.seeds.split(self._initial_state)[0]
    self._zero_metrics = self._metric_zeros(self._train_step, solo_state)
    if tandem:
      self._initial_passive = self.seeds.stack([
          self.agent.init(jax.random.fold_in(key, 7), self._state_spec)
          for key in self._keys])
      self._zero_tandem_metrics = self._metric_zeros(
          self._tandem_train_step, (solo_state, self.seeds.split(self._initial_passive)[0]))
      if tandem == "forked":  # the active agent's keys stay in the totals, unchanged
        self._zero_tandem_metrics = {**self._zero_metrics, **self._zero_tandem_metrics}
    self._step_fns: dict[int, Callable] = {}
    # Each seed's loop key split into (its next key, its acting key).
    self._split_keys = (jax.jit(jax.vmap(lambda key: tuple(jax.random.split(key))))
                        if self.seeds.vmapped else jax.random.split)

    # Each seed diagnoses its own buffer: the buffers are vmapped too, not shared.
    self._diagnose = make_diagnose(
        self.agent, common.make_sampler(circular_buffer.sample_transitions,
                                        diagnostics_batch_size, **shape), srank_delta,
        lambda fn, in_axes: self.seeds.vmap(fn, 0))
    self._act = jax.jit(self.agent.act)
    self._evaluate = common.Evaluator(self.env_name, self.agent.evaluation_act,
                                      seed=self.seeds.seeds, key=self._keys,
                                      num_envs=num_eval_envs, steps=evaluation_steps, epsilon=eval_epsilon)

  @property
  def env(self):
    """The first seed's environment (a solo run's only one), whose shapes, specs and
    description every seed shares; setting it replaces that seed's environment (a
    wrapper that times its steps, say)."""
    return self.envs[0]

  @env.setter
  def env(self, env) -> None:
    self.envs[0] = env

  def _build_replay(self, capacity: int, target_period: int, shape: dict) -> None:
    """The replay buffer's constructor and add, and the train steps that sample it."""
    frame_shape = tuple(self.env.observation_shape)
    dtypes = dict(observation_dtype=self.observation_spec.dtype,
                  action_shape=self._action_spec.shape, action_dtype=self._action_spec.dtype)
    if self.prioritized_replay:
      self._create_buffer = functools.partial(prioritized_buffer.create, capacity,
                                              frame_shape, **dtypes)
      self._add = prioritized_buffer.add
      self._uniform_view = lambda pbuffer: pbuffer.buffer
      self._train_step = learner.make_train_step(
          self.agent.loss, self.agent.optimizer,
          common.make_sampler(prioritized_buffer.sample_transitions, self.agent.batch_size,
                              **shape),
          target_period, update_priorities=prioritized_buffer.update_priorities,
          target_update_tau=self.agent.target_update_tau)
    else:
      self._create_buffer = functools.partial(circular_buffer.create, capacity,
                                              frame_shape, **dtypes)
      self._add = circular_buffer.add
      self._uniform_view = lambda buffer: buffer
      sample = common.make_sampler(circular_buffer.sample_transitions, self.agent.batch_size,
                                   **shape)
      self._train_step = learner.make_train_step(
          self.agent.loss, self.agent.optimizer, sample, target_period,
          target_update_tau=self.agent.target_update_tau)
      # Forked tandem freezes the active agent at the fork (Ostrovski et al. 2021): it
      # keeps acting with its fixed policy while the passive copy learns.
      self._tandem_train_step = learner.make_tandem_train_step(
          self.agent.loss, self.agent.optimizer, sample, target_period,
          train_active=self.tandem != "forked", target_update_tau=self.agent.target_update_tau)

  def _create_buffers(self):
    """An empty replay buffer per seed, stacked (the buffer itself for a solo run)."""
    if not self.seeds.vmapped:
      return self._create_buffer()
    num = len(self.seeds)
    return jax.jit(lambda: jax.tree.map(lambda x: jnp.broadcast_to(x, (num,) + x.shape),
                                        self._create_buffer()))()

  def _metric_zeros(self, train_step, state):
    """Zero totals of `train_step`'s metrics (on a solo `state`), stacked per seed."""
    _, _, shapes = jax.eval_shape(train_step, state, jax.eval_shape(self._create_buffer))
    zeros = {k: jnp.zeros(v.shape, jnp.float32) for k, v in shapes.items()}
    return self.seeds.stack([zeros] * len(self.seeds))

  def _host_stack(self, values: list):
    """The seeds' host values as one array on the seed axis (the value of a solo run)."""
    return np.stack(values) if self.seeds.vmapped else values[0]

  # ---------------------------------------------------------------- one env step
  def _step_fn(self, num_updates: int, tandem: bool = False):
    """Jitted add + `num_updates` fused updates + the next action, compiled per count.

    With `tandem` the carried state is (active, passive) and both learn. With several
    seeds it is vmapped over the seed axis of everything but epsilon, which follows
    the step count the seeds share.
    """
    if (num_updates, tandem) not in self._step_fns:
      stack, clip = self.env.stack_size, self.clip_rewards
      train_step = self._tandem_train_step if tandem else self._train_step
      acting = (lambda s: s[0]) if tandem else (lambda s: s)

      def step(state, buffer, totals, frame, action, reward, terminal, next_states, key,
               epsilon):
        buffer = self._add(buffer, frame, action, reward, terminal, stack_size=stack,
                           clip_rewards=clip)
        for _ in range(num_updates):  # unrolled: n is small, and XLA:CPU scans slowly
          state, buffer, metrics = train_step(state, buffer)
          totals = {**totals, **{k: totals[k] + v for k, v in metrics.items()}}
        next_action = self.agent.act(acting(state).params, next_states, key, epsilon)[0]
        return state, buffer, totals, next_action

      step = self.seeds.vmap(step, (0,) * 9 + (None,))
      # Donated: the buffer is updated in place instead of copied every step.
      self._step_fns[num_updates, tandem] = jax.jit(step, donate_argnums=(0, 1, 2))
    return self._step_fns[num_updates, tandem]

  def _epsilon(self, total_steps: int) -> float:
    return linearly_decaying_epsilon(self.epsilon_decay_period, total_steps,
                                     self.min_replay_history, self.epsilon_train)

  def _step_envs(self, action, carry: dict) -> tuple[list, list]:
    """Steps each seed's environment with its action a_t: (r_t, episode ended) per
    seed, with the seeds' next frames, stacks s_{t+1} and episode returns and lengths
    advanced in `carry` (at an episode's end the environment is reset: the next frame
    is the new episode's first)."""
    # The seeds' actions in one host read: ints, or vectors of a continuous box.
    shape = tuple(self._action_spec.shape)
    actions = np.asarray(action).reshape((len(self.envs),) + shape)
    rewards, ends = [], []
    for k, env in enumerate(self.envs):
      next_frame, reward, terminal, truncated = env.step(
          actions[k] if shape else int(actions[k]))
      carry["episode_return"][k] += reward
      carry["episode_length"][k] += 1
      episode_end = terminal or truncated
      if episode_end:
        carry["returns"][k].append(carry["episode_return"][k])
        carry["episode_return"][k], carry["episode_length"][k] = 0.0, 0
        next_frame = env.reset()
        next_stack = np.zeros_like(carry["stack"][k])
      else:
        next_stack = np.roll(carry["stack"][k], -1, axis=-1)
      next_stack[..., -1] = next_frame
      carry["frame"][k], carry["stack"][k] = next_frame, next_stack
      rewards.append(reward)
      ends.append(episode_end)
    return rewards, ends

  # ---------------------------------------------------------------- phases
  def _iteration_start(self, iteration: int, carry: dict, tandem: bool) -> None:
    """Resets the per-iteration entries of `carry` for a new iteration."""
    totals = self._zero_tandem_metrics if tandem else self._zero_metrics
    keys = [jax.random.fold_in(jax.random.fold_in(key, 5), iteration) for key in self._keys]
    carry.update(step=0, totals=jax.tree.map(jnp.copy, totals),  # donated to the step fn
                 key=self.seeds.stack(keys), returns=[[] for _ in self.seeds.seeds],
                 updates=0, passive_updates=0, seconds=0.0)

  def _train(self, state, buffer, iteration: int, carry: dict):
    """Acts and learns from `carry["step"]` to the end of the iteration.

    `state` is the active agent's TrainState, or (active, passive) once a passive
    agent exists (tandem from the start; forked from `fork_step` on). `carry` holds
    everything else the loop advances (the environments' last frames and stacks, the
    next actions, counters, the iteration's keys, totals and episode returns), so a
    graceful stop after any step checkpoints the exact position. Returns (state, buffer).
    """
    tandem = isinstance(state, tuple)
    totals, key, start = carry["totals"], carry["key"], time.perf_counter()
    action = carry["action"]
    for index in range(carry["step"], self.training_steps):
      total = carry["env_steps"]
      frame = self._host_stack(carry["frame"])  # o_t, which the step adds to the buffer
      rewards, ends = self._step_envs(action, carry)
      next_states = self._host_stack([s[None] for s in carry["stack"]])
      # Dopamine trains once its buffer holds more than min_replay_history entries;
      # here, from environment step min_replay_history on (padding entries not counted).
      num_updates = (updates_at_step(total, self.updates_per_step)
                     if total >= self.min_replay_history else 0)
      if self.tandem == "forked" and not tandem and total == self.fork_step:
        # The fork: the passive agent starts as a copy of the active one.
        totals = {**jax.device_get(self._zero_tandem_metrics), **jax.device_get(totals)}
        state, tandem = (state, jax.tree.map(jnp.copy, state)), True
      key, act_key = self._split_keys(key)
      state, buffer, totals, action = self._step_fn(num_updates, tandem)(
          state, buffer, totals, frame, action, self._host_stack(rewards),
          self._host_stack(ends), next_states, act_key, self._epsilon(total + 1))
      if not (tandem and self.tandem == "forked"):  # forked: the active agent is frozen
        carry["updates"] += num_updates
      carry["passive_updates"] += num_updates if tandem else 0
      carry.update(env_steps=total + 1, step=index + 1, action=action, key=key,
                   totals=totals)
      if self._stop.requested and index + 1 < self.training_steps:
        carry["seconds"] += time.perf_counter() - start
        self._save_position(iteration, state, buffer, carry)
    carry["seconds"] += time.perf_counter() - start
    return state, buffer

  def _train_metrics(self, state, carry: dict) -> list[dict[str, float]]:
    """Each seed's Train/ scalars of the iteration, from the totals and counters in
    `carry`."""
    tandem = isinstance(state, tuple)
    updates, passive_updates = carry["updates"], carry["passive_updates"]
    active = state[0] if tandem else state
    active_steps = self.seeds.split(jax.device_get(active.step))
    passive_steps = self.seeds.split(jax.device_get(state[1].step)) if tandem else None
    out = []
    for k, totals in enumerate(self.seeds.split(jax.device_get(carry["totals"]))):
      metrics = {tag: float(v) / (passive_updates if tag.startswith("Passive/") else updates)
                 for tag, v in totals.items()
                 if (passive_updates if tag.startswith("Passive/") else updates)}
      returns = carry["returns"][k]
      metrics["Train/EpisodeReturn"] = float(np.mean(returns)) if returns else float("nan")
      metrics["Train/NumEpisodes"] = float(len(returns))
      metrics["Train/EnvSteps"] = float(carry["env_steps"])
      metrics["Train/GradientSteps"] = float(active_steps[k])
      if tandem:
        metrics["Passive/Train/GradientSteps"] = float(passive_steps[k])
      metrics["Train/StepsPerSecond"] = self.training_steps / carry["seconds"]
      out.append(metrics)
    return out

  # ---------------------------------------------------------------- checkpoints
  def _checkpoint_trees(self, state, carry: dict) -> list[dict]:
    """Each seed's checkpoint but its replay buffer, as its solo run writes it: the
    agent(s), the loop's carry and the environment's snapshot."""
    split = lambda tree: [jax.tree.map(np.asarray, t)
                          for t in self.seeds.split(jax.device_get(tree))]
    stacked = {name: split(carry[name]) for name in STACKED_CARRY}
    trees = []
    for k, (agent, env) in enumerate(zip(split(state), self.envs)):
      saved = {name: carry[name] for name in SHARED_CARRY}
      saved.update({name: stacked[name][k] for name in STACKED_CARRY})
      saved.update({name: carry[name][k] for name in PER_SEED_CARRY})
      saved["returns"] = np.asarray(carry["returns"][k], np.float64)
      saved["env"] = np.frombuffer(factory.snapshot_of(env), np.uint8)
      trees.append({"agent": agent, "tandem": np.bool_(isinstance(state, tuple)),
                    "carry": saved})
    return trees

  def _buffer_arrays(self, buffer) -> dict[str, np.ndarray]:
    """One buffer's arrays by flattened pytree path ("buffer/observation", ...)."""
    flat = flax.traverse_util.flatten_dict(
        flax.serialization.to_state_dict(jax.device_get(buffer)), sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}

  def _seed_buffers(self, buffer) -> list:
    """Each seed's replay buffer on the host (views of the stacked one)."""
    return self.seeds.split(jax.device_get(buffer))

  def _seed_checkpoints(self, state, buffer, carry: dict) -> list[tuple]:
    """(checkpoint directory, tree, buffer arrays) of each seed's checkpoint."""
    return [(checkpoint_dir, tree, self._buffer_arrays(seed_buffer))
            for checkpoint_dir, tree, seed_buffer in zip(
                self.checkpoint_dirs, self._checkpoint_trees(state, carry),
                self._seed_buffers(buffer))]

  def _save(self, iteration: int, state, buffer, carry: dict) -> None:
    """Writes each seed's checkpoint of `iteration` in its own directory."""
    for checkpoint_dir, tree, arrays in self._seed_checkpoints(state, buffer, carry):
      checkpointing.save(checkpoint_dir, iteration, tree, keep=self.keep_checkpoints,
                         arrays=arrays, compress=self.compress_checkpoints)

  def _save_position(self, iteration: int, state, buffer, carry: dict) -> None:
    """Checkpoints a position inside `iteration` (each seed's in its own directory) and
    raises stop_signal.Preempted."""
    for checkpoint_dir, tree, arrays in self._seed_checkpoints(state, buffer, carry):
      path = checkpointing.save_partial(checkpoint_dir, iteration, tree, arrays=arrays,
                                        compress=self.compress_checkpoints)
    raise self._stop.preempted(
        f"in iteration {iteration + 1} of {self.num_iterations}, after {carry['step']} of "
        f"its {self.training_steps} environment steps", path if not self.seeds.vmapped else
        os.path.join(self.base_dir, seed_axis.SEED_DIR.format("*"), "checkpoints"))

  def _restore(self, saved: list[dict], arrays: list[dict[str, np.ndarray]]):
    """(state, buffer, carry) from each seed's checkpoint state dict and arrays, the
    seeds' environments restored to their snapshots."""
    template = self.seeds.split(self._initial_state)[0]
    tandem = bool(saved[0]["tandem"])
    if tandem:
      template = (template, self.seeds.split(self._initial_passive)[0])
    state = jax.device_put(self.seeds.stack(
        [flax.serialization.from_state_dict(template, entry["agent"]) for entry in saved]))
    buffer_template = jax.eval_shape(self._create_buffer)
    buffer = jax.device_put(self.seeds.stack([flax.serialization.from_state_dict(
        buffer_template, flax.traverse_util.unflatten_dict(seed_arrays, sep="/"))
                                              for seed_arrays in arrays]))
    carries = [dict(entry["carry"]) for entry in saved]
    for env, seed_carry in zip(self.envs, carries):
      factory.restore_from(env, np.asarray(seed_carry.pop("env")).tobytes())
    first = carries[0]
    carry = {name: int(first[name])
             for name in ("step", "env_steps", "updates", "passive_updates")}
    carry["seconds"] = float(first["seconds"])
    carry["frame"] = [c["frame"] for c in carries]
    carry["stack"] = [c["stack"] for c in carries]
    carry["returns"] = [[float(r) for r in c["returns"]] for c in carries]
    carry["episode_length"] = [int(c["episode_length"]) for c in carries]
    carry["episode_return"] = [float(c["episode_return"]) for c in carries]
    carry["action"] = self.seeds.stack([jnp.asarray(c["action"]) for c in carries])
    carry["key"] = self.seeds.stack([jnp.asarray(c["key"]) for c in carries])
    zeros = self._zero_tandem_metrics if tandem else self._zero_metrics
    carry["totals"] = self.seeds.stack([
        {k: jnp.asarray(c["totals"][k], zeros[k].dtype) for k in zeros} for c in carries])
    return state, buffer, carry

  def _resume(self):
    """(first iteration, state, buffer, carry) from the newest position every seed
    checkpointed, or None.

    That is the partial checkpoint of the iteration after the newest one all seeds
    completed, where every seed wrote it at the same step; else that newest common
    iteration (a stop between the seeds' writes leaves some ahead, which redo it).
    """
    last = checkpointing.newest_common_iteration(self.checkpoint_dirs)
    partial = [checkpointing.read_partial(d, last + 1) for d in self.checkpoint_dirs]
    if (all(entry is not None for entry in partial) and
        len({int(entry["carry"]["step"]) for entry in partial}) == 1):
      arrays = [checkpointing.read_arrays(d, last + 1, partial=True)
                for d in self.checkpoint_dirs]
      state, buffer, carry = self._restore(partial, arrays)
      log.info("Continuing iteration %d from its partial checkpoint (%d of %d environment "
               "steps done).", last + 2, carry["step"], self.training_steps)
      return last + 1, state, buffer, carry
    if last < 0:
      return None
    saved = [checkpointing.read_state_dict(d, last)[1] for d in self.checkpoint_dirs]
    state, buffer, carry = self._restore(
        saved, [checkpointing.read_arrays(d, last) for d in self.checkpoint_dirs])
    self._iteration_start(last + 1, carry, isinstance(state, tuple))
    return last + 1, state, buffer, carry

  def _check_finite(self, iteration: int, prefix: str, metrics: list[dict], params) -> None:
    """common.check_finite on each seed's tags of one agent (the passive agent's carry
    "Passive/"), the seed named when there are several."""
    own = [{t[len(prefix):]: float(v) for t, v in seed_metrics.items() if t.startswith(prefix)}
           for seed_metrics in metrics]
    last = [{t[len(prefix):]: v for t, v in seed_last.items() if t.startswith(prefix)}
            for seed_last in self._last_metrics]
    common.check_finite_seeds(iteration, self.num_iterations, self.seeds, own, params, last,
                              self.checkpoint_dirs, self.run_dirs)

  def _write_dataset(self, buffer, iteration: int) -> None:
    """Each seed's buffer as DQN Replay checkpoint `iteration` in its replay_logs/."""
    for directory, seed_buffer in zip(self.run_dirs, self._seed_buffers(buffer)):
      arrays = circular_buffer.to_numpy(self._uniform_view(seed_buffer))
      fmt.write_shard(os.path.join(directory, "replay_logs"), iteration,
                      observation=arrays["observation"], action=arrays["action"],
                      reward=arrays["reward"], terminal=arrays["terminal"],
                      add_count=arrays["add_count"], stack_size=self.env.stack_size,
                      observation_dtype=arrays["observation"].dtype,
                      action_shape=arrays["action"].shape[1:],
                      action_dtype=arrays["action"].dtype)

  def _write_config(self, writers, texts: dict[str, str]) -> None:
    """config.gin and bindings.gin (and the texts) of the run, or of every seed's run."""
    common.write_seed_configs(self.base_dir, self.seeds, self.run_dirs, writers, texts,
                              "OnlineRunner")

  # ---------------------------------------------------------------- driver
  def _fresh_start(self):
    """(state, buffer, carry) of a new run: empty buffers, first episodes, first actions.

    The carry holds the counters all seeds share (SHARED_CARRY), the seeds' actions,
    keys and totals stacked like the state (STACKED_CARRY), and lists of the seeds'
    frames, stacks, episode returns and lengths and finished returns (PER_SEED_CARRY).
    """
    state = jax.tree.map(jnp.copy, self._initial_state)  # donated to the step function
    if self.tandem == "tandem":
      state = (state, jax.tree.map(jnp.copy, self._initial_passive))
    buffer = self._create_buffers()
    carry = dict(frame=[], stack=[], env_steps=0, episode_return=[0.0] * len(self.seeds),
                 episode_length=[0] * len(self.seeds))
    actions = []
    for env, key, initial in zip(self.envs, self._keys,
                                 self.seeds.split(self._initial_state)):
      first = env.reset()
      stack = np.zeros(self.state_shape, self.observation_spec.dtype)
      stack[..., -1] = first
      actions.append(self._act(initial.params, stack[None], jax.random.fold_in(key, 6),
                               1.0)[0])
      carry["frame"].append(first)
      carry["stack"].append(stack)
    carry["action"] = self.seeds.stack(actions)
    self._iteration_start(0, carry, isinstance(state, tuple))
    return state, buffer, carry

  def run(self, on_iteration: Optional[Callable[[int, dict[str, float]], None]] = None
          ) -> dict[str, float]:
    """Trains to `num_iterations`, resuming from base_dir's newest checkpoint (or the
    partial one of a graceful stop); returns the last iteration's metrics (with
    several seeds, the first seed's).

    Args:
      on_iteration: optional callback, called with (iteration, metrics) after each
        iteration is logged and checkpointed (experiments time iterations with it);
        with several seeds, the first seed's metrics.
    """
    if self.finished:
      log.info("%s is complete (%d iterations); nothing to do.", self.base_dir,
               self.num_iterations)
      return {}
    gfile().makedirs(self.base_dir)
    resumed = self._resume()
    environment = factory.describe_environment(self.env_name, self.env)
    if resumed is None:
      start_iteration, (state, buffer, carry) = 0, self._fresh_start()
    else:
      start_iteration, state, buffer, carry = resumed
      for directory in self.run_dirs:
        dropped = summary_writer.drop_events_after(directory, start_iteration - 1)
        if dropped:
          log.info("Removed %d TensorBoard events of iterations >= %d left by an "
                   "interrupted run in %s.", dropped, start_iteration, directory)
      log.info("Resuming %s at iteration %d, environment step %d.", self.base_dir,
               start_iteration + 1, carry["env_steps"])
    writers = [summary_writer.SummaryWriter(d) for d in self.run_dirs]
    if resumed is None:
      self._write_config(writers, {"Config/environment": environment})
    log.info("Environment: %s", environment)
    if self.seeds.vmapped:
      log.info("Seeds %s in one program; their runs: %s", self.seeds.seeds,
               ", ".join(self.run_dirs))
    metrics, progress = [{}], common.Progress(self.num_iterations)
    with self._stop:
      for iteration in range(start_iteration, self.num_iterations):
        progress.start()
        state, buffer = self._train(state, buffer, iteration, carry)
        metrics = self._finish_iteration(state, buffer, iteration, carry)
        for writer, seed_metrics in zip(writers, metrics):
          writer.scalars(iteration, seed_metrics)
        if self.log_dataset:  # before the checkpoint: a rerun rewrites it identically
          self._write_dataset(buffer, iteration)
        self._save(iteration, state, buffer, carry)
        if on_iteration is not None:
          on_iteration(iteration, metrics[0])
        progress.done(iteration + 1, self._progress_fields(metrics))
        self._iteration_start(iteration + 1, carry, isinstance(state, tuple))
    for writer in writers:
      writer.close()
    return metrics[0]

  def _progress_fields(self, metrics: list[dict]) -> str:
    """The progress line's fields: the seeds' mean where there are several."""
    mean = lambda tag: float(np.mean([m.get(tag, float("nan")) for m in metrics]))
    srank = mean("Rank/srank") if all("Rank/srank" in m for m in metrics) else "-"
    seeds = f" (mean of {len(metrics)} seeds)" if self.seeds.vmapped else ""
    return (f"{metrics[0]['Train/StepsPerSecond']:.0f} env steps/s | "
            f"{mean('Train/GradientSteps'):.0f} updates | train return "
            f"{mean('Train/EpisodeReturn'):.2f} | srank {srank} | eval return "
            f"{mean('Eval/AverageReturn'):.2f}{seeds}")

  def _finish_iteration(self, state, buffer, iteration: int, carry: dict) -> list[dict]:
    """Each seed's metrics of the iteration: training's, then each agent's diagnostics
    and evaluation."""
    metrics = self._train_metrics(state, carry)
    agents = [("", state)] if not isinstance(state, tuple) else [("", state[0]),
                                                                 ("Passive/", state[1])]
    # Params/distance_from_init's reference, from the seed (so a resumed run has it):
    # the passive agent of "tandem" has its own init, a forked one descends from the
    # active agent's.
    initial = {"": self._initial_state.params}
    if isinstance(state, tuple):
      initial["Passive/"] = (self._initial_passive if self.tandem == "tandem"
                             else self._initial_state).params
    # A seed's buffer is diagnosed once it holds a transition (episode-start padding
    # makes the seeds' entry counts differ).
    counts = np.asarray(jax.device_get(self._uniform_view(buffer).add_count)).reshape(-1)
    diagnosed = counts > self.env.stack_size + self.agent.update_horizon
    for prefix, agent_state in agents:
      self._check_finite(iteration, prefix, metrics, agent_state.params)
      if diagnosed.any():
        diag_keys = self.seeds.stack([jax.random.fold_in(jax.random.fold_in(key, 1),
                                                         iteration) for key in self._keys])
        diag = self._diagnose(agent_state.params, agent_state.target_params,
                              self._uniform_view(buffer), diag_keys, initial[prefix])
        for seed_metrics, seed_diag, due in zip(
            metrics, self.seeds.split(jax.device_get(diag)), diagnosed):
          if due:
            seed_metrics.update({prefix + k: v for k, v in seed_diag.items()})
        self._check_finite(iteration, prefix, metrics, None)  # the Q-values
      if self.evaluation_steps > 0:
        try:
          evaluated = self._evaluate.evaluate_seeds(
              agent_state.params, iteration,
              should_stop=lambda: self._stop.requested is not None)
        except evaluation.Stopped:
          self._save_position(iteration, state, buffer, carry)
        for seed_metrics, result in zip(metrics, evaluated):
          seed_metrics.update({prefix + k: v for k, v in result.metrics().items()})
    self._last_metrics = [{k: float(v) for k, v in m.items()} for m in metrics]
    return self._last_metrics

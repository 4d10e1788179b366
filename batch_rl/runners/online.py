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
                    target_update_env_steps, prioritized_replay, tandem, fork_step) -> None:
  """ConfigError naming the first OnlineRunner binding out of its range."""
  if not updates_per_step > 0:
    raise ConfigError(f"`OnlineRunner.updates_per_step` must be > 0 (e.g. 0.25, 1, 8), "
                      f"got {updates_per_step}.")
  common.check_at_least_one(
      "OnlineRunner", num_iterations=num_iterations, training_steps=training_steps,
      num_eval_envs=num_eval_envs, epsilon_decay_period=epsilon_decay_period,
      diagnostics_batch_size=diagnostics_batch_size, keep_checkpoints=keep_checkpoints,
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


@gin.configurable(denylist=["base_dir"])
class OnlineRunner:
  """Online DQN-style training with n updates per environment step.

  Args:
    base_dir: this run's directory.
    game, domain: as FixedReplayRunner ("Pong"/"atari", "breakout"/"minatar").
    agent_fn: agent constructor taking `num_actions` (gin: `@DQNAgent`).
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
               compress_checkpoints: bool = True):
    common.check_base_dir(base_dir)
    _check_settings(
        updates_per_step=updates_per_step, num_iterations=num_iterations,
        training_steps=training_steps, num_eval_envs=num_eval_envs,
        epsilon_decay_period=epsilon_decay_period, evaluation_steps=evaluation_steps,
        eval_epsilon=eval_epsilon, epsilon_train=epsilon_train, srank_delta=srank_delta,
        diagnostics_batch_size=diagnostics_batch_size, keep_checkpoints=keep_checkpoints,
        target_update_env_steps=target_update_env_steps,
        prioritized_replay=prioritized_replay, tandem=tandem, fork_step=fork_step)
    self.base_dir = base_dir
    self.checkpoint_dir = os.path.join(base_dir, "checkpoints")
    run_dir.check_same_run(base_dir)
    self.num_iterations = num_iterations
    self.finished = common.is_finished(self.checkpoint_dir, num_iterations)
    if self.finished:  # nothing to build: run() says so and returns
      return
    self.env_name = f"{domain}:{game}"
    self.env = factory.create_environment(self.env_name, seed=common.seed_int(seed, 4))
    self.agent = common.build_agent(agent_fn, "OnlineRunner.agent_fn",
                                    num_actions=self.env.num_actions)
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
    self._last_metrics: dict[str, float] = {}  # the last logged iteration's
    self.state_shape = tuple(self.env.observation_shape) + (stack,)
    # The replay, the acting states and the network's dummy inputs take the
    # environment's dtypes (uint8 frames for Atari and MinAtar).
    self.observation_spec = factory.observation_spec_of(self.env)
    self._action_spec = factory.action_spec_of(self.env)
    self._state_spec = agent_common.state_spec(self.state_shape, self.observation_spec.dtype)
    self._key = jax.random.PRNGKey(seed)
    self._initial_state = common.init_agent_state(
        self.agent, jax.random.fold_in(self._key, 0), self._state_spec, self.env_name)
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
    self._zero_metrics = self._metric_zeros(self._train_step, self._initial_state)
    if tandem:
      self._initial_passive = self.agent.init(jax.random.fold_in(self._key, 7),
                                              self._state_spec)
      self._zero_tandem_metrics = self._metric_zeros(
          self._tandem_train_step, (self._initial_state, self._initial_passive))
      if tandem == "forked":  # the active agent's keys stay in the totals, unchanged
        self._zero_tandem_metrics = {**self._zero_metrics, **self._zero_tandem_metrics}
    self._step_fns: dict[int, Callable] = {}

    self._diagnose = make_diagnose(
        self.agent, common.make_sampler(circular_buffer.sample_transitions,
                                        diagnostics_batch_size, **shape), srank_delta)
    self._act = jax.jit(self.agent.act)
    self._evaluate = common.Evaluator(self.env_name, self.agent.act, seed=seed, key=self._key,
                                      num_envs=num_eval_envs, steps=evaluation_steps,
                                      epsilon=eval_epsilon)

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
          target_period, update_priorities=prioritized_buffer.update_priorities)
    else:
      self._create_buffer = functools.partial(circular_buffer.create, capacity,
                                              frame_shape, **dtypes)
      self._add = circular_buffer.add
      self._uniform_view = lambda buffer: buffer
      sample = common.make_sampler(circular_buffer.sample_transitions, self.agent.batch_size,
                                   **shape)
      self._train_step = learner.make_train_step(self.agent.loss, self.agent.optimizer,
                                                 sample, target_period)
      # Forked tandem freezes the active agent at the fork (Ostrovski et al. 2021): it
      # keeps acting with its fixed policy while the passive copy learns.
      self._tandem_train_step = learner.make_tandem_train_step(
          self.agent.loss, self.agent.optimizer, sample, target_period,
          train_active=self.tandem != "forked")

  def _metric_zeros(self, train_step, state):
    _, _, shapes = jax.eval_shape(train_step, state, jax.eval_shape(self._create_buffer))
    return {k: jnp.zeros(v.shape, jnp.float32) for k, v in shapes.items()}

  # ---------------------------------------------------------------- one env step
  def _step_fn(self, num_updates: int, tandem: bool = False):
    """Jitted add + `num_updates` fused updates + the next action, compiled per count.

    With `tandem` the carried state is (active, passive) and both learn.
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

      # Donated: the buffer is updated in place instead of copied every step.
      self._step_fns[num_updates, tandem] = jax.jit(step, donate_argnums=(0, 1, 2))
    return self._step_fns[num_updates, tandem]

  def _epsilon(self, total_steps: int) -> float:
    return linearly_decaying_epsilon(self.epsilon_decay_period, total_steps,
                                     self.min_replay_history, self.epsilon_train)

  # ---------------------------------------------------------------- phases
  def _iteration_start(self, iteration: int, carry: dict, tandem: bool) -> None:
    """Resets the per-iteration entries of `carry` for a new iteration."""
    totals = self._zero_tandem_metrics if tandem else self._zero_metrics
    carry.update(step=0, totals=jax.tree.map(jnp.copy, totals),  # donated to the step fn
                 key=jax.random.fold_in(jax.random.fold_in(self._key, 5), iteration),
                 returns=[], updates=0, passive_updates=0, seconds=0.0)

  def _train(self, state, buffer, iteration: int, carry: dict):
    """Acts and learns from `carry["step"]` to the end of the iteration.

    `state` is the active agent's TrainState, or (active, passive) once a passive
    agent exists (tandem from the start; forked from `fork_step` on). `carry` holds
    everything else the loop advances (the environment's last frame and stack, the
    next action, counters, the iteration's key, totals and episode returns), so a
    graceful stop after any step checkpoints the exact position. Returns (state, buffer).
    """
    tandem = isinstance(state, tuple)
    totals, key, start = carry["totals"], carry["key"], time.perf_counter()
    frame, stack, action = carry["frame"], carry["stack"], carry["action"]
    for index in range(carry["step"], self.training_steps):
      total = carry["env_steps"]
      next_frame, reward, terminal, truncated = self.env.step(int(action))
      carry["episode_return"] += reward
      carry["episode_length"] += 1
      episode_end = terminal or truncated
      if episode_end:
        carry["returns"].append(carry["episode_return"])
        carry["episode_return"], carry["episode_length"] = 0.0, 0
        next_frame = self.env.reset()
        next_stack = np.zeros_like(stack)
      else:
        next_stack = np.roll(stack, -1, axis=-1)
      next_stack[..., -1] = next_frame
      # Dopamine trains once its buffer holds more than min_replay_history entries;
      # here, from environment step min_replay_history on (padding entries not counted).
      num_updates = (updates_at_step(total, self.updates_per_step)
                     if total >= self.min_replay_history else 0)
      if self.tandem == "forked" and not tandem and total == self.fork_step:
        # The fork: the passive agent starts as a copy of the active one.
        totals = {**jax.device_get(self._zero_tandem_metrics), **jax.device_get(totals)}
        state, tandem = (state, jax.tree.map(jnp.copy, state)), True
      key, act_key = jax.random.split(key)
      state, buffer, totals, action = self._step_fn(num_updates, tandem)(
          state, buffer, totals, frame, action, reward, episode_end, next_stack[None],
          act_key, self._epsilon(total + 1))
      if not (tandem and self.tandem == "forked"):  # forked: the active agent is frozen
        carry["updates"] += num_updates
      carry["passive_updates"] += num_updates if tandem else 0
      frame, stack = next_frame, next_stack
      carry.update(env_steps=total + 1, step=index + 1, frame=frame, stack=stack,
                   action=action, key=key, totals=totals)
      if self._stop.requested and index + 1 < self.training_steps:
        carry["seconds"] += time.perf_counter() - start
        self._save_position(iteration, state, buffer, carry)
    carry["seconds"] += time.perf_counter() - start
    return state, buffer

  def _train_metrics(self, state, carry: dict) -> dict[str, float]:
    """The iteration's Train/ scalars from the totals and counters in `carry`."""
    tandem = isinstance(state, tuple)
    totals = jax.device_get(carry["totals"])
    updates, passive_updates = carry["updates"], carry["passive_updates"]
    metrics = {k: float(v) / (passive_updates if k.startswith("Passive/") else updates)
               for k, v in totals.items()
               if (passive_updates if k.startswith("Passive/") else updates)}
    returns = carry["returns"]
    metrics["Train/EpisodeReturn"] = float(np.mean(returns)) if returns else float("nan")
    metrics["Train/NumEpisodes"] = float(len(returns))
    metrics["Train/EnvSteps"] = float(carry["env_steps"])
    active = state[0] if tandem else state
    metrics["Train/GradientSteps"] = float(active.step)
    if tandem:
      metrics["Passive/Train/GradientSteps"] = float(state[1].step)
    metrics["Train/StepsPerSecond"] = self.training_steps / carry["seconds"]
    return metrics

  # ---------------------------------------------------------------- checkpoints
  def _checkpoint_tree(self, state, carry: dict) -> dict:
    """Everything but the replay buffer: agent(s), the loop's carry, the environment."""
    saved = {k: v for k, v in carry.items() if k != "returns"}
    saved["returns"] = np.asarray(carry["returns"], np.float64)
    saved["env"] = np.frombuffer(factory.snapshot_of(self.env), np.uint8)
    return {"agent": state, "tandem": np.bool_(isinstance(state, tuple)), "carry": saved}

  def _buffer_arrays(self, buffer) -> dict[str, np.ndarray]:
    """The buffer's arrays by flattened pytree path ("buffer/observation", ...)."""
    flat = flax.traverse_util.flatten_dict(
        flax.serialization.to_state_dict(jax.device_get(buffer)), sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}

  def _save(self, iteration: int, state, buffer, carry: dict) -> None:
    checkpointing.save(self.checkpoint_dir, iteration, self._checkpoint_tree(state, carry),
                       keep=self.keep_checkpoints, arrays=self._buffer_arrays(buffer),
                       compress=self.compress_checkpoints)

  def _save_position(self, iteration: int, state, buffer, carry: dict) -> None:
    """Checkpoints a position inside `iteration` and raises stop_signal.Preempted."""
    path = checkpointing.save_partial(
        self.checkpoint_dir, iteration, self._checkpoint_tree(state, carry),
        arrays=self._buffer_arrays(buffer), compress=self.compress_checkpoints)
    raise self._stop.preempted(
        f"in iteration {iteration + 1} of {self.num_iterations}, after {carry['step']} of "
        f"its {self.training_steps} environment steps", path)

  def _restore(self, saved: dict, arrays: dict[str, np.ndarray]):
    """(state, buffer, carry) from a checkpoint's state dict and arrays."""
    template = self._initial_state
    if bool(saved["tandem"]):
      template = (self._initial_state, self._initial_passive)
    state = jax.device_put(flax.serialization.from_state_dict(template, saved["agent"]))
    buffer = jax.device_put(flax.serialization.from_state_dict(
        jax.eval_shape(self._create_buffer),
        flax.traverse_util.unflatten_dict(arrays, sep="/")))
    carry = dict(saved["carry"])
    factory.restore_from(self.env, np.asarray(carry.pop("env")).tobytes())
    carry["returns"] = [float(r) for r in carry["returns"]]
    for name in ("step", "env_steps", "episode_length", "updates", "passive_updates"):
      carry[name] = int(carry[name])
    for name in ("episode_return", "seconds"):
      carry[name] = float(carry[name])
    carry["action"] = jnp.asarray(carry["action"])
    carry["key"] = jnp.asarray(carry["key"])
    zeros = self._zero_tandem_metrics if isinstance(state, tuple) else self._zero_metrics
    carry["totals"] = {k: jnp.asarray(carry["totals"][k], zeros[k].dtype) for k in zeros}
    return state, buffer, carry

  def _resume(self):
    """(first iteration, state, buffer, carry) from the newest checkpoint, or None."""
    done = checkpointing.list_iterations(self.checkpoint_dir)
    partial = checkpointing.list_partial(self.checkpoint_dir)
    last = done[-1] if done else -1
    if partial and partial[-1] == last + 1:
      saved = checkpointing.read_partial(self.checkpoint_dir, last + 1)
      arrays = checkpointing.read_arrays(self.checkpoint_dir, last + 1, partial=True)
      state, buffer, carry = self._restore(saved, arrays)
      log.info("Continuing iteration %d from its partial checkpoint (%d of %d environment "
               "steps done).", last + 2, carry["step"], self.training_steps)
      return last + 1, state, buffer, carry
    if not done:
      return None
    _, saved = checkpointing.read_state_dict(self.checkpoint_dir, last)
    state, buffer, carry = self._restore(saved, checkpointing.read_arrays(
        self.checkpoint_dir, last))
    self._iteration_start(last + 1, carry, isinstance(state, tuple))
    return last + 1, state, buffer, carry

  def _check_finite(self, iteration, prefix, metrics, params, last_metrics) -> None:
    """common.check_finite on one agent's tags (the passive agent's carry "Passive/")."""
    own = {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}
    last = {k[len(prefix):]: v for k, v in last_metrics.items() if k.startswith(prefix)}
    common.check_finite(iteration, self.num_iterations, own, params, last,
                        self.checkpoint_dir)

  def _write_dataset(self, buffer, iteration: int) -> None:
    arrays = circular_buffer.to_numpy(self._uniform_view(buffer))
    fmt.write_shard(os.path.join(self.base_dir, "replay_logs"), iteration,
                    observation=arrays["observation"], action=arrays["action"],
                    reward=arrays["reward"], terminal=arrays["terminal"],
                    add_count=arrays["add_count"], stack_size=self.env.stack_size,
                    observation_dtype=arrays["observation"].dtype,
                    action_shape=arrays["action"].shape[1:],
                    action_dtype=arrays["action"].dtype)

  # ---------------------------------------------------------------- driver
  def _fresh_start(self):
    """(state, buffer, carry) of a new run: empty buffer, first episode, first action."""
    state = jax.tree.map(jnp.copy, self._initial_state)  # donated to the step function
    if self.tandem == "tandem":
      state = (state, jax.tree.map(jnp.copy, self._initial_passive))
    buffer = self._create_buffer()
    first = self.env.reset()
    stack = np.zeros(self.state_shape, self.observation_spec.dtype)
    stack[..., -1] = first
    key = jax.random.fold_in(self._key, 6)
    action = self._act(self._initial_state.params, stack[None], key, 1.0)[0]
    carry = dict(frame=first, stack=stack, action=action, env_steps=0,
                 episode_return=0.0, episode_length=0)
    self._iteration_start(0, carry, isinstance(state, tuple))
    return state, buffer, carry

  def run(self, on_iteration: Optional[Callable[[int, dict[str, float]], None]] = None
          ) -> dict[str, float]:
    """Trains to `num_iterations`, resuming from base_dir's newest checkpoint (or the
    partial one of a graceful stop); returns the last iteration's metrics.

    Args:
      on_iteration: optional callback, called with (iteration, metrics) after each
        iteration is logged and checkpointed (experiments time iterations with it).
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
      dropped = summary_writer.drop_events_after(self.base_dir, start_iteration - 1)
      if dropped:
        log.info("Removed %d TensorBoard events of iterations >= %d left by an interrupted "
                 "run.", dropped, start_iteration)
      log.info("Resuming %s at iteration %d, environment step %d.", self.base_dir,
               start_iteration + 1, carry["env_steps"])
    writer = summary_writer.SummaryWriter(self.base_dir)
    if resumed is None:
      common.write_run_config(self.base_dir, [writer], {"Config/environment": environment})
    log.info("Environment: %s", environment)
    metrics, progress = {}, common.Progress(self.num_iterations)
    with self._stop:
      for iteration in range(start_iteration, self.num_iterations):
        progress.start()
        state, buffer = self._train(state, buffer, iteration, carry)
        metrics = self._finish_iteration(state, buffer, iteration, carry)
        writer.scalars(iteration, metrics)
        if self.log_dataset:  # before the checkpoint: a rerun rewrites it identically
          self._write_dataset(buffer, iteration)
        self._save(iteration, state, buffer, carry)
        if on_iteration is not None:
          on_iteration(iteration, metrics)
        progress.done(iteration + 1, (
            f"{metrics['Train/StepsPerSecond']:.0f} env steps/s | "
            f"{metrics['Train/GradientSteps']:.0f} updates | train return "
            f"{metrics['Train/EpisodeReturn']:.2f} | srank {metrics.get('Rank/srank', '-')} | "
            f"eval return {metrics.get('Eval/AverageReturn', float('nan')):.2f}"))
        self._iteration_start(iteration + 1, carry, isinstance(state, tuple))
    writer.close()
    return metrics

  def _finish_iteration(self, state, buffer, iteration: int, carry: dict) -> dict:
    """The iteration's metrics: training's, then each agent's diagnostics and evaluation."""
    metrics = self._train_metrics(state, carry)
    agents = [("", state)] if not isinstance(state, tuple) else [("", state[0]),
                                                                 ("Passive/", state[1])]
    for prefix, agent_state in agents:
      self._check_finite(iteration, prefix, metrics, agent_state.params, self._last_metrics)
      if int(buffer.add_count) > self.env.stack_size + self.agent.update_horizon:
        diag_key = jax.random.fold_in(jax.random.fold_in(self._key, 1), iteration)
        diag = self._diagnose(agent_state.params, agent_state.target_params,
                              self._uniform_view(buffer), diag_key)
        metrics.update({prefix + k: v for k, v in jax.device_get(diag).items()})
        self._check_finite(iteration, prefix, metrics, None, self._last_metrics)  # Q-values
      if self.evaluation_steps > 0:
        try:
          evaluated = self._evaluate(agent_state.params, iteration,
                                     should_stop=lambda: self._stop.requested is not None)
        except evaluation.Stopped:
          self._save_position(iteration, state, buffer, carry)
        metrics.update({prefix + k: v for k, v in evaluated.metrics().items()})
    self._last_metrics = {k: float(v) for k, v in metrics.items()}
    return self._last_metrics

"""Online training: the agent acts, fills a device replay buffer, and updates n times
per environment step (IUP Section 3 / Appendix A.2: n = 0.25 is Dopamine's DQN, one
update every 4 steps; n = 1, 4, 8, 16 reuse each datum more).

Each environment step is one jitted call: add (o_t, a_t, r_t, terminal_t) to the
buffer (Dopamine's add semantics), run the updates due at this step fused (the same
pure train step as offline, sampling from the buffer inside jit), and pick a_{t+1}
epsilon-greedily on the next state. The environment itself runs on the host.

Training acts in ONE environment, as Dopamine does (one stream of transitions, added
in order, that the replay's n-step returns and the logged dataset follow). Acting in
several environments at once would not pay: on MinAtar Breakout at n = 1, env.step
takes 59 us of a 4.3 ms compiled training step (1.4%; 2 CPU cores, batch 128; 86 us of
11.2 ms, 0.8%, with the cores shared; `python benchmarks/online_throughput.py` prints
the figure), the rest being the fused jitted add + update + act call. Evaluation, where
no replay is involved, does step several environments in lockstep (`num_eval_envs`).

Dopamine's online defaults: replay capacity 1M, training starts after 20,000 steps,
epsilon decays linearly from 1 to 0.01 over 250,000 steps after those (Dopamine's
`linearly_decaying_epsilon` with warmup), the target network is copied every 8,000
environment steps, an iteration is 250,000 training steps then 125,000 evaluation
steps. At the end of an episode (game over or the 27,000-step limit) the last entry is
stored as terminal, as Dopamine's `end_episode` did.

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

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import checkpointing
from batch_rl import summary_writer
from batch_rl.agents import common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.replay import circular_buffer
from batch_rl.replay import dqn_replay_format as fmt
from batch_rl.replay import prioritized_buffer
from batch_rl.run_experiment import (ConfigError, _format_duration, _seed_int, make_diagnose,
                                     write_run_config)
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
    keep_checkpoints: agent-state checkpoints kept.
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
               fork_step: int = 0, keep_checkpoints: int = 2):
    if not base_dir:
      raise ConfigError("--base_dir is required: the directory this run writes to.")
    if not updates_per_step > 0:
      raise ConfigError(f"`OnlineRunner.updates_per_step` must be > 0 (e.g. 0.25, 1, 8), "
                        f"got {updates_per_step}.")
    for name, value in (("num_iterations", num_iterations), ("training_steps", training_steps),
                        ("num_eval_envs", num_eval_envs),
                        ("epsilon_decay_period", epsilon_decay_period)):
      if value < 1:
        raise ConfigError(f"`OnlineRunner.{name}` must be >= 1, got {value}.")
    self.base_dir = base_dir
    self.checkpoint_dir = os.path.join(base_dir, "checkpoints")
    self.env_name = f"{domain}:{game}"
    self.env = factory.create_environment(self.env_name, seed=_seed_int(seed, 4))
    self.agent = agent_fn(num_actions=self.env.num_actions)
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
    self.num_iterations = num_iterations
    self.training_steps = training_steps
    self.evaluation_steps = evaluation_steps
    self.eval_epsilon = eval_epsilon
    self.num_eval_envs = num_eval_envs
    self.updates_per_step = updates_per_step
    self.min_replay_history = min_replay_history
    self.replay_capacity = replay_capacity
    self.epsilon_train = epsilon_train
    self.epsilon_decay_period = epsilon_decay_period
    self.clip_rewards = clip_rewards
    self.seed = seed
    self.log_dataset = log_dataset
    self.keep_checkpoints = keep_checkpoints
    self.state_shape = tuple(self.env.observation_shape) + (stack,)
    self._key = jax.random.PRNGKey(seed)
    try:
      self._initial_state = self.agent.init(jax.random.fold_in(self._key, 0), self.state_shape)
    except common.RepresentationError as e:
      raise ConfigError(str(e)) from e
    except ValueError as e:
      raise ConfigError(f"The network of {type(self.agent).__name__} does not take the "
                        f"states of {self.env_name} (shape {self.state_shape}): {e}") from e
    if prioritized_replay and not getattr(self.agent, "supports_prioritized_replay", False):
      raise ConfigError(f"`OnlineRunner.prioritized_replay` needs an agent whose loss takes "
                        f"importance weights (DQNAgent, C51Agent), not "
                        f"{type(self.agent).__name__}.")
    self.prioritized_replay = prioritized_replay
    if tandem not in (None, "tandem", "forked"):
      raise ConfigError(f"`OnlineRunner.tandem` must be None, 'tandem' or 'forked', got "
                        f"{tandem!r}.")
    if tandem and prioritized_replay:
      raise ConfigError("`OnlineRunner.tandem` runs with uniform replay only (whose "
                        "priorities would the passive agent follow?); unset "
                        "`OnlineRunner.prioritized_replay`.")
    if tandem == "forked" and not 0 <= fork_step:
      raise ConfigError(f"`OnlineRunner.fork_step` must be >= 0, got {fork_step}.")
    self.tandem, self.fork_step = tandem, fork_step
    target_period = self.agent.target_update_period
    if target_update_env_steps is not None:
      target_period = max(1, round(target_update_env_steps * updates_per_step))
    self.target_update_period = target_period

    frame_shape = tuple(self.env.observation_shape)
    if prioritized_replay:
      self._create_buffer = functools.partial(prioritized_buffer.create, replay_capacity,
                                              frame_shape)
      self._add = prioritized_buffer.add
      self._uniform_view = lambda pbuffer: pbuffer.buffer

      def sample(key, pbuffer):
        return prioritized_buffer.sample_transitions(key, pbuffer, self.agent.batch_size,
                                                     stack_size=stack, update_horizon=n,
                                                     gamma=gamma)

      self._train_step = learner.make_prioritized_train_step(
          self.agent.loss, self.agent.optimizer, sample,
          prioritized_buffer.update_priorities, target_period)
    else:
      self._create_buffer = functools.partial(circular_buffer.create, replay_capacity,
                                              frame_shape)
      self._add = circular_buffer.add
      self._uniform_view = lambda buffer: buffer

      def sample(key, buffer):
        return circular_buffer.sample_transitions(key, buffer, self.agent.batch_size,
                                                  stack_size=stack, update_horizon=n,
                                                  gamma=gamma)

      uniform_step = learner.make_train_step(self.agent.loss, self.agent.optimizer, sample,
                                             target_period)

      def train_step(state, buffer):
        state, metrics = uniform_step(state, buffer)
        return state, buffer, metrics

      # Forked tandem freezes the active agent at the fork (Ostrovski et al. 2021): it
      # keeps acting with its fixed policy while the passive copy learns.
      tandem_step = learner.make_tandem_train_step(self.agent.loss, self.agent.optimizer,
                                                   sample, target_period,
                                                   train_active=tandem != "forked")

      def tandem_train_step(states, buffer):
        states, metrics = tandem_step(states, buffer)
        return states, buffer, metrics

      self._train_step = train_step
      self._tandem_train_step = tandem_train_step
    self._zero_metrics = self._metric_zeros(self._train_step, self._initial_state)
    if tandem:
      self._initial_passive = self.agent.init(jax.random.fold_in(self._key, 7),
                                              self.state_shape)
      self._zero_tandem_metrics = self._metric_zeros(
          self._tandem_train_step, (self._initial_state, self._initial_passive))
      if tandem == "forked":  # the active agent's keys stay in the totals, unchanged
        self._zero_tandem_metrics = {**self._zero_metrics, **self._zero_tandem_metrics}
    self._step_fns: dict[int, Callable] = {}

    def sample_diagnostic_batch(key, buffer):
      return circular_buffer.sample_transitions(key, buffer, diagnostics_batch_size,
                                                stack_size=stack, update_horizon=n,
                                                gamma=gamma)

    self._diagnose = make_diagnose(self.agent, sample_diagnostic_batch, srank_delta)
    self._act = jax.jit(self.agent.act)

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
  def _train(self, state, buffer, iteration: int, carry: dict):
    """One iteration of acting and learning; returns (state, buffer, metrics).

    `state` is the active agent's TrainState, or (active, passive) once a passive
    agent exists (tandem from the start; forked from `fork_step` on).
    """
    tandem = isinstance(state, tuple)
    totals = jax.tree.map(jnp.copy, self._zero_tandem_metrics if tandem
                          else self._zero_metrics)  # donated to the step function
    key = jax.random.fold_in(jax.random.fold_in(self._key, 5), iteration)
    returns, updates, passive_updates = [], 0, 0
    frame, stack, action = carry["frame"], carry["stack"], carry["action"]
    for _ in range(self.training_steps):
      total = carry["env_steps"]
      next_frame, reward, terminal, truncated = self.env.step(int(action))
      carry["episode_return"] += reward
      carry["episode_length"] += 1
      episode_end = terminal or truncated
      if episode_end:
        returns.append(carry["episode_return"])
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
        updates += num_updates
      passive_updates += num_updates if tandem else 0
      frame, stack = next_frame, next_stack
      carry["env_steps"] = total + 1
    carry.update(frame=frame, stack=stack, action=action)
    totals = jax.device_get(totals)
    metrics = {k: float(v) / (passive_updates if k.startswith("Passive/") else updates)
               for k, v in totals.items()
               if (passive_updates if k.startswith("Passive/") else updates)}
    metrics["Train/EpisodeReturn"] = float(np.mean(returns)) if returns else float("nan")
    metrics["Train/NumEpisodes"] = float(len(returns))
    metrics["Train/EnvSteps"] = float(carry["env_steps"])
    active = state[0] if tandem else state
    metrics["Train/GradientSteps"] = float(active.step)
    if tandem:
      metrics["Passive/Train/GradientSteps"] = float(state[1].step)
    return state, buffer, metrics

  def _evaluate(self, params, iteration: int) -> evaluation.EvalResult:
    envs = [factory.create_environment(self.env_name, seed=_seed_int(self.seed, 3, iteration, i))
            for i in range(self.num_eval_envs)]
    key = jax.random.fold_in(jax.random.fold_in(self._key, 2), iteration)
    policy = lambda states, k: self._act(params, states, k, self.eval_epsilon)
    return evaluation.evaluate(policy, envs, self.evaluation_steps, key)

  def _write_dataset(self, buffer, iteration: int) -> None:
    arrays = circular_buffer.to_numpy(self._uniform_view(buffer))
    fmt.write_shard(os.path.join(self.base_dir, "replay_logs"), iteration,
                    observation=arrays["observation"], action=arrays["action"],
                    reward=arrays["reward"], terminal=arrays["terminal"],
                    add_count=arrays["add_count"], stack_size=self.env.stack_size)

  # ---------------------------------------------------------------- driver
  def run(self, on_iteration: Optional[Callable[[int, dict[str, float]], None]] = None
          ) -> dict[str, float]:
    """Trains `num_iterations` iterations; returns the last iteration's metrics.

    Args:
      on_iteration: optional callback, called with (iteration, metrics) after each
        iteration is logged and checkpointed (experiments time iterations with it).
    """
    if checkpointing.list_iterations(self.checkpoint_dir):
      raise ConfigError(f"{self.base_dir} holds checkpoints of an earlier online run; online "
                        "runs do not resume (the replay buffer is not checkpointed). Use a "
                        "new --base_dir.")
    gfile().makedirs(self.base_dir)
    writer = summary_writer.SummaryWriter(self.base_dir)
    environment = factory.describe_environment(self.env_name, self.env)
    write_run_config(self.base_dir, writer, {"Config/environment": environment})
    log.info("Environment: %s", environment)
    state = jax.tree.map(jnp.copy, self._initial_state)  # donated to the step function
    if self.tandem == "tandem":
      state = (state, jax.tree.map(jnp.copy, self._initial_passive))
    buffer = self._create_buffer()
    first = self.env.reset()
    stack = np.zeros(self.state_shape, np.uint8)
    stack[..., -1] = first
    key = jax.random.fold_in(self._key, 6)
    action = int(self._act(self._initial_state.params, stack[None], key, 1.0)[0])
    carry = dict(frame=first, stack=stack, action=action, env_steps=0,
                 episode_return=0.0, episode_length=0)
    metrics, durations = {}, []
    for iteration in range(self.num_iterations):
      start = time.perf_counter()
      state, buffer, metrics = self._train(state, buffer, iteration, carry)
      train_time = time.perf_counter() - start
      metrics["Train/StepsPerSecond"] = self.training_steps / train_time
      agents = [("", state)] if not isinstance(state, tuple) else [("", state[0]),
                                                                   ("Passive/", state[1])]
      for prefix, agent_state in agents:
        if int(buffer.add_count) > self.env.stack_size + self.agent.update_horizon:
          diag_key = jax.random.fold_in(jax.random.fold_in(self._key, 1), iteration)
          diag = self._diagnose(agent_state.params, agent_state.target_params,
                                self._uniform_view(buffer), diag_key)
          metrics.update({prefix + k: v for k, v in jax.device_get(diag).items()})
        if self.evaluation_steps > 0:
          evaluated = self._evaluate(agent_state.params, iteration).metrics()
          metrics.update({prefix + k: v for k, v in evaluated.items()})
      metrics = {k: float(v) for k, v in metrics.items()}
      writer.scalars(iteration, metrics)
      checkpointing.save(self.checkpoint_dir, iteration, state, keep=self.keep_checkpoints)
      if self.log_dataset:
        self._write_dataset(buffer, iteration)
      durations.append(time.perf_counter() - start)
      if on_iteration is not None:
        on_iteration(iteration, metrics)
      eta = np.mean(durations) * (self.num_iterations - iteration - 1)
      log.info("iteration %d/%d | %.0f env steps/s | %d updates | train return %.2f | "
               "srank %s | eval return %.2f | ETA %s", iteration + 1, self.num_iterations,
               metrics["Train/StepsPerSecond"], metrics["Train/GradientSteps"],
               metrics["Train/EpisodeReturn"], metrics.get("Rank/srank", "-"),
               metrics.get("Eval/AverageReturn", float("nan")), _format_duration(eta))
    writer.close()
    return metrics

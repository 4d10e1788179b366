"""The Runner: iterations of (train K-step chunks, diagnose, evaluate, log, checkpoint).

Everything that can fail on user input (gin bindings, the replay directory, shapes that
do not fit the network) fails while the Runner is constructed, before anything is
written to base_dir. `run()` then creates base_dir, resumes from its last checkpoint if
there is one, and writes one TensorBoard step per iteration.
"""
import dataclasses
import logging
import os
import time
from typing import Callable, Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import checkpointing
from batch_rl import diagnostics
from batch_rl import losses
from batch_rl import regularizers
from batch_rl import summary_writer
from batch_rl.agents import common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.replay import fixed_replay
from batch_rl.replay import sampler
from batch_rl.replay import streaming
from batch_rl.tf_utils import gfile

log = logging.getLogger("batch_rl")

# Gradient steps fused into one jit call when `FixedReplayRunner.fused_steps` is None.
# XLA's CPU backend runs a lax.scan of a conv-net update ~6x slower than the same
# update called plainly (Nature DQN: 2.2 vs 12.8 steps/s, benchmarks/throughput.py),
# so CPU calls one unscanned step per call; accelerators fuse K steps.
DEFAULT_FUSED_STEPS = {"cpu": 1, "gpu": 250, "tpu": 250}


class ConfigError(ValueError):
  """A user-facing configuration problem, reported before training starts."""


def _format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _seed_int(*entropy: int) -> int:
  return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] % (2**31 - 1))


def make_diagnose(agent, sample_fn: Callable, srank_delta: float):
  """Jitted `(params, target_params, data, key) -> {tag: value}`, the per-iteration
  diagnostics of every runner, on the batch `sample_fn(key, data)` draws.

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

  return jax.jit(diagnose)


def write_run_config(base_dir: str, writer, texts: dict[str, str]) -> None:
  """Writes the operative gin config to <base_dir>/config.gin (atomically) and, with
  `texts` (tag -> line: data, environment and its ROM), as TensorBoard text."""
  config = gin.operative_config_str()
  path = os.path.join(base_dir, "config.gin")
  with gfile().GFile(path + ".tmp", "w") as f:
    f.write(config)
  gfile().rename(path + ".tmp", path, overwrite=True)
  writer.text("Config/gin", "```\n" + config + "\n```")
  for tag, text in texts.items():
    writer.text(tag, text)


@gin.configurable(denylist=["base_dir"])
class FixedReplayRunner:
  """Offline training on fixed DQN Replay data with online evaluation.

  Args:
    base_dir: this run's directory: TensorBoard events, config.gin, checkpoints/.
    game: game name as in the dataset and the environment ("Pong"; "breakout" for
      MinAtar).
    domain: environment family, "atari" or "minatar".
    agent_fn: agent constructor taking `num_actions` (gin: `@DQNAgent`).
    replay_fn: loads the offline data (gin: `@load_fixed_replay`).
    num_iterations: training iterations (200 in the IUP paper's offline Atari runs).
    training_steps: gradient steps per iteration (62,500 = 250K env steps / 4).
    evaluation_steps: agent steps of each evaluation phase (125,000).
    eval_epsilon: epsilon of the epsilon-greedy evaluation policy.
    num_eval_envs: environments stepped in lockstep during evaluation.
    seed: seeds the network init, minibatch sampling, evaluation and (unless
      data_seed is set) the choice of checkpoints and data subsample.
    data_seed: seed of the data choice, if it should differ from `seed`.
    diagnostics_batch_size: dataset transitions on which srank etc. are computed.
    srank_delta: delta of srank_delta (0.01).
    fused_steps: gradient steps per jit call (lax.scan); None = per-backend default.
    scan_unroll: lax.scan unroll of the fused steps.
    keep_checkpoints: how many iteration checkpoints to keep.
    stream_window_transitions: None (default) puts the whole dataset on the device;
      a number streams it from the store (`load_fixed_replay.store_dir`) through a
      device window of that many transitions, refilled by a host thread
      (replay/streaming.py; `StreamingReplay.*` bindings tune it).
  """

  def __init__(self, base_dir: str, game: str = "Pong", domain: str = "atari",
               agent_fn: Callable[..., dqn.DQNAgent] = dqn.DQNAgent,
               replay_fn: Callable[..., fixed_replay.FixedReplay] = fixed_replay.load_fixed_replay,
               num_iterations: int = 200, training_steps: int = 62_500,
               evaluation_steps: int = 125_000, eval_epsilon: float = 0.001,
               num_eval_envs: int = 1, seed: int = 0, data_seed: Optional[int] = None,
               diagnostics_batch_size: int = 2048, srank_delta: float = 0.01,
               fused_steps: Optional[int] = None, scan_unroll: int = 1,
               keep_checkpoints: int = 2, stream_window_transitions: Optional[int] = None):
    if not base_dir:
      raise ConfigError("--base_dir is required: the directory this run writes to.")
    for name, value in (("num_iterations", num_iterations), ("training_steps", training_steps),
                        ("num_eval_envs", num_eval_envs)):
      if value < 1:
        raise ConfigError(f"`FixedReplayRunner.{name}` must be >= 1, got {value}.")
    self.base_dir = base_dir
    self.checkpoint_dir = os.path.join(base_dir, "checkpoints")
    self.env_name = f"{domain}:{game}"
    self.num_iterations = num_iterations
    self.training_steps = training_steps
    self.evaluation_steps = evaluation_steps
    self.eval_epsilon = eval_epsilon
    self.num_eval_envs = num_eval_envs
    self.seed = seed
    self.keep_checkpoints = keep_checkpoints

    probe_env = factory.create_environment(self.env_name, seed=seed)
    self.agent = agent_fn(num_actions=probe_env.num_actions)
    data_seed = seed if data_seed is None else data_seed
    stream = {} if stream_window_transitions is None else {"stream": True}
    self.replay = replay_fn(game=game, seed=data_seed, stack_size=probe_env.stack_size,
                            update_horizon=self.agent.update_horizon, gamma=self.agent.gamma,
                            **stream)
    self._check_shapes(probe_env)
    self.environment_description = factory.describe_environment(self.env_name, probe_env)
    self._key = jax.random.PRNGKey(seed)
    try:
      self._initial_state = self.agent.init(jax.random.fold_in(self._key, 0),
                                            self.replay.state_shape)
    except common.RepresentationError as e:
      raise ConfigError(str(e)) from e
    except ValueError as e:
      raise ConfigError(
          f"The network of {type(self.agent).__name__} does not take the states of "
          f"{self.replay.replay_dir} (shape {self.replay.state_shape}): {e} Bind "
          "`DQNAgent.network` to a network for this data.") from e

    backend = jax.default_backend()
    self.fused_steps = min(fused_steps or DEFAULT_FUSED_STEPS.get(backend, 1), training_steps)
    self.scan_unroll = scan_unroll
    # On CPU the device arrays alias the (aligned) host arrays; elsewhere dropping the
    # host copy here frees it, so the data is held once either way.
    self._stream = None
    if stream_window_transitions is not None:
      try:
        self._stream = streaming.StreamingReplay(
            self.replay, stream_window_transitions, seed=data_seed,
            default_refresh_every=self.fused_steps)
      except ValueError as e:
        raise ConfigError(str(e)) from e
      self._data = self._stream.start(0)
    else:
      self.replay = dataclasses.replace(self.replay, arrays=jax.device_put(self.replay.arrays))
      self._data = self.replay.arrays
    gamma, n, stack = self.agent.gamma, self.agent.update_horizon, self.replay.stack_size

    def sample(key, data):
      return sampler.sample_transitions(key, data, self.agent.batch_size, stack_size=stack,
                                        update_horizon=n, gamma=gamma)

    step = learner.make_train_step(self.agent.loss, self.agent.optimizer, sample,
                                   self.agent.target_update_period)
    donate = backend != "cpu"  # XLA:CPU cannot donate buffers; it would only warn.
    num_calls, remainder = divmod(training_steps, self.fused_steps)
    self._schedule = [(learner.make_train_steps(step, self.fused_steps, scan_unroll, donate),
                       num_calls)]
    self._steps_per_call = [self.fused_steps]
    if remainder:
      self._schedule.append((learner.make_train_steps(step, remainder, scan_unroll, donate), 1))
      self._steps_per_call.append(remainder)
    self._zero_metrics = learner.zero_metrics(step, self._initial_state, self._data)

    def sample_diagnostic_batch(key, data):
      return sampler.sample_transitions(key, data, diagnostics_batch_size, stack_size=stack,
                                        update_horizon=n, gamma=gamma)

    self._diagnose = make_diagnose(self.agent, sample_diagnostic_batch, srank_delta)
    self._act = jax.jit(self.agent.act)

  def _check_shapes(self, env: factory.Environment) -> None:
    if tuple(env.observation_shape) != tuple(self.replay.frame_shape):
      raise ConfigError(
          f"The frames in {self.replay.replay_dir} have shape {self.replay.frame_shape} but "
          f"environment {self.env_name!r} produces {tuple(env.observation_shape)}. Check "
          "`FixedReplayRunner.domain`/`game` against the data "
          "(`load_fixed_replay.replay_dir`).")

  # ---------------------------------------------------------------- phases
  def _train(self, state):
    totals = self._zero_metrics
    for (train_steps, calls), steps in zip(self._schedule, self._steps_per_call):
      for _ in range(calls):
        if self._stream is not None:  # swaps in prefetched chunks when a refresh is due
          self._data = self._stream.advance(steps)
        state, totals = train_steps(state, self._data, totals)
    totals = jax.device_get(totals)  # the iteration's only host sync of train metrics
    return state, {k: float(v) / self.training_steps for k, v in totals.items()}

  def _evaluate(self, params, iteration: int) -> evaluation.EvalResult:
    envs = [factory.create_environment(self.env_name,
                                       seed=_seed_int(self.seed, 3, iteration, i))
            for i in range(self.num_eval_envs)]
    key = jax.random.fold_in(jax.random.fold_in(self._key, 2), iteration)
    policy = lambda states, k: self._act(params, states, k, self.eval_epsilon)
    return evaluation.evaluate(policy, envs, self.evaluation_steps, key)

  def run_iteration(self, state, iteration: int):
    """One iteration; returns (state, metrics with the iteration's TensorBoard scalars)."""
    start = time.perf_counter()
    state, metrics = self._train(state)
    train_time = time.perf_counter() - start
    metrics["Train/StepsPerSecond"] = self.training_steps / train_time
    if self._stream is not None:
      metrics["Data/StreamStalls"] = self._stream.pop_stalls()
    diag_key = jax.random.fold_in(jax.random.fold_in(self._key, 1), iteration)
    metrics.update(jax.device_get(self._diagnose(state.params, state.target_params,
                                                 self._data, diag_key)))
    if self.evaluation_steps > 0:
      metrics.update(self._evaluate(state.params, iteration).metrics())
    return state, {k: float(v) for k, v in metrics.items()}

  # ---------------------------------------------------------------- driver
  def _compile(self, state):
    start = time.perf_counter()
    self._schedule = [(fn.lower(state, self._data, self._zero_metrics).compile(), calls)
                      for fn, calls in self._schedule]
    log.info("Compiled the training loop (%d fused steps per call) in %.1f s.",
             self.fused_steps, time.perf_counter() - start)

  def _write_config(self, writer) -> None:
    write_run_config(self.base_dir, writer, {"Config/data": self.replay.describe(),
                                             "Config/environment": self.environment_description})

  def run(self) -> dict[str, float]:
    """Trains to `num_iterations`, resuming if base_dir holds a checkpoint.

    Returns the metrics of the last iteration run (empty if already complete).
    """
    gfile().makedirs(self.base_dir)
    restored = checkpointing.restore_latest(self.checkpoint_dir, self._initial_state)
    start_iteration, state = (0, self._initial_state) if restored is None else (
        restored[0] + 1, restored[1])
    dropped = summary_writer.drop_events_after(self.base_dir, start_iteration - 1)
    if dropped:
      log.info("Removed %d TensorBoard events of iterations >= %d left by an interrupted run.",
               dropped, start_iteration)
    writer = summary_writer.SummaryWriter(self.base_dir)
    if start_iteration == 0:
      self._write_config(writer)
    else:
      log.info("Resuming %s from iteration %d.", self.base_dir, start_iteration)
    log.info("Data: %s", self.replay.describe())
    log.info("Environment: %s", self.environment_description)
    if self._stream is not None:
      log.info("Streaming: %s", self._stream.describe())
      if start_iteration > 0:  # the window this step had in the interrupted run
        self._data = self._stream.start(start_iteration * self.training_steps)
    state = jax.device_put(state)
    self._compile(state)
    metrics, durations = {}, []
    for iteration in range(start_iteration, self.num_iterations):
      start = time.perf_counter()
      state, metrics = self.run_iteration(state, iteration)
      writer.scalars(iteration, metrics)
      checkpointing.save(self.checkpoint_dir, iteration, state, keep=self.keep_checkpoints)
      durations.append(time.perf_counter() - start)
      eta = np.mean(durations) * (self.num_iterations - iteration - 1)
      log.info(
          "iteration %d/%d | %.0f steps/s | loss %.4g | srank %d | return %.2f (%d episodes) "
          "| %.1f s | ETA %s", iteration + 1, self.num_iterations,
          metrics["Train/StepsPerSecond"], metrics["Train/Loss"], metrics["Rank/srank"],
          metrics.get("Eval/AverageReturn", float("nan")),
          metrics.get("Eval/NumEpisodes", 0), durations[-1], _format_duration(eta))
    writer.close()
    if self._stream is not None:
      self._stream.close()
      log.info("Streaming: %d refreshes, %d stalls (%.1f s).", self._stream.refreshes,
               self._stream.stalls, self._stream.stall_seconds)
    return metrics


@gin.configurable(denylist=["base_dir"])
def create_runner(base_dir: str, runner_fn: Callable[..., object] = FixedReplayRunner):
  """The runner `train.py` builds: `create_runner.runner_fn = @SomeRunner` in gin.

  Every runner takes `base_dir` and offers `run()`; FixedReplayRunner (offline, the
  default) is the one defined here.
  """
  return runner_fn(base_dir=base_dir)


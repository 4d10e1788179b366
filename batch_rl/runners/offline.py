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
from typing import Callable, Optional, Sequence

import flax.serialization
import gin
import jax
import numpy as np

from batch_rl import checkpointing
from batch_rl import diagnostics
from batch_rl import summary_writer
from batch_rl import validation
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import streaming
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.environments import specs
from batch_rl.replay import sampler
from batch_rl.runners import common
from batch_rl.runners import device_memory
from batch_rl.runners import perturbed_evaluation as perturbed_lib
from batch_rl.runners import run_dir
from batch_rl.runners import seed_axis
from batch_rl.runners import stop_signal
from batch_rl.runners.common import ConfigError
from batch_rl.runners.diagnose import make_diagnose
from batch_rl.tf_utils import gfile

log = logging.getLogger("batch_rl")

GRAM_STATES = 64  # states of the Features/gram image
# Gradient steps fused into one jit call when `FixedReplayRunner.fused_steps` is None.
# XLA's CPU backend runs a lax.scan of a conv-net update several times slower than the
# same update called plainly (benchmarks/throughput.py prints both), so CPU calls one
# unscanned step per call; accelerators fuse K steps.
DEFAULT_FUSED_STEPS = {"cpu": 1, "gpu": 250, "tpu": 250}
# What to do with dataset actions outside a continuous action box.
OUT_OF_BOX_POLICIES = ("refuse", "clip")


@gin.configurable(denylist=["base_dir"])
class FixedReplayRunner:
  """Offline training on fixed DQN Replay data with online evaluation.

  Args:
    base_dir: this run's directory: TensorBoard events, config.gin, checkpoints/.
    game: game name as in the dataset and the environment ("Pong"; "breakout" for
      MinAtar).
    domain: environment family, "atari" or "minatar".
    agent_fn: agent constructor taking `num_actions` (gin: `@DQNAgent`), or for an
      environment with continuous actions `action_spec` (`@CQLSACAgent`).
    replay_fn: loads the offline data (gin: `@load_fixed_replay`).
    num_iterations: training iterations (200 in the IUP paper's offline Atari runs).
    training_steps: gradient steps per iteration (62,500 = 250K env steps / 4).
    evaluation_steps: agent steps of each evaluation phase (125,000).
    eval_epsilon: epsilon of the epsilon-greedy evaluation policy.
    num_eval_envs: environments stepped in lockstep during evaluation.
    seed: seeds the network init, minibatch sampling, evaluation and (unless
      data_seed is set) the choice of checkpoints and data subsample.
    data_seed: seed of the data choice, if it should differ from `seed`.
    num_seeds: seeds seed, ..., seed + num_seeds - 1 trained together in one jitted
      program (vmapped over a leading seed axis), sharing the data (held once, chosen
      by data_seed, else by `seed`); seed k writes the run directory
      <base_dir>/seed_<k> that a solo run with `seed = k` would (runners/seed_axis.py).
    learning_rates: if given, the program's members are these learning rates x the
      seeds, each in <base_dir>/lr_<rate>/seed_<k>, as a solo run with
      `create_optimizer.learning_rate = rate` and `seed = k` (runners/seed_axis.py).
    diagnostics_batch_size: dataset transitions on which srank etc. are computed.
    srank_delta: delta of srank_delta (0.01).
    fused_steps: gradient steps per jit call (lax.scan); None = per-backend default.
    scan_unroll: lax.scan unroll of the fused steps.
    keep_checkpoints: how many iteration checkpoints to keep.
    stream_window_transitions: None (default) puts the whole dataset on the device;
      a number streams it from the store (`load_fixed_replay.store_dir`) through a
      device window of that many transitions, refilled by a host thread
      (datasets/streaming.py; `StreamingReplay.*` bindings tune it).
    perturbed_evaluation: None (default), or a `PerturbedEvaluation` (gin:
      `@PerturbedEvaluation()`): evaluations with the states the agent sees perturbed,
      at several levels, logged as Eval/Perturbed/<kind>/<level>
      (runners/perturbed_evaluation.py).
    gram_image_every: 0 (default), or every this many iterations (and at the last) an
      image `Features/gram` of the penultimate features' Gram matrix on 64 fixed states
      of the data (diagnostics.gram_image; the empirical study's Figure 37).
    out_of_box_actions: continuous actions only: 'refuse' (default) stops with the
      count when the data's actions leave the environment's action box; 'clip' clips
      them onto it (and logs how many).
  """

  def __init__(self, base_dir: str, game: str = "Pong", domain: str = "atari",
               agent_fn: Callable[..., dqn.DQNAgent] = dqn.DQNAgent,
               replay_fn: Callable[..., fixed_replay.FixedReplay] = fixed_replay.load_fixed_replay,
               num_iterations: int = 200, training_steps: int = 62_500,
               evaluation_steps: int = 125_000, eval_epsilon: float = 0.001,
               num_eval_envs: int = 1, seed: int = 0, data_seed: Optional[int] = None,
               diagnostics_batch_size: int = 2048, srank_delta: float = 0.01,
               fused_steps: Optional[int] = None, scan_unroll: int = 1,
               keep_checkpoints: int = 2, stream_window_transitions: Optional[int] = None,
               num_seeds: int = 1, learning_rates: Optional[Sequence[float]] = None,
               perturbed_evaluation: Optional[perturbed_lib.PerturbedEvaluation] = None,
               gram_image_every: int = 0, out_of_box_actions: str = "refuse"):
    common.check_base_dir(base_dir)
    validation.check_int_at_least("FixedReplayRunner.gram_image_every", gram_image_every, 0)
    if out_of_box_actions not in OUT_OF_BOX_POLICIES:
      raise ConfigError(f"`FixedReplayRunner.out_of_box_actions` must be one of "
                        f"{OUT_OF_BOX_POLICIES}, got {out_of_box_actions!r}.")
    self.out_of_box_actions = out_of_box_actions
    common.check_at_least_one("FixedReplayRunner", num_iterations=num_iterations,
                              training_steps=training_steps, num_eval_envs=num_eval_envs,
                              diagnostics_batch_size=diagnostics_batch_size,
                              scan_unroll=scan_unroll, keep_checkpoints=keep_checkpoints,
                              num_seeds=num_seeds,
                              **({} if fused_steps is None else {"fused_steps": fused_steps}),
                              **({} if stream_window_transitions is None else
                                 {"stream_window_transitions": stream_window_transitions}))
    common.check_runner_values("FixedReplayRunner", evaluation_steps=evaluation_steps,
                               eval_epsilon=eval_epsilon, srank_delta=srank_delta)
    self.base_dir = base_dir
    if learning_rates is not None:
      learning_rates = validation.check_learning_rates("FixedReplayRunner.learning_rates",
                                                       learning_rates)
    self.seeds = seed_axis.SeedAxis(
        range(seed, seed + num_seeds), learning_rates,
        None if learning_rates is None else seed_axis.configured_learning_rate())
    self.run_dirs = self.seeds.run_dirs(base_dir)
    self.checkpoint_dirs = [os.path.join(d, "checkpoints") for d in self.run_dirs]
    self.checkpoint_dir = self.checkpoint_dirs[0]
    self.env_name = f"{domain}:{game}"
    self.num_iterations = num_iterations
    run_dir.check_same_run(base_dir)
    self.finished = all(common.is_finished(d, num_iterations) for d in self.checkpoint_dirs)
    if self.finished:  # nothing to load or compile: run() says so and returns
      return
    self.training_steps = training_steps
    self.evaluation_steps = evaluation_steps
    self.seed = seed
    self.keep_checkpoints = keep_checkpoints

    probe_env = factory.create_environment(self.env_name, seed=seed)
    self.agent = common.build_agent(agent_fn, "FixedReplayRunner.agent_fn",
                                    probe_env, self.env_name)
    data_seed = seed if data_seed is None else data_seed
    stream = {} if stream_window_transitions is None else {"stream": True}
    self.replay = replay_fn(game=game, seed=data_seed, stack_size=probe_env.stack_size,
                            update_horizon=self.agent.update_horizon, gamma=self.agent.gamma,
                            **stream)
    self._check_shapes(probe_env)
    self.environment_description = factory.describe_environment(self.env_name, probe_env)
    self.data_seed = data_seed
    self._keys = [jax.random.PRNGKey(k) for k in self.seeds.seeds]
    state_spec = agent_common.state_spec(self.replay.state_shape,
                                         self.replay.observation_dtype)
    self._initial_state = self.seeds.stack([self.seeds.member_state(
        common.init_agent_state(self.agent, jax.random.fold_in(key, 0), state_spec,
                                self.replay.replay_dir), k) for k, key in enumerate(self._keys)])
    # What Params/distance_from_init is measured from: a function of the seed, so a
    # resumed run has them too. A copy, since the train step may donate the state.
    self._initial_params = jax.tree.map(jax.numpy.copy, self._initial_state.params)

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
    shape = dict(stack_size=self.replay.stack_size, update_horizon=self.agent.update_horizon,
                 gamma=self.agent.gamma)
    sample = common.make_sampler(sampler.sample_transitions, self.agent.batch_size, **shape)
    step = learner.make_train_step(self.agent.loss, self.seeds.optimizer(self.agent.optimizer),
                                   sample, self.agent.target_update_period,
                                   target_update_tau=self.agent.target_update_tau)
    donate = backend != "cpu"  # XLA:CPU cannot donate buffers; it would only warn.
    num_calls, remainder = divmod(training_steps, self.fused_steps)
    vmap = self.seeds.vmap
    self._schedule = [(learner.make_train_steps(step, self.fused_steps, scan_unroll, donate,
                                                vmap), num_calls)]
    self._steps_per_call = [self.fused_steps]
    if remainder:
      self._schedule.append(
          (learner.make_train_steps(step, remainder, scan_unroll, donate, vmap), 1))
      self._steps_per_call.append(remainder)
    solo_state = self.seeds.split(self._initial_state)[0]
    self._zero_metrics = self.seeds.stack(
        [learner.zero_metrics(step, solo_state, self._data)] * len(self.seeds))

    self._diagnose = make_diagnose(
        self.agent, common.make_sampler(sampler.sample_transitions, diagnostics_batch_size,
                                        **shape), srank_delta, vmap)
    self.gram_image_every = gram_image_every
    if gram_image_every:
      # The same 64 states at every iteration, drawn from the data by a fixed key.
      self._gram_states = common.make_sampler(sampler.sample_transitions, GRAM_STATES,
                                              **shape)(jax.random.PRNGKey(0), self._data).state
      gram = lambda params, states: diagnostics.gram_image(
          self.agent.apply(params, states).representation)
      self._gram = jax.jit(vmap(gram, (0, None)))
    self._last_metrics: list[dict[str, float]] = [{}] * len(self.seeds)  # last logged
    self._stop = stop_signal.GracefulStop()
    self._evaluate = common.Evaluator(self.env_name, self.agent.evaluation_act,
                                      seed=self.seeds.seeds, key=self._keys,
                                      num_envs=num_eval_envs, steps=evaluation_steps,
                                      epsilon=eval_epsilon)
    self._perturbed = perturbed_evaluation
    if perturbed_evaluation is not None:
      perturbed_evaluation.check(self.replay.frame_shape, evaluation_steps,
                                 "FixedReplayRunner")

  def _check_shapes(self, env: factory.Environment) -> None:
    if tuple(env.observation_shape) != tuple(self.replay.frame_shape):
      raise ConfigError(
          f"The frames in {self.replay.replay_dir} have shape {self.replay.frame_shape} but "
          f"environment {self.env_name!r} produces {tuple(env.observation_shape)}. Check "
          "`FixedReplayRunner.domain`/`game` against the data "
          "(`load_fixed_replay.replay_dir`).")
    spec = factory.observation_spec_of(env)
    if spec.dtype != self.replay.observation_dtype:
      raise ConfigError(
          f"The frames in {self.replay.replay_dir} are {self.replay.observation_dtype} but "
          f"environment {self.env_name!r} produces {spec.dtype}. Check "
          "`FixedReplayRunner.domain`/`game` against the data "
          "(`load_fixed_replay.replay_dir`).")
    action_spec = factory.action_spec_of(env)
    if tuple(action_spec.shape) != self.replay.action_shape:
      raise ConfigError(
          f"The actions in {self.replay.replay_dir} have shape {self.replay.action_shape} "
          f"but environment {self.env_name!r} takes actions of shape "
          f"{tuple(action_spec.shape)}. Check `FixedReplayRunner.domain`/`game` against "
          "the data (`load_fixed_replay.replay_dir`).")
    if isinstance(action_spec, specs.BoxActionSpec):
      self._check_action_box(action_spec)

  def _check_action_box(self, spec) -> None:
    """Refuses (or, with out_of_box_actions = 'clip', clips) dataset actions of the
    sampled transitions that lie outside the environment's action box."""
    arrays = self.replay.arrays
    flat = arrays.action.reshape((-1,) + tuple(spec.shape))
    valid = np.asarray(arrays.valid)
    outside, largest = specs.out_of_box(flat[valid], spec)
    count = int(outside.sum())
    if not count:
      return
    what = (f"{count} of the {len(valid)} transitions in {self.replay.replay_dir} have "
            f"actions outside {self.env_name}'s action box [{min(spec.low)}, "
            f"{max(spec.high)}] (the farthest by {largest:.3g})")
    if self.out_of_box_actions == "refuse":
      raise ConfigError(f"{what}. Bind `FixedReplayRunner.out_of_box_actions = 'clip'` to "
                        "clip them onto the box, or check the data against "
                        "`FixedReplayRunner.game` (`load_fixed_replay.replay_dir`).")
    log.warning("%s; clipped onto the box (FixedReplayRunner.out_of_box_actions = 'clip').",
                what)
    clipped = np.clip(arrays.action, spec.low_array, spec.high_array)
    self.replay = dataclasses.replace(self.replay, arrays=arrays._replace(action=clipped))

  # ---------------------------------------------------------------- phases
  def _calls(self) -> list:
    """The iteration's jitted train calls in order: (compiled function, its steps)."""
    return [(fn, steps) for (fn, calls), steps in zip(self._schedule, self._steps_per_call)
            for _ in range(calls)]

  def _steps_before(self, calls_done: int) -> int:
    """Gradient steps of the iteration's first `calls_done` train calls."""
    return sum(steps for _, steps in self._calls()[:calls_done])

  def _train(self, state, iteration: int, position: dict):
    """The iteration's train calls from `position["calls"]` on, with its running totals.

    Returns (state, metrics per seed, position at the end). A graceful stop after a call
    writes the position (calls done, totals, seconds spent) as the iteration's partial
    checkpoint and raises.
    """
    calls = self._calls()
    totals, start = position["totals"], time.perf_counter()
    for index in range(position["calls"], len(calls)):
      train_steps, steps = calls[index]
      if self._stream is not None:  # swaps in prefetched chunks when a refresh is due
        self._data = self._stream.advance(steps)
      state, totals = train_steps(state, self._data, totals)
      if self._stop.requested and index + 1 < len(calls):
        self._save_position(iteration, state, dict(
            calls=index + 1, totals=totals,
            seconds=position["seconds"] + time.perf_counter() - start))
    totals = jax.device_get(totals)  # the iteration's only host sync of train metrics
    seconds = position["seconds"] + time.perf_counter() - start  # the calls have ended
    metrics = [{k: float(v) / self.training_steps for k, v in seed_totals.items()}
               for seed_totals in self.seeds.split(totals)]
    for seed_metrics in metrics:
      seed_metrics["Train/StepsPerSecond"] = self.training_steps / seconds
      seed_metrics["Time/TrainSeconds"] = seconds
    if self._stop.requested:  # stopped in the last call: diagnostics and evaluation follow
      self._save_position(iteration, state, dict(calls=len(calls), totals=totals,
                                                 seconds=seconds))
    return state, metrics, dict(calls=len(calls), totals=totals, seconds=seconds)

  def _save_position(self, iteration: int, state, position: dict) -> None:
    """Checkpoints a position inside `iteration` (each seed's in its own directory) and
    raises stop_signal.Preempted."""
    for checkpoint_dir, seed_state, totals in zip(
        self.checkpoint_dirs, self.seeds.split(state), self.seeds.split(position["totals"])):
      path = checkpointing.save_partial(checkpoint_dir, iteration, {
          "agent": self.seeds.solo_state(seed_state),
          "position": {**position, "totals": totals}})
    steps = self._steps_before(position["calls"])
    raise self._stop.preempted(
        f"in iteration {iteration + 1} of {self.num_iterations}, after {steps} of its "
        f"{self.training_steps} training steps", path if len(self.seeds) == 1 else
        os.path.join(self.base_dir, seed_axis.SEED_DIR.format("*"), "checkpoints"))

  def _position_at(self, iteration: int, state):
    """(state, position) to continue `iteration` from: its partial checkpoint, if a
    graceful stop wrote one (for every seed, at the same position), else the
    iteration's start."""
    start = dict(calls=0, totals=self._zero_metrics, seconds=0.0)
    saved = [checkpointing.read_partial(d, iteration) for d in self.checkpoint_dirs]
    if any(entry is None for entry in saved):
      return state, start
    template = {"agent": self.seeds.solo_state(self.seeds.split(state)[0]),
                "position": {**start, "totals": self.seeds.split(start["totals"])[0]}}
    restored = [flax.serialization.from_state_dict(template, entry) for entry in saved]
    positions = [entry["position"] for entry in restored]
    calls = {int(p["calls"]) for p in positions}
    if len(calls) > 1:  # stopped while writing the seeds' partials: redo the iteration
      return state, start
    position = dict(calls=calls.pop(), seconds=float(positions[0]["seconds"]),
                    totals=self.seeds.stack([p["totals"] for p in positions]))
    log.info("Continuing iteration %d from its partial checkpoint (%d of %d train calls "
             "done).", iteration + 1, position["calls"], len(self._calls()))
    agent = self.seeds.stack([self.seeds.member_state(entry["agent"], k)
                              for k, entry in enumerate(restored)])
    return jax.device_put(agent), position

  def run_iteration(self, state, iteration: int, position: Optional[dict] = None):
    """One iteration; returns (state, metrics with the iteration's TensorBoard scalars),
    the metrics a list of one dict per seed when the run has several."""
    state, metrics = self._run_seeds_iteration(state, iteration, position)
    return state, metrics if self.seeds.vmapped else metrics[0]

  def _run_seeds_iteration(self, state, iteration: int, position: Optional[dict]):
    if position is None:
      position = dict(calls=0, totals=self._zero_metrics, seconds=0.0)
    if self._stream is not None and position["calls"]:
      steps = self._steps_before(position["calls"])
      self._data = self._stream.start(iteration * self.training_steps + steps)
    state, metrics, position = self._train(state, iteration, position)
    if self._stream is not None:
      stalls = self._stream.pop_stalls()
      for seed_metrics in metrics:
        seed_metrics["Data/StreamStalls"] = stalls
    self._check_finite(iteration, metrics, state.params)
    start = time.perf_counter()
    diag_keys = self.seeds.stack([
        jax.random.fold_in(jax.random.fold_in(key, 1), iteration) for key in self._keys])
    diagnosed = jax.device_get(self._diagnose(state.params, state.target_params,
                                              self._data, diag_keys, self._initial_params))
    seconds = time.perf_counter() - start
    for seed_metrics, seed_diagnosed in zip(metrics, self.seeds.split(diagnosed)):
      seed_metrics.update(seed_diagnosed)
      seed_metrics["Time/DiagnoseSeconds"] = seconds
    self._check_finite(iteration, metrics, None)  # the Q-values; params checked above
    if self.evaluation_steps > 0:
      start = time.perf_counter()
      try:
        evaluated = self._evaluate.evaluate_seeds(
            state.params, iteration, should_stop=lambda: self._stop.requested is not None)
      except evaluation.Stopped:
        self._save_position(iteration, state, position)
      seconds = time.perf_counter() - start
      for seed_metrics, result in zip(metrics, evaluated):
        seed_metrics.update(result.metrics())
        seed_metrics["Time/EvaluateSeconds"] = seconds
    if self._perturbed is not None and self._perturbed.due(iteration, self.num_iterations):
      start = time.perf_counter()
      try:  # a stop replays the whole evaluation (plain and perturbed) on resume
        perturbed = self._perturbed.evaluate(
            self._evaluate, state.params, iteration, self.evaluation_steps,
            should_stop=lambda: self._stop.requested is not None)
      except evaluation.Stopped:
        self._save_position(iteration, state, position)
      seconds = time.perf_counter() - start
      for seed_metrics, seed_perturbed in zip(metrics, perturbed):
        seed_metrics.update(seed_perturbed)
        seed_metrics[perturbed_lib.SECONDS_TAG] = seconds
    return state, [{k: float(v) for k, v in m.items()} for m in metrics]

  def _check_finite(self, iteration: int, metrics: list[dict], params) -> None:
    common.check_finite_seeds(iteration, self.num_iterations, self.seeds, metrics, params,
                              self._last_metrics, self.checkpoint_dirs, self.run_dirs)

  # ---------------------------------------------------------------- driver
  def _compile(self, state):
    start = time.perf_counter()
    self._schedule = [(fn.lower(state, self._data, self._zero_metrics).compile(), calls)
                      for fn, calls in self._schedule]
    log.info("Compiled the training loop (%d fused steps per call%s) in %.1f s.",
             self.fused_steps,
             f", {len(self.seeds)} seeds vmapped" if self.seeds.vmapped else "",
             time.perf_counter() - start)
    need = device_memory.check_fits(
        [fn for fn, _ in self._schedule], "FixedReplayRunner.num_seeds",
        f"Training {len(self.seeds)} seed(s) in one program")
    if self.seeds.vmapped:
      log.info("The training step of %d seeds holds about %.2f GB on the device.",
               len(self.seeds), need / device_memory.GB)

  def _write_config(self, writers) -> None:
    common.write_seed_configs(self.base_dir, self.seeds, self.run_dirs, writers,
                              {"Config/data": self.replay.describe(),
                               "Config/environment": self.environment_description},
                              "FixedReplayRunner", self.data_seed)

  def _restore(self):
    """(first iteration to run, state): the newest iteration every seed checkpointed
    (a stop between the seeds' writes leaves some one iteration ahead), or a fresh start."""
    iteration = checkpointing.newest_common_iteration(self.checkpoint_dirs)
    if iteration < 0:
      return 0, self._initial_state
    template = self.seeds.solo_state(self.seeds.split(self._initial_state)[0])
    state = self.seeds.stack([
        self.seeds.member_state(checkpointing.restore(d, iteration, template), k)
        for k, d in enumerate(self.checkpoint_dirs)])
    return iteration + 1, state

  def run(self) -> dict[str, float]:
    """Trains to `num_iterations`, resuming if base_dir holds a checkpoint.

    Returns the metrics of the last iteration run (empty if already complete); with
    several seeds, the first seed's.
    """
    if self.finished:
      log.info("%s is complete (%d iterations); nothing to do.", self.base_dir,
               self.num_iterations)
      return {}
    self._compile(self._initial_state)  # before anything is written: it may not fit
    gfile().makedirs(self.base_dir)
    start_iteration, state = self._restore()
    writers = []
    for directory in self.run_dirs:
      dropped = summary_writer.drop_events_after(directory, start_iteration - 1)
      if dropped:
        log.info("Removed %d TensorBoard events of iterations >= %d left by an interrupted "
                 "run in %s.", dropped, start_iteration, directory)
      writers.append(summary_writer.SummaryWriter(directory))
    if start_iteration == 0:
      self._write_config(writers)
    else:
      log.info("Resuming %s from iteration %d.", self.base_dir, start_iteration)
    log.info("Data: %s", self.replay.describe())
    log.info("Environment: %s", self.environment_description)
    if self.seeds.vmapped:
      log.info("%s in one program; their runs: %s", self.seeds.describe().capitalize(),
               ", ".join(self.run_dirs))
    if self._stream is not None:
      log.info("Streaming: %s", self._stream.describe())
      if start_iteration > 0:  # the window this step had in the interrupted run
        self._data = self._stream.start(start_iteration * self.training_steps)
    state = jax.device_put(state)
    metrics, progress = [{}], common.Progress(self.num_iterations)
    with self._stop:
      for iteration in range(start_iteration, self.num_iterations):
        state, metrics = self._run_logged_iteration(writers, state, iteration, progress)
    for writer in writers:
      writer.close()
    if self._stream is not None:
      self._stream.close()
      log.info("Streaming: %d refreshes, %d stalls (%.1f s).", self._stream.refreshes,
               self._stream.stalls, self._stream.stall_seconds)
    return metrics[0]

  def _run_logged_iteration(self, writers, state, iteration: int, progress):
    """Runs, logs and checkpoints one iteration (continuing its partial checkpoint);
    returns (state, metrics per seed)."""
    progress.start()
    state, position = self._position_at(iteration, state)
    state, metrics = self._run_seeds_iteration(state, iteration, position)
    self._last_metrics = metrics
    for writer, seed_metrics in zip(writers, metrics):
      writer.scalars(iteration, seed_metrics)
    every = self.gram_image_every
    if every and (iteration % every == every - 1 or iteration == self.num_iterations - 1):
      images = self.seeds.split(jax.device_get(self._gram(state.params, self._gram_states)))
      for writer, image in zip(writers, images):
        writer.image("Features/gram", image, iteration)
    for checkpoint_dir, seed_state in zip(self.checkpoint_dirs, self.seeds.split(state)):
      checkpointing.save(checkpoint_dir, iteration, self.seeds.solo_state(seed_state),
                         keep=self.keep_checkpoints)
    mean = lambda tag: float(np.mean([m.get(tag, float("nan")) for m in metrics]))
    seeds = f" (mean of {len(metrics)} seeds)" if self.seeds.vmapped else ""
    progress.done(iteration + 1, (
        f"{metrics[0]['Train/StepsPerSecond']:.0f} steps/s | loss {mean('Train/Loss'):.4g} "
        f"| srank {mean('Rank/srank'):.0f} | return {mean('Eval/AverageReturn'):.2f} "
        f"({mean('Eval/NumEpisodes'):.0f} episodes){seeds}"))
    return state, metrics

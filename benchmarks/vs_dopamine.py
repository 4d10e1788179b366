r"""Ours against a Dopamine-style loop, side by side in one process: speed ratios.

  python benchmarks/vs_dopamine.py                            # every section
  python benchmarks/vs_dopamine.py --sections train,eval      # a subset
  python benchmarks/vs_dopamine.py --smoke                    # tiny sizes, every path

Every comparison runs both implementations in this one process, on the same machine,
with the same network, data and environments: after one untimed warm-up of each
(compilation), they take turns for --rounds rounds (ours, Dopamine-style, ours, ...),
and the median rate of each and the ratio ours / Dopamine-style are reported.

Dopamine's own JAX agents cannot be imported here (its discrete_domains need OpenAI
baselines and gym), so its loops are written out below as Dopamine runs them, around
this project's network, loss and policy (the computation per step is the same; only
the loop around it differs).

Sections (--sections, comma-separated):

  train      Gradient steps per second of offline DQN (Adam, batch 32) on synthetic
             frames written in the DQN Replay format, for the Nature DQN (84x84x4
             uint8 states, 6 actions) and the MinAtar network (10x10x4 frames, stack
             1). Ours: the training loop as FixedReplayRunner builds it (sampling
             inside the jitted step, the backend's default fused steps per call, the
             data on the device, metrics summed on the device, one host sync at the
             end of a round). Dopamine-style: a host numpy minibatch from dopamine-rl's
             OutOfGraphReplayBuffer loaded from the same files, then one jitted update
             per step taking the batch as arguments, the target network copied by a
             host-side `if step % period == 0`, and the loss read back every step.
  eval       Agent steps per second of evaluation with epsilon 0.001 and random
             parameters, on Atari Pong (Nature DQN) and MinAtar breakout (MinAtar
             network), episodes truncated at --eval_max_episode_steps (gin, for the
             Python and the vector environments alike). Ours:
             runners.common.Evaluator, as a run evaluates, with each of --eval_envs
             environments in lockstep. Dopamine-style: one environment, the frame stack
             kept in numpy, the key split on the host and one jitted policy call per
             agent step.
  iteration  One offline Atari iteration of FixedReplayRunner (gin_configs/offline/
             dqn.gin) at the IUP paper's sizes scaled by --iteration_scale (training
             and evaluation steps; the diagnostics batch stays 2048), split into
             train / diagnose / evaluate / log + checkpoint seconds, and an estimate of
             a full-size iteration from those phases. The phases are timed around the
             runner's own calls (train: its train calls and their host sync), with the
             runner's Time/ tags printed beside them when it logs them; log +
             checkpoint is one SummaryWriter.scalars call and checkpointing.save of the
             agent, timed directly. The run has two iterations and the second is
             reported: the first also compiles the diagnostics and the evaluation
             policy.
  seeds      Training wall time of one offline MinAtar iteration (--seeds_steps
             gradient steps, no evaluation) with S = --seed_counts seeds vmapped in
             one program (FixedReplayRunner.num_seeds), as seed-steps/s and as a
             multiple of S = 1's time, and the device memory XLA estimates for the
             compiled step against S (the data is held once).

At the end a markdown table holds every figure (rates, ratios, the CPU count, the JAX
backend and devices, the load average) and the targets met or missed.

--smoke runs every section at tiny sizes (a minute or so on 2 CPU cores): its figures
only show that the code runs.
"""
import argparse
import dataclasses
import fractions
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (gfile, Dopamine) is noisy.

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import networks
from batch_rl import summary_writer
from batch_rl.agents import common as agent_common
from batch_rl.agents import dqn
from batch_rl.agents import learner
from batch_rl.datasets import dqn_replay_format
from batch_rl.datasets import fixed_replay
from batch_rl.environments import factory
from batch_rl.replay import sampler
from batch_rl.runners import common
from batch_rl.runners import device_memory
from batch_rl.runners import offline
# pylint: enable=wrong-import-position

EVAL_EPSILON = 0.001  # FixedReplayRunner.eval_epsilon's default
NUM_ACTIONS = 6  # Pong's minimal action set and MinAtar's full one
# The IUP paper's offline Atari iteration.
PAPER_TRAINING_STEPS = 62_500
PAPER_EVALUATION_STEPS = 125_000
PAPER_DIAGNOSTICS_BATCH = 2048


@dataclasses.dataclass(frozen=True)
class Setup:
  """A network with the frames it takes and the environment that produces them."""

  label: str
  network: Callable
  frame_shape: tuple
  stack_size: int
  env_name: str
  train_target: float  # ratio ours / Dopamine-style that training should reach


SETUPS = {
    "nature": Setup("Nature DQN", networks.NatureDQNNetwork, (84, 84), 4, "atari:Pong", 1.0),
    "minatar": Setup("MinAtar DQN", networks.MinAtarDQNNetwork, (10, 10, 4), 1,
                     "minatar:breakout", 2.0),
}
EVAL_TARGETS = {"atari:Pong": 2.0}  # evaluation ratios that should be reached


def log(message: str) -> None:
  print(message, flush=True)


def median(values) -> float:
  return float(statistics.median(values))


def fmt_rate(rate: float) -> str:
  return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


# ------------------------------------------------------------------ the report


@dataclasses.dataclass
class Row:
  section: str
  measurement: str
  ours: str
  dopamine: str = ""
  ratio: Optional[float] = None
  target: Optional[float] = None

  def verdict(self) -> str:
    if self.target is None or self.ratio is None:
      return ""
    met = "met" if self.ratio >= self.target else "missed"
    return f">= {self.target:g}x: {met} ({self.ratio:.2f}x)"


class Report:
  """Every figure of the run, printed as one markdown table at the end."""

  def __init__(self):
    self.rows: list[Row] = []

  def add(self, *args, **kwargs) -> None:
    self.rows.append(Row(*args, **kwargs))

  def print(self) -> None:
    log("")
    log("| section | measurement | ours | Dopamine-style | ours / Dopamine-style | target |")
    log("| --- | --- | --- | --- | --- | --- |")
    for row in self.rows:
      ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
      log(f"| {row.section} | {row.measurement} | {row.ours} | {row.dopamine} | {ratio} | "
          f"{row.verdict()} |")
    checked = [row for row in self.rows if row.target is not None]
    if checked:
      log("")
      log("Targets (set for the CPU backend):")
      for row in checked:
        log(f"  {row.section} {row.measurement}: {row.verdict()}")


def alternate(contenders: dict, rounds: int) -> dict:
  """Runs each contender's warm_up(), then `rounds` rounds of run_round() in turn.

  Each contender is an object with `warm_up()` and `run_round(index) -> (units,
  seconds)`; returns {name: [rate of each round]}.
  """
  for name, contender in contenders.items():
    start = time.perf_counter()
    contender.warm_up()
    log(f"    warm-up {name}: {time.perf_counter() - start:.1f} s")
  rates = {name: [] for name in contenders}
  for index in range(rounds):
    for name, contender in contenders.items():
      units, seconds = contender.run_round(index)
      rates[name].append(units / seconds)
      log(f"    round {index + 1} {name}: {units:,} in {seconds:.2f} s = "
          f"{fmt_rate(units / seconds)}/s")
  return rates


# ------------------------------------------------------------------ data and agents


def write_dataset(replay_dir: str, setup: Setup, capacity: int, seed: int = 0) -> None:
  """One checkpoint (suffix 0) of synthetic frames in the DQN Replay format."""
  rng = np.random.default_rng(seed)
  shape = (capacity,) + setup.frame_shape
  if len(setup.frame_shape) == 2:  # Atari: uniform pixels
    observation = rng.integers(0, 256, shape, dtype=np.uint8)
  else:  # MinAtar: sparse 0/1 channels, as its frames are
    observation = (rng.random(shape) < 0.03).astype(np.uint8)
  dqn_replay_format.write_shard(
      replay_dir, 0, observation=observation,
      action=rng.integers(0, NUM_ACTIONS, capacity, dtype=np.int32),
      reward=rng.choice(np.float32([-1, 0, 0, 0, 0, 0, 0, 0, 1]), capacity),
      terminal=(rng.random(capacity) < 1 / 500).astype(np.uint8),
      add_count=capacity, stack_size=setup.stack_size)


def make_agent(setup: Setup) -> dqn.DQNAgent:
  return dqn.DQNAgent(num_actions=NUM_ACTIONS, network=setup.network)


def state_shape(setup: Setup) -> tuple:
  return setup.frame_shape + (setup.stack_size,)


def random_params(agent: dqn.DQNAgent, setup: Setup, seed: int = 0):
  """Random network parameters drawn on the host: the network's own init would compile
  for seconds and changes nothing that is timed here."""
  return agent_common.host_random_params(agent, seed, state_shape(setup))


def initial_train_state(agent: dqn.DQNAgent, setup: Setup) -> learner.TrainState:
  params = random_params(agent, setup)
  return learner.init_train_state(params, agent.optimizer, jax.random.PRNGKey(0))


# ------------------------------------------------------------------ section: train


class OursTrain:
  """The training loop exactly as FixedReplayRunner.__init__ builds it."""

  def __init__(self, agent: dqn.DQNAgent, setup: Setup, replay_dir: str, steps: int):
    replay = fixed_replay.load_fixed_replay(replay_dir, stack_size=setup.stack_size,
                                            update_horizon=agent.update_horizon,
                                            gamma=agent.gamma)
    self.data = jax.device_put(replay.arrays)
    sample = common.make_sampler(sampler.sample_transitions, agent.batch_size,
                                 stack_size=setup.stack_size,
                                 update_horizon=agent.update_horizon, gamma=agent.gamma)
    step = learner.make_train_step(agent.loss, agent.optimizer, sample,
                                   agent.target_update_period)
    backend = jax.default_backend()
    self.fused_steps = min(offline.DEFAULT_FUSED_STEPS.get(backend, 1), steps)
    donate = backend != "cpu"  # as the Runner: XLA:CPU cannot donate buffers
    self._train_steps = learner.make_train_steps(step, self.fused_steps, 1, donate)
    self.state = jax.device_put(initial_train_state(agent, setup))
    self._zero_metrics = learner.zero_metrics(step, self.state, self.data)
    self.calls = max(1, steps // self.fused_steps)

  def warm_up(self) -> None:
    self._train_steps = self._train_steps.lower(self.state, self.data,
                                                self._zero_metrics).compile()
    self.state, totals = self._train_steps(self.state, self.data, self._zero_metrics)
    jax.block_until_ready(totals)

  def run_round(self, index: int) -> tuple[int, float]:
    del index
    totals = self._zero_metrics
    start = time.perf_counter()
    for _ in range(self.calls):
      self.state, totals = self._train_steps(self.state, self.data, totals)
    totals = jax.device_get(totals)  # the round's only host sync, as in the Runner
    seconds = time.perf_counter() - start
    self.mean_loss = float(totals["Train/Loss"]) / (self.calls * self.fused_steps)
    return self.calls * self.fused_steps, seconds


def dopamine_batch(buffer, cumulative_gamma: float) -> sampler.Transition:
  """One host minibatch from OutOfGraphReplayBuffer, as the Transition type and dtypes
  that sampler.sample_transitions returns."""
  (state, action, reward, next_state, next_action, _, terminal,
   indices) = buffer.sample_transition_batch()
  terminal = terminal.astype(bool)
  discount = (cumulative_gamma * (1.0 - terminal.astype(np.float32))).astype(np.float32)
  return sampler.Transition(state=state, action=action.astype(np.int32),
                            reward=reward.astype(np.float32), next_state=next_state,
                            next_action=next_action.astype(np.int32), terminal=terminal,
                            discount=discount, index=indices.astype(np.int32))


def make_dopamine_update(agent: dqn.DQNAgent):
  """The jitted step of Dopamine's loop: the DQN loss's gradient on a given batch and
  the Adam update; the target parameters come in as an argument."""

  def update(params, target_params, opt_state, rng, batch):
    rng, loss_key = jax.random.split(rng)
    (loss, _), grads = jax.value_and_grad(agent.loss, has_aux=True)(
        params, target_params, batch, loss_key)
    updates, opt_state = agent.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, rng, loss

  return jax.jit(update)


class DopamineTrain:
  """Dopamine's offline training loop: host sampling, one jitted update per step."""

  def __init__(self, agent: dqn.DQNAgent, setup: Setup, replay_dir: str, capacity: int,
               steps: int):
    from dopamine.tf.replay_memory import circular_replay_buffer  # pylint: disable=g-import-not-at-top
    self.buffer = circular_replay_buffer.OutOfGraphReplayBuffer(
        observation_shape=setup.frame_shape, stack_size=setup.stack_size,
        replay_capacity=capacity, batch_size=agent.batch_size,
        update_horizon=agent.update_horizon, gamma=agent.gamma)
    self.buffer.load(replay_dir, 0)
    np.random.seed(0)  # Dopamine samples with numpy's global generator
    self.cumulative_gamma = agent.gamma ** agent.update_horizon
    self.target_update_period = agent.target_update_period
    self._update = make_dopamine_update(agent)
    state = initial_train_state(agent, setup)
    self.params, self.target_params = state.params, state.target_params
    self.opt_state, self.rng = state.opt_state, state.rng
    self.training_steps = 0
    self.steps = steps

  def _train_step(self) -> float:
    batch = dopamine_batch(self.buffer, self.cumulative_gamma)
    self.params, self.opt_state, self.rng, loss = self._update(
        self.params, self.target_params, self.opt_state, self.rng, batch)
    if self.training_steps % self.target_update_period == 0:
      self.target_params = self.params
    self.training_steps += 1
    return float(loss)  # Dopamine reads the loss back every step

  def warm_up(self) -> None:
    self._train_step()

  def run_round(self, index: int) -> tuple[int, float]:
    del index
    start = time.perf_counter()
    losses = [self._train_step() for _ in range(self.steps)]
    seconds = time.perf_counter() - start
    self.mean_loss = float(np.mean(losses))
    return self.steps, seconds


def train_section(args, report: Report, work_dir: str) -> None:
  for name in args.networks:
    setup = SETUPS[name]
    capacity = args.atari_capacity if len(setup.frame_shape) == 2 else args.minatar_capacity
    steps = args.atari_train_steps if len(setup.frame_shape) == 2 else args.minatar_train_steps
    log(f"== train: {setup.label}, {capacity:,} synthetic transitions, {steps} steps a round")
    replay_dir = os.path.join(work_dir, f"train_{name}", "replay_logs")
    start = time.perf_counter()
    write_dataset(replay_dir, setup, capacity)
    log(f"    wrote the data in {time.perf_counter() - start:.1f} s")
    agent = make_agent(setup)
    ours = OursTrain(agent, setup, replay_dir, steps)
    contenders = {"ours": ours, "dopamine": DopamineTrain(agent, setup, replay_dir, capacity,
                                                          steps)}
    rates = alternate(contenders, args.rounds)
    for contender_name, contender in contenders.items():
      log(f"    mean loss of {contender_name}'s last round: {contender.mean_loss:.4g}")
    ours_rate, dopamine_rate = median(rates["ours"]), median(rates["dopamine"])
    report.add("train", f"{setup.label}, batch {agent.batch_size}, gradient steps/s "
               f"(ours: {ours.fused_steps} fused step(s) per call)",
               fmt_rate(ours_rate), fmt_rate(dopamine_rate), ours_rate / dopamine_rate,
               setup.train_target)


# ------------------------------------------------------------------ section: eval


class OursEval:
  """A run's evaluation phase: runners.common.Evaluator with `num_envs` environments."""

  def __init__(self, agent: dqn.DQNAgent, setup: Setup, params, num_envs: int,
               steps: int):
    self.evaluator = common.Evaluator(setup.env_name, agent.act, seed=0,
                                      key=jax.random.PRNGKey(0), num_envs=num_envs,
                                      steps=steps, epsilon=EVAL_EPSILON)
    self.params = params

  def warm_up(self) -> None:
    self.evaluator(self.params, 0)  # the first call compiles the policy

  def run_round(self, index: int) -> tuple[int, float]:
    start = time.perf_counter()
    result = self.evaluator(self.params, index + 1)
    return result.num_steps, time.perf_counter() - start


class DopamineEval:
  """Dopamine's evaluation loop: one environment, numpy frame stack, one jitted policy
  call per agent step with a key split on the host (Runner._run_one_phase)."""

  def __init__(self, agent: dqn.DQNAgent, setup: Setup, params, steps: int):
    self.env = factory.create_environment(setup.env_name, seed=0)
    spec = factory.observation_spec_of(self.env)
    # Kept in the observation dtype (uint8), which the network takes.
    self.state = np.zeros((1,) + tuple(spec.shape) + (self.env.stack_size,), spec.dtype)
    self._act = jax.jit(agent.act)
    self.params = params
    self.rng = jax.random.PRNGKey(0)
    self.steps = steps

  def _reset_state(self) -> None:
    self.state.fill(0)

  def _record_observation(self, observation) -> None:
    self.state = np.roll(self.state, -1, axis=-1)
    self.state[0, ..., -1] = observation

  def _select_action(self) -> int:
    self.rng, key = jax.random.split(self.rng)
    return int(self._act(self.params, self.state, key, EVAL_EPSILON)[0])

  def _run_one_episode(self) -> int:
    self._reset_state()
    self._record_observation(self.env.reset())
    action = self._select_action()
    steps = 0
    while True:
      observation, _, terminal, truncated = self.env.step(action)
      steps += 1
      if terminal or truncated:
        return steps
      self._record_observation(observation)
      action = self._select_action()

  def warm_up(self) -> None:
    self._select_action()

  def run_round(self, index: int) -> tuple[int, float]:
    del index
    start = time.perf_counter()
    steps = 0
    while steps < self.steps:
      steps += self._run_one_episode()
    return steps, time.perf_counter() - start


def episode_limit_bindings(max_episode_steps: int) -> list[str]:
  """Gin bindings truncating every Atari (Python and vector env: the evaluation builds
  the vector env with AtariEnvironment's bindings) and MinAtar episode after
  `max_episode_steps` agent steps."""
  return [f"{name}.max_episode_steps = {max_episode_steps}"
          for name in ("AtariEnvironment", "MinAtarEnvironment")]


def eval_section(args, report: Report, work_dir: str) -> None:
  del work_dir
  config_lib.parse_gin([], episode_limit_bindings(args.eval_max_episode_steps))
  try:
    for name in args.networks:
      setup = SETUPS[name]
      log(f"== eval: {setup.env_name}, {setup.label}, budget {args.eval_steps} steps a "
          f"round, episodes of at most {args.eval_max_episode_steps} steps")
      agent = make_agent(setup)
      params = random_params(agent, setup)
      contenders = {"dopamine": DopamineEval(agent, setup, params, args.eval_steps)}
      for num_envs in args.eval_envs:
        contenders[f"ours, {num_envs} env(s)"] = OursEval(agent, setup, params, num_envs,
                                                          args.eval_steps)
      rates = alternate(contenders, args.rounds)
      dopamine_rate = median(rates.pop("dopamine"))
      for contender_name, contender_rates in rates.items():
        ours_rate = median(contender_rates)
        report.add("eval", f"{setup.env_name}, {setup.label}, agent steps/s "
                   f"({contender_name.split(', ')[1]} in lockstep)", fmt_rate(ours_rate),
                   fmt_rate(dopamine_rate), ours_rate / dopamine_rate,
                   EVAL_TARGETS.get(setup.env_name))
  finally:
    gin.clear_config()


# ------------------------------------------------------------------ section: iteration


class TimedEvaluator:
  """Stands in for a runner's Evaluator: times each evaluation phase and counts its
  agent steps, for a solo call (`__call__`) or a seeds call (`evaluate_seeds`, whose
  first seed is counted); anything else is the Evaluator's own."""

  def __init__(self, evaluator):
    self._evaluator = evaluator
    self.seconds: list[float] = []
    self.steps: list[int] = []

  def __getattr__(self, name):
    return getattr(self._evaluator, name)

  def _timed(self, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    self.seconds.append(time.perf_counter() - start)
    first = out[0] if isinstance(out, (list, tuple)) else out
    self.steps.append(first.num_steps)
    return out

  def __call__(self, *args, **kwargs):
    return self._timed(self._evaluator, *args, **kwargs)

  def evaluate_seeds(self, *args, **kwargs):
    return self._timed(self._evaluator.evaluate_seeds, *args, **kwargs)


def timed_calls(fn, seconds: list, block: bool = False):
  """`fn` that appends each call's wall time to `seconds` (waiting for the result's
  device arrays first with `block`)."""

  def timed(*args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    if block:
      out = jax.block_until_ready(out)
    seconds.append(time.perf_counter() - start)
    return out

  return timed


class PhaseTimer:
  """Times a FixedReplayRunner's phases from outside, one entry per call: its compile,
  its train calls of an iteration (which end with the iteration's host sync of the
  train metrics), diagnostics and evaluation (counting its agent steps)."""

  def __init__(self, runner: offline.FixedReplayRunner):
    self.seconds = {"compile": [], "train": [], "diagnose": []}
    # pylint: disable=protected-access
    runner._compile = timed_calls(runner._compile, self.seconds["compile"])
    runner._train = timed_calls(runner._train, self.seconds["train"])
    runner._diagnose = timed_calls(runner._diagnose, self.seconds["diagnose"], block=True)
    self.evaluator = runner._evaluate = TimedEvaluator(runner._evaluate)
    # pylint: enable=protected-access
    self.seconds["evaluate"] = self.evaluator.seconds


# Phase -> the names a runner may log its seconds under.
TIME_TAGS = {
    "train": ("Time/Train", "Time/TrainSeconds"),
    "diagnose": ("Time/Diagnose", "Time/DiagnoseSeconds"),
    "evaluate": ("Time/Evaluate", "Time/EvaluateSeconds"),
}


def tagged_seconds(metrics: dict) -> dict:
  """{phase: (tag, seconds)} of the runner's own timing tags that it logged."""
  found = {}
  for phase, tags in TIME_TAGS.items():
    for tag in tags:
      if tag in metrics:
        found[phase] = (tag, metrics[tag])
        break
  return found


def time_log_and_checkpoint(state, metrics: dict, directory: str, repeats: int = 3) -> float:
  """Median seconds of what the Runner does after an iteration: one
  SummaryWriter.scalars call and checkpointing.save of the agent's state."""
  times = []
  writer = summary_writer.SummaryWriter(os.path.join(directory, "events"))
  for iteration in range(repeats):
    start = time.perf_counter()
    writer.scalars(iteration, metrics)
    checkpointing.save(os.path.join(directory, "checkpoints"), iteration, state, keep=2)
    times.append(time.perf_counter() - start)
  writer.close()
  return median(times)


def parse_fraction(text: str) -> fractions.Fraction:
  value = fractions.Fraction(text)
  if not 0 < value <= 1:
    raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
  return value


def iteration_bindings(args, replay_dir: str, training_steps: int,
                       evaluation_steps: int) -> list[str]:
  """gin_configs/offline/dqn.gin's run scaled down: two iterations on the synthetic
  data, episodes bounded as in the eval section."""
  return [
      f"load_fixed_replay.replay_dir = '{replay_dir}'",
      "FixedReplayRunner.game = 'Pong'",
      "FixedReplayRunner.num_iterations = 2",
      f"FixedReplayRunner.training_steps = {training_steps}",
      f"FixedReplayRunner.evaluation_steps = {evaluation_steps}",
      f"FixedReplayRunner.diagnostics_batch_size = {args.diagnostics_batch}",
      f"FixedReplayRunner.num_eval_envs = {args.iteration_eval_envs}",
      *episode_limit_bindings(args.eval_max_episode_steps),
  ]


def iteration_section(args, report: Report, work_dir: str) -> None:
  scale = args.iteration_scale
  training_steps = max(1, round(PAPER_TRAINING_STEPS * scale))
  evaluation_steps = max(1, round(PAPER_EVALUATION_STEPS * scale))
  log(f"== iteration: offline Atari (gin_configs/offline/dqn.gin) at {scale} of the "
      f"paper's sizes: {training_steps} training steps, {evaluation_steps} evaluation "
      f"steps, diagnostics batch {args.diagnostics_batch}, "
      f"{args.iteration_capacity:,} synthetic transitions, episodes of at most "
      f"{args.eval_max_episode_steps} steps")
  replay_dir = os.path.join(work_dir, "iteration", "Pong", "1", "replay_logs")
  write_dataset(replay_dir, SETUPS["nature"], args.iteration_capacity)
  config_lib.parse_gin([os.path.join(REPO, "gin_configs", "offline", "dqn.gin")],
                       iteration_bindings(args, replay_dir, training_steps,
                                          evaluation_steps))
  try:
    start = time.perf_counter()
    runner = offline.FixedReplayRunner(base_dir=os.path.join(work_dir, "iteration", "run"))
    build_seconds = time.perf_counter() - start
    phases = PhaseTimer(runner)
    start = time.perf_counter()
    metrics = runner.run()
    run_seconds = time.perf_counter() - start
    log_seconds = time_log_and_checkpoint(runner._initial_state, metrics,  # pylint: disable=protected-access
                                          os.path.join(work_dir, "iteration", "log"))
  finally:
    gin.clear_config()
  # Iteration 2's phases (the last call of each); iteration 1 also compiled the
  # diagnostics and the evaluation policy.
  measured = {phase: phases.seconds[phase][-1] for phase in ("train", "diagnose", "evaluate")}
  measured["log + checkpoint"] = log_seconds
  evaluate_steps = phases.evaluator.steps[-1]
  compile_seconds = sum(phases.seconds["compile"])
  tags = tagged_seconds(metrics)
  # Each phase scaled to the paper's size: training by its steps, evaluation by the
  # agent steps the phase actually took (it finishes its last episode), the
  # diagnostics by the batch size, and the logging as it is.
  full = {
      "train": measured["train"] * PAPER_TRAINING_STEPS / training_steps,
      "diagnose": measured["diagnose"] * PAPER_DIAGNOSTICS_BATCH / args.diagnostics_batch,
      "evaluate": measured["evaluate"] * PAPER_EVALUATION_STEPS / evaluate_steps,
      "log + checkpoint": measured["log + checkpoint"],
  }
  what = {"train": f"{training_steps} gradient steps",
          "diagnose": f"batch {args.diagnostics_batch}",
          "evaluate": f"{evaluate_steps} agent steps ({args.iteration_eval_envs} env(s))",
          "log + checkpoint": "SummaryWriter.scalars + checkpointing.save"}
  log(f"    built the runner in {build_seconds:.1f} s; run() of 2 iterations took "
      f"{run_seconds:.1f} s, of which {compile_seconds:.1f} s compiling the training loop")
  log("    phases of iteration 2, timed around the runner's calls (the runner's own "
      "Time/ tags beside them):")
  for phase, seconds in measured.items():
    tag = (f"; {tags[phase][0]} {tags[phase][1]:.2f} s" if phase in tags else "")
    log(f"      {phase:<17} {seconds:8.2f} s   {what[phase]}{tag}; full size "
        f"~{full[phase]:,.0f} s")
    report.add("iteration", f"{phase}, {what[phase]}", f"{seconds:.2f} s"
               + (f" ({tags[phase][0]}: {tags[phase][1]:.2f} s)" if phase in tags else ""))
  total = sum(full.values())
  log(f"    estimated full-size iteration ({PAPER_TRAINING_STEPS:,} training steps, "
      f"{PAPER_EVALUATION_STEPS:,} evaluation steps): ~{total:,.0f} s "
      f"({common.format_duration(total)}); an estimate, each phase scaled by its size")
  for phase, seconds in full.items():
    report.add("iteration", f"full-size estimate: {phase}", f"~{seconds:,.0f} s")
  report.add("iteration", f"full-size estimate: whole iteration ({PAPER_TRAINING_STEPS:,} "
             f"training, {PAPER_EVALUATION_STEPS:,} evaluation steps)",
             f"~{total:,.0f} s ({common.format_duration(total)})")
  report.add("iteration", "train-loop compile (once per run)", f"{compile_seconds:.1f} s")


def seeds_bindings(args, replay_dir: str, num_seeds: int) -> list[str]:
  """An offline MinAtar run of `num_seeds` vmapped seeds on the synthetic data: one
  iteration of training and diagnostics, no evaluation."""
  return [
      f"load_fixed_replay.replay_dir = '{replay_dir}'",
      "FixedReplayRunner.game = 'breakout'",
      "FixedReplayRunner.domain = 'minatar'",
      "FixedReplayRunner.num_iterations = 1",
      f"FixedReplayRunner.training_steps = {args.seeds_steps}",
      "FixedReplayRunner.evaluation_steps = 0",
      f"FixedReplayRunner.num_seeds = {num_seeds}",
      "DQNAgent.network = @MinAtarDQNNetwork",
  ]


def seeds_section(args, report: Report, work_dir: str) -> None:
  log(f"== seeds: offline MinAtar, {args.seeds_steps} gradient steps of S seeds vmapped "
      f"in one program (FixedReplayRunner.num_seeds), {args.seeds_capacity:,} synthetic "
      "transitions held once")
  replay_dir = os.path.join(work_dir, "seeds", "breakout", "1", "replay_logs")
  write_dataset(replay_dir, SETUPS["minatar"], args.seeds_capacity)
  solo_seconds = None
  for num_seeds in args.seed_counts:
    config_lib.parse_gin([], seeds_bindings(args, replay_dir, num_seeds))
    try:
      runner = offline.FixedReplayRunner(
          base_dir=os.path.join(work_dir, "seeds", f"run{num_seeds}"))
      state = runner._initial_state  # pylint: disable=protected-access
      runner._compile(state)  # pylint: disable=protected-access
      device_bytes = device_memory.program_bytes(runner._schedule[0][0])  # pylint: disable=protected-access
      seconds = []
      for _ in range(args.rounds + 1):  # the first round also compiles the diagnostics
        state, metrics = runner.run_iteration(state, 0)
        first = metrics[0] if isinstance(metrics, list) else metrics
        seconds.append(first["Time/TrainSeconds"])
    finally:
      gin.clear_config()
    train_seconds = median(seconds[1:])
    solo_seconds = train_seconds if solo_seconds is None else solo_seconds
    seed_steps = num_seeds * args.seeds_steps / train_seconds
    log(f"    S={num_seeds}: {train_seconds:.2f} s per iteration (median of {args.rounds}), "
        f"{seed_steps:,.0f} seed-steps/s, {train_seconds / solo_seconds:.2f}x the wall time "
        f"of S=1; the compiled step holds {device_bytes / 2**20:,.1f} MiB")
    report.add("seeds", f"S={num_seeds} vmapped seeds, {args.seeds_steps} steps each",
               f"{train_seconds:.2f} s, {seed_steps:,.0f} seed-steps/s, "
               f"{train_seconds / solo_seconds:.2f}x S=1's time, "
               f"{device_bytes / 2**20:,.1f} MiB")


# ------------------------------------------------------------------ main

# Section name -> function(args, report, work_dir); a new section is one more entry.
SECTIONS = {
    "train": train_section,
    "eval": eval_section,
    "iteration": iteration_section,
    "seeds": seeds_section,
}
SMOKE = dict(rounds=2, atari_capacity=1000, minatar_capacity=1000, atari_train_steps=3,
             minatar_train_steps=20, eval_steps=30, eval_envs=[1, 2],
             eval_max_episode_steps=20, iteration_scale=fractions.Fraction(1, 12_500),
             iteration_capacity=500, diagnostics_batch=64, seed_counts=[1, 2],
             seeds_steps=10, seeds_capacity=1000)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated subset of {', '.join(SECTIONS)}")
  parser.add_argument("--networks", default=",".join(SETUPS),
                      help=f"train and eval: comma-separated subset of {', '.join(SETUPS)}")
  parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each contender")
  parser.add_argument("--atari_capacity", type=int, default=20_000,
                      help="train: synthetic Atari transitions")
  parser.add_argument("--minatar_capacity", type=int, default=50_000,
                      help="train: synthetic MinAtar transitions")
  parser.add_argument("--atari_train_steps", type=int, default=60,
                      help="train: Nature DQN gradient steps per round")
  parser.add_argument("--minatar_train_steps", type=int, default=1500,
                      help="train: MinAtar gradient steps per round")
  parser.add_argument("--eval_steps", type=int, default=2000,
                      help="eval: agent steps per round (the last episode is finished)")
  parser.add_argument("--eval_envs", default="1,8",
                      help="eval: environments in lockstep of ours, comma-separated")
  parser.add_argument("--eval_max_episode_steps", type=int, default=250,
                      help="eval and iteration: episodes are truncated after this many agent "
                      "steps (gin: AtariEnvironment/MinAtarEnvironment.max_episode_steps)")
  parser.add_argument("--iteration_scale", type=parse_fraction,
                      default=fractions.Fraction(1, 250),
                      help="iteration: fraction of the paper's training and evaluation steps")
  parser.add_argument("--iteration_capacity", type=int, default=5000,
                      help="iteration: synthetic Atari transitions")
  parser.add_argument("--iteration_eval_envs", type=int, default=1,
                      help="iteration: FixedReplayRunner.num_eval_envs")
  parser.add_argument("--diagnostics_batch", type=int, default=PAPER_DIAGNOSTICS_BATCH,
                      help="iteration: FixedReplayRunner.diagnostics_batch_size")
  parser.add_argument("--seed_counts", default="1,2,4,8",
                      help="seeds: numbers of vmapped seeds (FixedReplayRunner.num_seeds)")
  parser.add_argument("--seeds_steps", type=int, default=500,
                      help="seeds: gradient steps of each seed per iteration")
  parser.add_argument("--seeds_capacity", type=int, default=50_000,
                      help="seeds: synthetic MinAtar transitions, shared by the seeds")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny sizes for every section (only shows that the code runs)")
  args = parser.parse_args(argv)
  args.sections = names(args.sections, SECTIONS, "--sections")
  args.networks = names(args.networks, SETUPS, "--networks")
  args.eval_envs = [int(n) for n in args.eval_envs.split(",") if n]
  args.seed_counts = [int(n) for n in args.seed_counts.split(",") if n]
  if args.smoke:
    for key, value in SMOKE.items():
      setattr(args, key, value)
  return args


def names(value: str, valid, flag: str) -> list:
  chosen = [v for v in value.split(",") if v]
  unknown = [v for v in chosen if v not in valid]
  if unknown:
    sys.exit(f"{flag}: unknown {unknown}; valid: {', '.join(valid)}")
  return chosen


def machine_lines() -> list[str]:
  devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
  return [f"jax {jax.__version__}, backend {jax.default_backend()}, devices [{devices}]",
          f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"{platform.machine()}, Python {platform.python_version()}"]


def main(argv=None) -> None:
  args = parse_args(argv)
  start = time.perf_counter()
  load_start = os.getloadavg()
  for line in machine_lines():
    log(line)
  log(f"load average at start {' '.join(f'{x:.2f}' for x in load_start)}")
  report = Report()
  work_dir = tempfile.mkdtemp(prefix="vs_dopamine_")
  try:
    for section in args.sections:
      SECTIONS[section](args, report, work_dir)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  load_end = os.getloadavg()
  devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
  report.add("machine", "JAX backend, devices", f"{jax.default_backend()} [{devices}]")
  report.add("machine", "CPUs", str(os.cpu_count()))
  report.add("machine", "1-min load average, start / end",
             f"{load_start[0]:.2f} / {load_end[0]:.2f}")
  report.add("machine", "benchmark wall time", f"{time.perf_counter() - start:.0f} s")
  report.print()
  flags = " ".join(sys.argv[1:] if argv is None else argv)
  log(f"\ncommand: python benchmarks/vs_dopamine.py {flags}".rstrip())


if __name__ == "__main__":
  main()

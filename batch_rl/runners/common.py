"""What every runner does the same way: configuration errors, seeds, the run's config
record, agent initialisation, minibatch samplers, evaluation and the progress line."""
import functools
import logging
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import checkpointing
from batch_rl import validation
from batch_rl.agents import base as agent_base
from batch_rl.agents import learner
from batch_rl.agents import common as agent_common
from batch_rl.environments import evaluation
from batch_rl.environments import factory
from batch_rl.environments import specs
from batch_rl.environments import perturbations
from batch_rl.runners import run_dir
from batch_rl.runners import seed_axis
from batch_rl.validation import ConfigError

log = logging.getLogger("batch_rl")


def format_duration(seconds: float) -> str:
  """'1h02m03s' or '2m03s'."""
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def seed_int(*entropy: int) -> int:
  """A 31-bit seed derived from integers (environment seeds of runs and evaluations)."""
  return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0] % (2**31 - 1))


def check_base_dir(base_dir: str) -> None:
  """ConfigError unless base_dir is given and could be created and written to
  (nothing is created)."""
  validation.check_writable_dir(base_dir, "--base_dir", "the directory this run writes to")


def check_at_least_one(owner: str, **values: int) -> None:
  """ConfigError naming `owner.name` for the first value that is not an integer >= 1."""
  for name, value in values.items():
    validation.check_int_at_least(f"{owner}.{name}", value, 1)


def check_runner_values(owner: str, *, evaluation_steps: int, eval_epsilon: float,
                        srank_delta: float) -> None:
  """The bindings every value-based runner shares, checked where they enter."""
  validation.check_int_at_least(f"{owner}.evaluation_steps", evaluation_steps, 0)
  validation.check_in_range(f"{owner}.eval_epsilon", eval_epsilon, 0.0, 1.0)
  validation.check_in_range(f"{owner}.srank_delta", srank_delta, 0.0, 1.0, low_open=True,
                            high_open=True)


def is_finished(checkpoint_dir: str, num_iterations: int) -> bool:
  """Whether checkpoints of all `num_iterations` iterations were written."""
  done = checkpointing.list_iterations(checkpoint_dir)
  return bool(done) and done[-1] >= num_iterations - 1


def write_run_config(base_dir: str, writers: Sequence[Any], texts: dict[str, str],
                     rewrite: Callable[[str], str] = lambda text: text) -> None:
  """Writes the operative gin config to <base_dir>/config.gin (atomically) and, with
  `texts` (tag -> line: data, environment and its ROM), as TensorBoard text to every
  writer. `rewrite` maps both gin texts first (a vmapped run's seed binds its own)."""
  run_dir.record_bindings(base_dir, rewrite)
  config = rewrite(gin.operative_config_str())
  checkpointing.write_atomically(os.path.join(base_dir, run_dir.OPERATIVE_FILE),
                                 config.encode())
  for writer in writers:
    writer.text("Config/gin", "```\n" + config + "\n```")
    for tag, text in texts.items():
      writer.text(tag, text)


def write_seed_configs(base_dir: str, seeds, run_dirs: Sequence[str], writers: Sequence[Any],
                       texts: dict[str, str], owner: str,
                       data_seed: Optional[int] = None) -> None:
  """write_run_config for a run of one member or several (`seeds`, a SeedAxis): the
  run's own directory, or every member's with gin texts naming its own seed (and data
  seed and learning rate),
  beside the program's config and bindings in base_dir (the same-run check reads
  those)."""
  if list(run_dirs) == [base_dir]:
    write_run_config(base_dir, writers, texts)
    return
  run_dir.record_bindings(base_dir)
  checkpointing.write_atomically(os.path.join(base_dir, run_dir.OPERATIVE_FILE),
                                 gin.operative_config_str().encode())
  rates = seeds.learning_rates or [None] * len(seeds)
  for directory, seed, rate, writer in zip(run_dirs, seeds.seeds, rates, writers):
    rewrite = functools.partial(seed_axis.seed_config, owner=owner, seed=seed,
                                data_seed=data_seed, learning_rate=rate)
    write_run_config(directory, [writer], texts, rewrite=rewrite)


def build_agent(agent_fn: Callable, binding: str, env, env_name: str):
  """The agent for `env`'s actions, checked against its contract (agents/base.py):
  agent_fn(num_actions=n) for discrete actions, agent_fn(action_spec=box) for
  continuous ones. An agent class of the other kind (its `continuous_actions`) is
  refused, naming `binding` and `env_name`, before it is built."""
  spec = factory.action_spec_of(env)
  continuous = isinstance(spec, specs.BoxActionSpec)
  wants = getattr(agent_fn, "continuous_actions", None)
  if wants is not None and bool(wants) != continuous:
    name = getattr(agent_fn, "__name__", repr(agent_fn))
    if continuous:
      raise ConfigError(
          f"`{binding}` = {name} is an agent for discrete actions, but {env_name} has "
          f"continuous actions (a {spec.shape} box); bind an actor-critic agent "
          "(@SACAgent, @CQLSACAgent; gin_configs/mujoco/).")
    raise ConfigError(
        f"`{binding}` = {name} is an agent for continuous actions, but {env_name} has "
        f"{spec.num_actions} discrete actions; bind a value-based agent (@DQNAgent, ...).")
  agent = agent_fn(action_spec=spec) if continuous else agent_fn(
      num_actions=spec.num_actions)
  try:
    agent_base.check_agent(agent, binding)
  except TypeError as e:
    raise ConfigError(str(e)) from e
  return agent


def init_agent_state(agent, key: jax.Array, state_shape: tuple[int, ...], source: str):
  """agent.init(key, state_shape), with a network that does not fit the data's states
  (or returns no features) reported as a ConfigError naming `source`."""
  try:
    return agent.init(key, state_shape)
  except agent_common.RepresentationError as e:
    raise ConfigError(str(e)) from e
  except ValueError as e:
    raise ConfigError(
        f"The network of {type(agent).__name__} does not take the states of {source} "
        f"(shape {tuple(getattr(state_shape, 'shape', state_shape))}): {e} Bind the agent's `network` to a network for "
        "this data.") from e


def make_sampler(sample_transitions: Callable, batch_size: int, *, stack_size: int,
                 update_horizon: int, gamma: float) -> Callable:
  """`(key, data) -> batch` drawing `batch_size` transitions with `sample_transitions`
  (the fixed data's, the circular buffer's or the prioritized one's)."""

  def sample(key, data):
    return sample_transitions(key, data, batch_size, stack_size=stack_size,
                              update_horizon=update_horizon, gamma=gamma)

  return sample


class Evaluator:
  """The evaluation phase of a run: `num_envs` environments in lockstep, per seed.

  Environment i of iteration t is seeded by seed_int(seed, 3, t, i) and the policy's
  keys derive from fold_in(fold_in(key, 2), t), so an iteration's evaluation does not
  depend on what ran before it (a resumed run evaluates as an uninterrupted one).

  `seed` and `key` are one run's, or lists of them, one per seed of a vmapped run: the
  seeds' environments then step together, with one policy call per step vmapped over
  the seeds' stacked parameters (`evaluate_seeds`), and seed k's phase is the one a
  solo run with seed k plays.
  """

  def __init__(self, env_name: str, act: Callable, *, seed, key, num_envs: int,
               steps: int, epsilon: float):
    self.env_name = env_name
    self.seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    keys = list(key) if isinstance(key, (list, tuple)) else [key]
    self._keys = [jax.random.fold_in(k, 2) for k in keys]
    self.num_envs = num_envs
    self.steps = steps
    self.epsilon = epsilon
    self._agent_act = act
    self._acts = {None: self._jit_policy(act)}  # perturbation (kind, level) -> policy
    # Built now, so that what evaluation needs (the vector env in the installed ale-py,
    # the ROM) fails while the runner is constructed, not after an iteration of
    # training; a batch that can be reseeded (the vector env) is kept for every phase.
    self._envs = evaluation.create_environments(env_name, self._env_seeds(0))
    self._unplayed_for = 0  # the iteration self._envs are seeded for and not yet played

  def _jit_policy(self, act: Callable) -> Callable:
    """jit of (params, states, keys) -> actions for all seeds' environments at once."""
    shape, epsilon = (len(self.seeds), self.num_envs), self.epsilon

    def seeds_act(params, states, keys):
      states = states.reshape(shape + states.shape[1:])
      keys = keys.reshape(shape + keys.shape[1:])
      actions = jax.vmap(act, in_axes=(0, 0, 0, None))(params, states, keys, epsilon)
      return actions.reshape((-1,) + actions.shape[2:])  # [seeds * envs, *action]

    solo_act = lambda params, states, keys: act(params, states, keys, epsilon)
    return jax.jit(seeds_act if len(self.seeds) > 1 else solo_act)

  def _policy(self, perturbation: Optional[tuple[str, float]]) -> Callable:
    """The jitted policy that sees states perturbed by (kind, level), or plain (None)."""
    if perturbation not in self._acts:
      kind, level = perturbation
      self._acts[perturbation] = self._jit_policy(
          perturbations.perturbed_act(self._agent_act, kind, level))
    return self._acts[perturbation]

  def _env_seeds(self, iteration: int) -> list[int]:
    return [seed_int(seed, 3, iteration, i) for seed in self.seeds
            for i in range(self.num_envs)]

  def _environments(self, iteration: int):
    """The phase's environments, seeded for `iteration` (those built at construction
    serve iteration 0's phase as they are)."""
    if self._unplayed_for != iteration:
      if hasattr(self._envs, "reseed"):
        self._envs.reseed(self._env_seeds(iteration))
      else:  # Python environments are cheap to build, and seeded when built
        self._envs.close()
        self._envs = evaluation.create_environments(self.env_name,
                                                    self._env_seeds(iteration))
    self._unplayed_for = None
    return self._envs

  def evaluate_seeds(self, params: Any, iteration: int,
                     should_stop: Optional[Callable[[], bool]] = None,
                     perturbation: Optional[tuple[str, float]] = None,
                     steps: Optional[int] = None) -> list[evaluation.EvalResult]:
    """The evaluation of `iteration` for every seed (params stacked on a leading seed
    axis when there are several); evaluation.Stopped once `should_stop()` is True.

    `perturbation` (kind, level) evaluates with the states the agent sees perturbed
    (environments/perturbations.py) and nothing else changed: the same environments,
    seeds and policy keys as the plain evaluation of `iteration`, so level 0 plays its
    episodes exactly, and each (kind, level) its own draws, whatever ran before.
    `steps` replaces the phase's step budget.
    """
    envs = self._environments(iteration)
    keys = [jax.random.fold_in(k, iteration) for k in self._keys]
    act = self._policy(perturbation)
    policy = lambda states, step_keys: act(params, states, step_keys)
    return evaluation.evaluate_groups(policy, envs, self.steps if steps is None else steps,
                                      keys, should_stop=should_stop)

  def __call__(self, params: Any, iteration: int,
               should_stop: Optional[Callable[[], bool]] = None) -> evaluation.EvalResult:
    """The evaluation of `iteration` of a solo run."""
    return self.evaluate_seeds(params, iteration, should_stop)[0]


class Progress:
  """The console line after each iteration, with the mean iteration time's ETA."""

  def __init__(self, total: int):
    self.total = total
    self._durations: list[float] = []
    self._start: Optional[float] = None

  def start(self) -> None:
    self._start = time.perf_counter()

  def done(self, done: int, fields: str, count: int = 1) -> None:
    """Logs 'iteration {done}/{total} | fields | <s> s | ETA' for `count` iterations
    that ended now."""
    elapsed = time.perf_counter() - self._start
    self._durations.append(elapsed / count)
    eta = np.mean(self._durations) * (self.total - done)
    log.info("iteration %d/%d | %s | %.1f s | ETA %s", done, self.total, fields, elapsed,
             format_duration(eta))
    self._start = time.perf_counter()


class DivergenceError(RuntimeError):
  """Training produced a non-finite loss, Q-value or parameter; the run stopped."""


# Failures of a run that started (train.py exits 1 on them; input errors exit 2;
# a graceful stop, stop_signal.Preempted, exits 3).
RUN_ERRORS = (DivergenceError, checkpointing.WriteError)


# Values whose non-finiteness stops a run (large finite values are the phenomenon this
# codebase studies, and are only logged).
WATCHED_TAGS = ("Train/Loss", "Value/QData", "Value/QMax")
_all_finite = jax.jit(lambda tree: jnp.all(jnp.stack(
    [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)])))


def check_finite(iteration: int, num_iterations: int, metrics: dict[str, float],
                 params: Optional[Any], last_metrics: dict[str, float],
                 checkpoint_dir: str) -> None:
  """Raises DivergenceError when this iteration's loss, Q-values or parameters are not
  finite, naming the iteration, the last finite values and the last good checkpoint
  (states are checkpointed only after this check, so every kept one is finite).
  `params` None skips the parameter scan (a second check in the same iteration)."""
  problems = []
  fraction = metrics.get(learner.NON_FINITE, 0.0)
  if fraction:
    problems.append(f"{fraction:.1%} of its gradient steps had a NaN or infinite loss")
  problems += [f"{tag} = {metrics[tag]}" for tag in WATCHED_TAGS
               if tag in metrics and not math.isfinite(metrics[tag])]
  if params is not None and not bool(_all_finite(params)):
    problems.append("the network's parameters hold NaN or infinite values")
  if not problems:
    return
  last = ", ".join(f"{tag} {last_metrics[tag]:.4g}" for tag in
                   ("Train/Loss", "Value/QMax", "Rank/srank") if tag in last_metrics)
  iterations = checkpointing.list_iterations(checkpoint_dir)
  kept = (f"the last good checkpoint is iteration {iterations[-1]}'s in {checkpoint_dir}"
          if iterations else "no checkpoint was written yet")
  raise DivergenceError(
      f"Training diverged in iteration {iteration + 1} of {num_iterations} (TensorBoard "
      f"step {iteration}): {'; '.join(problems)}. "
      + (f"Last finite values (the iteration before): {last}. " if last else "")
      + f"Nothing of this iteration was logged or checkpointed; {kept}. A smaller "
      "`create_optimizer.learning_rate` (or gradient clipping, "
      "`create_optimizer.max_grad_norm`) usually keeps it finite.")


def check_finite_seeds(iteration: int, num_iterations: int, seeds, metrics: Sequence[dict],
                       params: Optional[Any], last_metrics: Sequence[dict],
                       checkpoint_dirs: Sequence[str], run_dirs: Sequence[str]) -> None:
  """check_finite for every seed of a run (`seeds`, a SeedAxis; `params` stacked, or
  None), the seed and its directory named when there are several."""
  seed_params = [None] * len(seeds) if params is None else seeds.split(params)
  for k, (seed_metrics, seed_param) in enumerate(zip(metrics, seed_params)):
    try:
      check_finite(iteration, num_iterations, seed_metrics, seed_param, last_metrics[k],
                   checkpoint_dirs[k])
    except DivergenceError as e:
      if not seeds.vmapped:
        raise
      raise DivergenceError(
          f"Seed {seeds.seeds[k]} of this run's {len(seeds)} ({run_dirs[k]}): {e} The "
          "seeds train in one program, so all stopped; each keeps its checkpoints.") from e

"""GridworldRunner: neural FQI on the gridworld for a set of seeds, one vmapped program.

  python train.py --base_dir=runs/grid_t200 --gin_files=gin_configs/gridworld/fqi_t200.gin

All seeds train together (jit(vmap) over a leading seed axis); the fitting iterations
run in calls of `iterations_per_call` (one compiled lax.scan each) so that progress can
be logged; `iterations_per_call = num_iterations` makes the whole run one call. Each
seed writes its TensorBoard events to base_dir/seed_<k>/; step = fitting iteration.
After every call the seeds' state is checkpointed; rerunning the command resumes
from the last call (events logged past it are dropped first), and a finished run
says so and returns. SIGTERM/SIGUSR2 stop the run after the current call's checkpoint.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Optional, Sequence

import gin
import numpy as np

from batch_rl import checkpointing
from batch_rl import summary_writer
from batch_rl.agents import learner
from batch_rl.agents import regularizer_terms
from batch_rl.gridworld import data
from batch_rl.gridworld import env as env_lib
from batch_rl.gridworld import fqi
from batch_rl.gridworld import networks
from batch_rl.runners import common
from batch_rl.runners import run_dir
from batch_rl.runners import stop_signal
from batch_rl.runners.common import ConfigError
from batch_rl.tf_utils import gfile

log = logging.getLogger("batch_rl")

# The flat coefficients the regulariser terms replaced: binding -> what to bind instead.
_REPLACED = {
    "lp_coefficient": ("regularization.lp = @LpRegularizer()", "LpRegularizer.coefficient",
                       "`LpRegularizer.method = 'gram'`", "lp.gin"),
    "dr3_coefficient": ("regularization.dr3 = @DR3Regularizer()",
                        "DR3Regularizer.coefficient", "`DR3Regularizer.variant = 'paper'`",
                        "dr3.gin"),
}


def _replaced_binding(key: str, value) -> ConfigError:
  term, coefficient, setting, file = _REPLACED[key]
  return ConfigError(
      f"`GridworldRunner.{key}` was replaced by the regulariser terms every agent uses: "
      f"bind `{term}` with `{coefficient} = {value!r}` and {setting} "
      f"(gin_configs/regularizers/{file}; gin_configs/gridworld/{file} does this for "
      "the gridworld), and remove the old binding.")


@gin.configurable(denylist=["base_dir"])
class GridworldRunner:
  """Offline or online neural FQI against the exact oracle (IUP gridworld experiments).

  Args:
    base_dir: output directory (config.gin, seed_<k>/ TensorBoard runs).
    env_fn: builds the MDP (gin: `@GridworldEnv`).
    model_fn: `(features, num_actions) -> GridModel` (`@mlp_model`, `@deep_linear_model`).
    optimizer_fn: optax optimizer factory (`@create_optimizer`; Fu: Adam 5e-3, eps 1e-8).
    seeds: the seeds trained together (network init, data, sampling).
    num_iterations: K fitting iterations (IUP: 500).
    gradient_steps: T gradient steps per fitting iteration (IUP: 10 vs 200).
    batch_size: minibatch size (128).
    target: "soft_q" (FQI), "fqe", "mc", "q_star" (supervised), "oracle" (exact Q^pi).
    full_batch: every step on all (s, a) pairs with exact expected targets.
    reinitialize: fresh network and Adam state at every fitting iteration.
    regularizers: loss terms added to the TD loss (batch_rl/agents/regularizer_terms.py:
      Lp, DR3, CQL), e.g. `GridworldRunner.regularizers = [@LpRegularizer()]`; the
      terms bound by name (`regularization.lp = @LpRegularizer()`, as for every agent)
      are added after these.
    lp_coefficient, dr3_coefficient: replaced by `regularizers`; binding them is a
      ConfigError that says what to bind instead.
    env_steps_per_iteration: E; 0 = offline on a fixed dataset, > 0 = online.
    updates_per_env_step: if set (online), gradient_steps = updates_per_env_step * E.
    buffer_capacity: FIFO capacity (10,000).
    dataset_episodes: offline dataset size in 50-step episodes (200 = 10,000 steps).
    data_policy: "uniform" or "expert": collects the offline data; FQE/MC evaluate it.
    srank_delta: delta of srank, in (0, 1).
    diagnostics_batch_size: sampled transitions of Rank/srank.
    log_every: fitting iterations between metric evaluations.
    iterations_per_call: fitting iterations per compiled call (None: all of them).
    scan_unroll: unroll of the scan over the T steps.
    fast_compile: compile with XLA:CPU's cheaper optimisation level (tests and smoke
      runs of a few iterations, where compilation dominates; slower code).
  """

  def __init__(self, base_dir: str,
               env_fn: Callable[..., env_lib.GridworldEnv] = env_lib.GridworldEnv,
               model_fn: Callable[..., networks.GridModel] = networks.mlp_model,
               optimizer_fn: Callable = learner.create_optimizer,
               seeds: Sequence[int] = (0, 1, 2, 3, 4), num_iterations: int = 500,
               gradient_steps: int = 10, batch_size: int = 128, target: str = "soft_q",
               full_batch: bool = False, reinitialize: bool = False,
               regularizers: Sequence[regularizer_terms.Regularizer] = (),
               lp_coefficient: Optional[float] = None,
               dr3_coefficient: Optional[float] = None,
               env_steps_per_iteration: int = 0,
               updates_per_env_step: Optional[int] = None, buffer_capacity: int = 10_000,
               dataset_episodes: int = 200, data_policy: str = "uniform",
               srank_delta: float = 0.01, diagnostics_batch_size: int = 128,
               log_every: int = 1, iterations_per_call: Optional[int] = 50,
               scan_unroll: int = 1, fast_compile: bool = False):
    common.check_base_dir(base_dir)
    name = "GridworldRunner"
    for key, value in (("lp_coefficient", lp_coefficient),
                       ("dr3_coefficient", dr3_coefficient)):
      if value is not None:
        raise _replaced_binding(key, value)
    # The runner's own terms, then those bound by name (`regularization.<name>`).
    terms = tuple(regularizers) + regularizer_terms.regularization()
    try:
      fqi.check_regularizers(terms)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    seeds = tuple(int(s) for s in seeds)
    if not seeds or len(set(seeds)) != len(seeds):
      raise ConfigError(f"`{name}.seeds` must be distinct seeds, got {seeds}.")
    common.check_at_least_one(name, num_iterations=num_iterations, batch_size=batch_size,
                              buffer_capacity=buffer_capacity, log_every=log_every,
                              diagnostics_batch_size=diagnostics_batch_size,
                              scan_unroll=scan_unroll)
    if env_steps_per_iteration < 0:
      raise ConfigError(f"`{name}.env_steps_per_iteration` must be >= 0, got "
                        f"{env_steps_per_iteration}.")
    if updates_per_env_step is not None:
      if env_steps_per_iteration < 1 or updates_per_env_step < 1:
        raise ConfigError(f"`{name}.updates_per_env_step` needs "
                          f"`{name}.env_steps_per_iteration` >= 1 and a value >= 1.")
      gradient_steps = updates_per_env_step * env_steps_per_iteration
    if gradient_steps < 1:
      raise ConfigError(f"`{name}.gradient_steps` must be >= 1, got {gradient_steps}.")
    if not 0.0 < srank_delta < 1.0:
      raise ConfigError(f"`{name}.srank_delta` must be in (0, 1), got {srank_delta}.")
    if num_iterations % log_every:
      raise ConfigError(f"`{name}.num_iterations` ({num_iterations}) must be a multiple "
                        f"of `{name}.log_every` ({log_every}).")
    try:
      target = fqi.Target(target)
    except ValueError:
      raise ConfigError(f"`{name}.target` must be one of "
                        f"{[t.value for t in fqi.Target]}, got {target!r}.") from None
    if target == fqi.Target.MC and (env_steps_per_iteration or full_batch):
      raise ConfigError(f"`{name}.target` = 'mc' needs the offline dataset "
                        f"(`{name}.env_steps_per_iteration` = 0, full_batch = False).")
    if full_batch and (fqi.needs_next_representation(terms) or env_steps_per_iteration):
      raise ConfigError(f"`{name}.full_batch` uses exact targets over all pairs, without "
                        "next states: it cannot be combined with a regulariser that reads "
                        "phi(s') (DR3) or with online collection.")
    if env_steps_per_iteration > buffer_capacity:
      raise ConfigError(f"`{name}.env_steps_per_iteration` exceeds "
                        f"`{name}.buffer_capacity`.")
    if data_policy not in ("uniform", "expert"):
      raise ConfigError(f"`{name}.data_policy` must be 'uniform' or 'expert', got "
                        f"{data_policy!r}.")
    try:
      self.env = env_fn()
      self.model = model_fn(self.env.features, self.env.num_actions)
      optimizer = optimizer_fn()
    except ConfigError:
      raise
    except ValueError as e:
      raise ConfigError(str(e)) from e
    horizon = self.env.horizon
    if env_steps_per_iteration == 0 and dataset_episodes * horizon > buffer_capacity:
      raise ConfigError(f"`{name}.dataset_episodes` x horizon = "
                        f"{dataset_episodes * horizon} transitions exceed "
                        f"`{name}.buffer_capacity` = {buffer_capacity}.")
    if env_steps_per_iteration == 0 and dataset_episodes < 1:
      raise ConfigError(f"`{name}.dataset_episodes` must be >= 1 offline.")

    self.base_dir = base_dir
    self.checkpoint_dir = os.path.join(base_dir, "checkpoints")
    run_dir.check_same_run(base_dir)
    self.seeds = seeds
    self.num_iterations = num_iterations
    self.log_every = log_every
    per_call = num_iterations if iterations_per_call is None else iterations_per_call
    self.logs_per_call = max(1, min(per_call, num_iterations) // log_every)
    self.config = fqi.FQIConfig(
        gradient_steps=gradient_steps, batch_size=batch_size, target=target,
        full_batch=full_batch, reinitialize=reinitialize, regularizers=terms,
        env_steps_per_iteration=env_steps_per_iteration, buffer_capacity=buffer_capacity,
        dataset_episodes=dataset_episodes, srank_delta=srank_delta,
        diagnostics_batch_size=diagnostics_batch_size, log_every=log_every,
        scan_unroll=scan_unroll)
    self.arrays = data.env_arrays(self.env, data_policy)
    self._init, self._run = fqi.make_vmapped(self.config, self.model, optimizer,
                                             fast_compile=fast_compile)
    self.state = None  # the seeds' FQIState after `run` (for inspection)

  def describe(self) -> str:
    c = self.config
    mode = (f"online, {c.env_steps_per_iteration} env steps per iteration"
            if c.env_steps_per_iteration else f"offline, {c.dataset_episodes} episodes")
    return (f"{self.env.describe()}; {self.model.description}; target {c.target.value}, "
            f"T={c.gradient_steps}, K={self.num_iterations}, "
            f"{'full batch' if c.full_batch else f'batch {c.batch_size}'}, {mode}; "
            f"reinit={c.reinitialize}; regularizers: "
            f"{fqi.describe_regularizers(c.regularizers)}; "
            f"seeds {list(self.seeds)}")

  def run(self) -> dict[str, np.ndarray]:
    """Trains every seed for num_iterations, resuming from base_dir's checkpoint;
    returns {tag: [seeds, logs]} arrays of the iterations this call ran."""
    if common.is_finished(self.checkpoint_dir, self.num_iterations):
      log.info("%s is complete (%d iterations); nothing to do.", self.base_dir,
               self.num_iterations)
      return {}
    gfile().makedirs(self.base_dir)
    state = self._init(fqi.seed_keys(self.seeds), self.arrays)
    restored = checkpointing.restore_latest(self.checkpoint_dir, state)
    done = 0 if restored is None else (restored[0] + 1) // self.log_every
    seed_dirs = [os.path.join(self.base_dir, f"seed_{s}") for s in self.seeds]
    for seed_dir in seed_dirs:  # events an interrupted run logged past its checkpoint
      summary_writer.drop_events_after(seed_dir, done * self.log_every - 1)
    writers = [summary_writer.SummaryWriter(d) for d in seed_dirs]
    if restored is None:
      common.write_run_config(self.base_dir, writers, {"Config/data": self.describe()})
    else:
      state = restored[1]
      log.info("Resuming %s from fitting iteration %d.", self.base_dir,
               done * self.log_every)
    log.info("%s", self.describe())
    total_logs = self.num_iterations // self.log_every
    history: dict[str, list] = {}
    start_all = time.perf_counter()
    progress = common.Progress(self.num_iterations)
    stop = stop_signal.GracefulStop()
    with stop:
      while done < total_logs:
        n = min(self.logs_per_call, total_logs - done)
        progress.start()
        start = time.perf_counter()
        state, metrics = self._run(state, self.arrays, n)
        metrics = fqi.to_numpy(metrics)  # [seeds, n]
        seconds = time.perf_counter() - start
        # Any seed's NaN or infinite loss (np.max propagates NaN) or parameters stop the run.
        common.check_finite((done + n) * self.log_every - 1, self.num_iterations,
                            {"Train/Loss": float(np.max(metrics["Train/Loss"]))}, state.params,
                            {}, self.checkpoint_dir)
        for j in range(n):
          step = (done + j + 1) * self.log_every - 1
          for i, w in enumerate(writers):
            w.scalars(step, {k: float(v[i, j]) for k, v in metrics.items()})
        for k, v in metrics.items():
          history.setdefault(k, []).append(v)
        done += n
        iterations = done * self.log_every
        checkpointing.save(self.checkpoint_dir, iterations - 1, state, keep=2)
        rate = (self.log_every * n * len(self.seeds)) / seconds
        progress.done(iterations, (
            f"{len(self.seeds)} seeds | {rate:.1f} seed-iterations/s | srank "
            f"{np.mean(metrics['Gridworld/srank_all_states'][:, -1]):.1f} | |Q-Q*| "
            f"{np.mean(metrics['Gridworld/QError_mean'][:, -1]):.3g} | normalised return "
            f"{np.mean(metrics['Gridworld/NormalizedReturn'][:, -1]):.2f}"),
                      count=n * self.log_every)
        if stop.requested and done < total_logs:  # the call's checkpoint is the position
          raise stop.preempted(f"after fitting iteration {iterations} of "
                               f"{self.num_iterations}", self.checkpoint_dir)
    elapsed = time.perf_counter() - start_all
    log.info("Trained %d seeds x %d fitting iterations in %.1f s (%.3f seeds/s, "
             "compilation included).", len(self.seeds), self.num_iterations, elapsed,
             len(self.seeds) / elapsed)
    for w in writers:
      w.close()
    self.state = state
    return {k: np.concatenate(v, axis=1) for k, v in history.items()}

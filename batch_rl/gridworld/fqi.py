"""Neural fitted Q-iteration on the gridworld: pure, jittable, vmappable over seeds.

The gridworld spec, sections 5-8. One fitting iteration k:
  0. (re-initialisation variant) fresh parameters and optimizer state;
  1. (online) collect `env_steps_per_iteration` transitions with softmax(Qtab / alpha)
     into the FIFO buffer;
  2. freeze the targets of the previous table Qtab (bootstrapped soft max, policy
     evaluation, Monte-Carlo returns, Q* or the exact Q^pi of the current policy);
  3. T = `gradient_steps` Adam steps on minibatches sampled uniformly (with replacement)
     from the buffer, or full-batch over all (s, a) pairs with exact targets; the loss
     is the TD loss plus the regulariser terms of batch_rl/agents/regularizer_terms.py
     (`make_loss`), the same terms every agent adds;
  4. Qtab <- clip(network(all states)); metrics (`iteration_metrics`).

Everything is a pure function of (state, env arrays); `make_program` returns
`init(key, env) -> FQIState` and `run(state, env, num_logs) -> (state, metrics)` where
`run` does `num_logs * log_every` fitting iterations in one lax.scan and returns the
metrics of every `log_every`-th one, stacked. The runner vmaps both over seeds. The
MDP's arrays, the buffer and the rollouts are in batch_rl/gridworld/data.py.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from batch_rl import diagnostics
from batch_rl.agents import regularizer_terms
from batch_rl.gridworld import data
from batch_rl.gridworld import exact_jax
from batch_rl.gridworld import networks


class Target(str, enum.Enum):
  SOFT_Q = "soft_q"  # r + gamma alpha logsumexp(Qtab[s'] / alpha): soft FQI (default)
  FQE = "fqe"        # r + gamma sum_a' pi(a'|s') (Qtab - alpha log pi): policy evaluation
  MC = "mc"          # soft Monte-Carlo return-to-go of the dataset (no bootstrapping)
  Q_STAR = "q_star"  # Q*(s, a): supervised regression (IUP's "[proj]" baseline)
  ORACLE = "oracle"  # exact soft Q^{pi_k}, pi_k = softmax(Qtab / alpha) (IUP App. A.3)


BOOTSTRAPPED = (Target.SOFT_Q, Target.FQE)


@dataclasses.dataclass(frozen=True)
class FQIConfig:
  """Static settings of the FQI program (hashable; the runner fills it from gin).

  Attributes:
    gradient_steps: T, gradient steps per fitting iteration.
    batch_size: B of the sampled minibatches.
    target: which regression target (`Target`).
    full_batch: every step on all S*A pairs with exact (expected) targets instead of
      sampled minibatches (Fu's ExactFQI; the deep linear network; the supervised
      baseline).
    reinitialize: fresh parameters and optimizer state at every fitting iteration.
    regularizers: regularizer_terms terms added to the TD loss, in order (e.g.
      `LpRegularizer(0.001, method="gram")`); they hash by identity, so each tuple of
      term objects compiles its own program. Terms that need network options (CURL,
      VIB) do not apply to the gridworld models (`check_regularizers`).
    env_steps_per_iteration: E; 0 = offline (fixed dataset), > 0 = online collection.
    buffer_capacity: FIFO capacity (10,000).
    dataset_episodes: offline dataset = this many episodes of the data policy.
    srank_delta: delta of srank (0.01).
    diagnostics_batch_size: transitions of the sampled batch whose srank is Rank/srank.
    log_every: fitting iterations between two metric evaluations.
    q_clip: Qtab is clipped to [-q_clip, q_clip] (Fu clips at 1e5).
    scan_unroll: lax.scan unroll of the T gradient steps (XLA:CPU runs rolled scans of
      small steps slowly; unrolling trades compile time for speed).
  """

  gradient_steps: int = 10
  batch_size: int = 128
  target: Target = Target.SOFT_Q
  full_batch: bool = False
  reinitialize: bool = False
  regularizers: tuple[regularizer_terms.Regularizer, ...] = ()
  env_steps_per_iteration: int = 0
  buffer_capacity: int = 10_000
  dataset_episodes: int = 200
  srank_delta: float = 0.01
  diagnostics_batch_size: int = 128
  log_every: int = 1
  q_clip: float = 1e5
  scan_unroll: int = 1


@flax.struct.dataclass
class FQIState:
  params: Any
  opt_state: Any
  q_table: jax.Array  # [S, A] frozen target table of the last iteration
  buffer: data.Buffer
  env_state: jax.Array  # int32, current state of the online episode
  env_time: jax.Array   # int32, its time step
  rng: jax.Array
  iteration: jax.Array  # int32, fitting iterations done
  seed_key: jax.Array   # the seed's root key (re-initialisation draws from it)


def _clip(q, limit):
  return jnp.clip(jnp.nan_to_num(q, nan=limit, posinf=limit, neginf=-limit), -limit, limit)


def _targets(cfg: FQIConfig, q_table, env: data.EnvArrays):
  """(v_next [S], y_table [S, A]) frozen for one fitting iteration."""
  if cfg.target == Target.SOFT_Q:
    v = exact_jax.soft_value(q_table, env.alpha)
  elif cfg.target in (Target.FQE, Target.MC):
    v = exact_jax.policy_value(q_table, env.data_policy, env.alpha)
  else:
    v = jnp.zeros(q_table.shape[:1])
  if cfg.target == Target.Q_STAR:
    y_table = env.q_star
  elif cfg.target == Target.ORACLE:
    y_table = exact_jax.soft_q_pi(exact_jax.boltzmann_policy(q_table, env.alpha),
                                  env.transitions, env.rewards, env.gamma, env.alpha)
  else:
    y_table = exact_jax.backup(v, env.transitions, env.rewards, env.gamma)
  return v, y_table


def _sample_targets(cfg, v, y_table, s, a, s2, g, env):
  if cfg.target in BOOTSTRAPPED:
    return env.rewards[s] + env.gamma * v[s2]
  if cfg.target == Target.MC:
    return g
  return y_table[s, a]


def needs_next_representation(terms: Sequence[regularizer_terms.Regularizer]) -> bool:
  """Whether a term reads phi(s') (e.g. DR3)."""
  return any(term.needs_next_representation for term in terms)


def check_regularizers(terms: Sequence[regularizer_terms.Regularizer]) -> None:
  """ValueError for a term the gridworld models cannot serve.

  The loss gives the terms Q(s, .), phi(s, a), phi(s', a), the actions and
  (all-False) terminals; terms asking for network options (CURL's projection, VIB's
  bottleneck) also need image states or the network's KL, which these models lack.
  """
  for term in terms:
    options = getattr(term, "network_options", None)
    if options:
      raise ValueError(
          f"{type(term).__name__} needs network options {options} that the gridworld "
          "models do not have; the gridworld FQI supports terms that read Q-values and "
          "features only (LpRegularizer, DR3Regularizer, CQLRegularizer).")


def describe_regularizers(terms: Sequence[regularizer_terms.Regularizer]) -> str:
  """A stable one-line description of the terms and their settings ("none" if empty)."""
  if not terms:
    return "none"
  return ", ".join(
      f"{type(term).__name__}("
      + ", ".join(f"{k}={v!r}" for k, v in sorted(vars(term).items())) + ")"
      for term in terms)


def make_loss(cfg: FQIConfig, model: networks.GridModel):
  """loss(params, s, a, s2, y, key) -> (loss, metrics) of one minibatch.

  Mean squared TD error against the frozen targets y, plus every term of
  `cfg.regularizers` (as `ValueAgent.add_regularizers` adds them to an agent's loss)
  on `LossInputs` of the minibatch: q_values = Q(s, .) [B, A], phi = the features of
  the (s, a) pairs, phi_next = the features at (s', a) (computed only when a term asks
  for them), action = next_action = a, terminal all False (the gridworld's episodes
  only end by time). `key` is split among the terms (None: no term may need one).
  """
  terms = tuple(cfg.regularizers)
  with_next = needs_next_representation(terms)

  def loss_fn(params, s, a, s2, y, key=None):
    q_values, phi = model.q_values_and_features(params, s, a)
    q = jnp.take_along_axis(q_values, a[:, None], axis=1)[:, 0]
    td = jnp.mean((q - y) ** 2)
    total, metrics = td, {"Gridworld/TDLoss": td}
    if terms:
      phi_next = model.q_and_features(params, s2, a)[1] if with_next else None
      inputs = regularizer_terms.LossInputs(
          q_values=q_values, phi=phi, phi_next=phi_next, action=a, next_action=a,
          terminal=jnp.zeros(a.shape, bool))
      keys = [None] * len(terms) if key is None else jax.random.split(key, len(terms))
      for term, term_key in zip(terms, keys):
        value, term_metrics = term(inputs, term_key)
        total = total + value
        metrics.update(term_metrics)
    metrics["Train/Loss"] = total
    return total, metrics

  return loss_fn


def make_program(cfg: FQIConfig, model: networks.GridModel,
                 optimizer: optax.GradientTransformation):
  """(init, run) of one seed; vmap them over seeds (see module docstring)."""
  check_regularizers(cfg.regularizers)
  loss_fn = make_loss(cfg, model)

  def init(key, env: data.EnvArrays) -> FQIState:
    k_init, k_data, k_run = jax.random.split(key, 3)
    params = model.init(k_init)
    buffer = data.Buffer.empty(cfg.buffer_capacity)
    if cfg.env_steps_per_iteration == 0:
      buffer = buffer.add(*data.rollout_dataset(k_data, env, cfg.dataset_episodes))
    return FQIState(params=params, opt_state=optimizer.init(params),
                    q_table=_clip(model.q_table(params), cfg.q_clip), buffer=buffer,
                    env_state=env.start_state, env_time=jnp.zeros((), jnp.int32),
                    rng=k_run, iteration=jnp.zeros((), jnp.int32), seed_key=key)

  def collect(state: FQIState, key, env: data.EnvArrays) -> FQIState:
    policy = exact_jax.boltzmann_policy(state.q_table, env.alpha)
    buffer, s, t = data.collect(key, state.buffer, state.env_state, state.env_time,
                                policy, env, cfg.env_steps_per_iteration)
    return state.replace(buffer=buffer, env_state=s, env_time=t)

  def fit_iteration(state: FQIState, env: data.EnvArrays):
    rng, k_collect, k_steps = jax.random.split(state.rng, 3)
    params, opt_state = state.params, state.opt_state
    if cfg.reinitialize:
      params = model.init(jax.random.fold_in(state.seed_key, state.iteration + 1))
      opt_state = optimizer.init(params)
    if cfg.env_steps_per_iteration:
      state = collect(state, k_collect, env)
    v, y_table = _targets(cfg, state.q_table, env)
    buf = state.buffer
    s_all, a_all = jnp.divmod(jnp.arange(y_table.size), y_table.shape[1])
    # All T minibatches' indices in one draw (uniform with replacement over the filled
    # part): one RNG call per iteration instead of one per step is much faster on CPU.
    n_idx = 1 if cfg.full_batch else cfg.batch_size
    indices = buf.sample_indices(k_steps, cfg.gradient_steps * n_idx).reshape(
        cfg.gradient_steps, n_idx)
    # The regularisers' keys: folded out of k_steps, so the minibatches stay the same
    # with or without terms.
    term_keys = (jax.random.split(jax.random.fold_in(k_steps, 1), cfg.gradient_steps)
                 if cfg.regularizers else None)

    def step(carry, xs):
      idx, term_key = xs
      params, opt_state = carry
      if cfg.full_batch:
        s, a, s2, y = s_all, a_all, s_all, y_table.reshape(-1)
      else:
        s, a, s2 = buf.state[idx], buf.action[idx], buf.next_state[idx]
        y = _sample_targets(cfg, v, y_table, s, a, s2, buf.mc_return[idx], env)
      grads, metrics = jax.grad(loss_fn, has_aux=True)(params, s, a, s2, y, term_key)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), metrics

    (params, opt_state), step_metrics = jax.lax.scan(
        step, (params, opt_state), (indices, term_keys), unroll=cfg.scan_unroll)
    q_table = _clip(model.q_table(params), cfg.q_clip)
    train = {k: jnp.mean(x) for k, x in step_metrics.items()}
    train["Gridworld/LastBatchLoss"] = step_metrics["Train/Loss"][-1]
    # TD error of the new table against the targets it was fitted to, over the data.
    if cfg.full_batch:
      train["Train/TDError"] = jnp.mean((q_table - y_table) ** 2)
    else:
      y = _sample_targets(cfg, v, y_table, buf.state, buf.action, buf.next_state,
                          buf.mc_return, env)
      mask = (jnp.arange(buf.capacity) < buf.size()).astype(jnp.float32)
      err = (q_table[buf.state, buf.action] - y) ** 2
      train["Train/TDError"] = jnp.sum(mask * err) / jnp.maximum(jnp.sum(mask), 1.0)
      train["Train/QData"] = jnp.sum(mask * q_table[buf.state, buf.action]) / jnp.maximum(
          jnp.sum(mask), 1.0)
    state = state.replace(params=params, opt_state=opt_state, q_table=q_table, rng=rng,
                          iteration=state.iteration + 1)
    return state, train

  def metrics_fn(state: FQIState, train, env: data.EnvArrays):
    out = dict(train)
    out.update(iteration_metrics(model, state, env, cfg))
    return out

  def run(state: FQIState, env: data.EnvArrays, num_logs: int):
    def chunk(state, _):
      def inner(st, _):
        return fit_iteration(st, env)

      state, train = jax.lax.scan(inner, state, None, length=cfg.log_every)
      last = {k: v[-1] for k, v in train.items()}
      return state, metrics_fn(state, last, env)

    return jax.lax.scan(chunk, state, None, length=num_logs)

  return init, run


def iteration_metrics(model: networks.GridModel, state: FQIState, env: data.EnvArrays,
                      cfg: FQIConfig) -> dict[str, jax.Array]:
  """Rank, Q* error and exact return of the current table (spec section 8)."""
  delta = cfg.srank_delta
  phi_all = model.features_all(state.params)  # [N, D]
  sv = diagnostics.singular_values(phi_all)
  out = {}
  k = diagnostics.srank(sv, delta)
  out["Gridworld/srank_all_states"] = jnp.where(k >= 0, k, jnp.nan).astype(jnp.float32)
  # Zero rows do not change the nonzero singular values: srank over the free cells.
  rows_per_state = phi_all.shape[0] // env.walls.shape[0]
  free = jnp.repeat(~env.walls, rows_per_state)
  k_free = diagnostics.srank(diagnostics.singular_values(phi_all * free[:, None]), delta)
  out["Gridworld/srank_nonwall"] = jnp.where(k_free >= 0, k_free, jnp.nan).astype(
      jnp.float32)
  out["Gridworld/stable_rank"] = jnp.sum(sv ** 2) / sv[0] ** 2
  out["Gridworld/sigma_max_sq"] = sv[0] ** 2
  out["Gridworld/sigma_min_sq"] = sv[-1] ** 2
  if model.eig_features:
    ke = diagnostics.srank_eig(phi_all, delta)
    out["Rank/srank_eig"] = jnp.where(ke >= 0, ke, jnp.nan).astype(jnp.float32)

  # Rank/srank etc. on a batch of dataset transitions (the DESIGN contract).
  buf = state.buffer
  key = jax.random.fold_in(state.rng, 7)
  idx = buf.sample_indices(key, cfg.diagnostics_batch_size)
  s, a, s2 = buf.state[idx], buf.action[idx], buf.next_state[idx]
  _, phi = model.q_and_features(state.params, s, a)
  _, phi2 = model.q_and_features(state.params, s2, a)
  out.update(diagnostics.feature_diagnostics(phi, phi2, delta))

  q = state.q_table
  err = jnp.abs(q - env.q_star)
  out["Gridworld/QError_mean"] = jnp.mean(err)
  out["Gridworld/QError_max"] = jnp.max(err)
  tq = exact_jax.backup(exact_jax.soft_value(q, env.alpha), env.transitions, env.rewards,
                        env.gamma)
  out["Gridworld/TQError_mean"] = jnp.mean(jnp.abs(tq - env.q_star))
  if cfg.target in (Target.FQE, Target.MC):
    out["Gridworld/QPiError_mean"] = jnp.mean(jnp.abs(q - env.q_data_policy))
  ret = exact_jax.expected_return(exact_jax.boltzmann_policy(q, env.alpha),
                                  env.transitions, env.rewards, env.start_state,
                                  env.horizon)
  out["Eval/AverageReturn"] = ret
  out["Gridworld/ExactReturn"] = ret
  out["Gridworld/NormalizedReturn"] = (ret - env.return_random) / (
      env.return_expert - env.return_random)
  return out


def seed_keys(seeds) -> jax.Array:
  """[n, 2] PRNG keys, one per seed (distinct seeds give distinct keys)."""
  return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


# XLA:CPU options that roughly halve the compile time of these programs at the cost of
# slower code: for tests and smoke runs, where compilation dominates.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0,
                        "xla_llvm_disable_expensive_passes": True}


def make_vmapped(cfg: FQIConfig, model, optimizer, fast_compile: bool = False):
  """jit(vmap) of init and run over a leading seed axis; `run`'s num_logs is static.

  fast_compile: compile with `FAST_COMPILE_OPTIONS` (tests; not for long runs).
  """
  init, run = make_program(cfg, model, optimizer)
  opts = dict(FAST_COMPILE_OPTIONS) if fast_compile else None
  v_init = jax.jit(jax.vmap(init, in_axes=(0, None)), compiler_options=opts)
  v_run = jax.jit(jax.vmap(run, in_axes=(0, None, None)), static_argnums=2,
                  compiler_options=opts)
  return v_init, v_run


def to_numpy(tree) -> dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in jax.device_get(tree).items()}

"""Evaluation phase: run a policy in the real environment for a step budget.

Dopamine's protocol (`Runner._run_one_phase`): episodes are played until the steps of
the phase reach `min_steps`; the episode in progress when the budget is reached is
played to its end, so every episode counted is complete, and the phase's score is the
mean undiscounted return of those episodes. With several environments stepping in
lockstep (one batched policy call per step), an environment that finishes an episode
starts another only while the phase total is below the budget; episodes in progress
always finish. With one environment this is exactly Dopamine's loop.

Several phases can run in one loop (`evaluate_groups`): the environments are split
into groups of equal size, each group with its own budget, key and result, all
stepped together with one policy call per step (the seeds of a vmapped run).

Randomness is per environment: the policy gets one key per row, and the key of
environment i at its j-th step is fold_in(fold_in(key, i), j). So environment i's
episodes depend only on (key, i, its own seed), not on how many environments step
beside it: evaluating [e0, e1, e2] in lockstep plays, for each e_i, the same episodes
as evaluating e_i alone (with `env_ids=[i]`), as long as the phase lets it play them
(the step budget is shared, so with more environments each plays fewer episodes).

The agent's state is the stack of the last `stack_size` frames, zeroed at every reset
(Dopamine's `_reset_state`), frames on the last axis, of the environment's observation
dtype (uint8 frames for Atari and MinAtar, float32 vectors for gym).

Environments come as a list of `Environment`s (stepped one by one in Python,
`LockstepEnvs`) or as a batch that steps them all in one call, such as ale-py's C++
vector env (`atari_vector.AtariVectorEnvironments`): anything with `num_envs`,
`observation_spec`, `stack_size`, `reset()` and `step(actions, active)` as
`LockstepEnvs` has them.
"""
import dataclasses
from typing import Callable, Optional, Sequence

import gin
import jax
import numpy as np

from batch_rl import validation
from batch_rl.environments import atari_vector
from batch_rl.environments import factory
from batch_rl.environments.factory import Environment

# (states [N, *frame_shape, S] of the observation dtype, keys [N] (one PRNG key per row))
# -> int actions [N]
PolicyFn = Callable[[np.ndarray, jax.Array], jax.Array]

# (keys of the environments [N], their step counts [N]) -> the keys of this step [N]
_step_keys = jax.jit(jax.vmap(jax.random.fold_in))
# (key, env ids [N]) -> the environments' keys [N]
_env_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of one evaluation phase."""

  episode_returns: tuple[float, ...]
  episode_lengths: tuple[int, ...]
  num_steps: int
  episode_envs: tuple[int, ...] = ()  # env_ids entry of the env that played each episode
  # The environments' own score of a policy from its episodes' returns (bsuite's), or None.
  score_fn: Optional[Callable[[Sequence[float]], float]] = None

  def of_env(self, env_id: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(returns, lengths) of the episodes environment `env_id` played, in order."""
    picked = [k for k, e in enumerate(self.episode_envs) if e == env_id]
    return (tuple(self.episode_returns[k] for k in picked),
            tuple(self.episode_lengths[k] for k in picked))

  @property
  def num_episodes(self) -> int:
    return len(self.episode_returns)

  @property
  def average_return(self) -> float:
    return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

  def metrics(self) -> dict[str, float]:
    """Eval/AverageReturn and Eval/NumEpisodes, and Eval/Score where the environment
    defines a score (bsuite's)."""
    out = {"Eval/AverageReturn": self.average_return,
           "Eval/NumEpisodes": float(self.num_episodes)}
    if self.score_fn is not None:
      out["Eval/Score"] = float(self.score_fn(self.episode_returns))
    return out


class Stopped(Exception):
  """`evaluate` ended early because `should_stop()` said so; nothing was returned."""


class LockstepEnvs:
  """Python environments stepped one after another, as one batch.

  `step` steps only the active environments; one whose episode ends starts its next
  episode in the same call and returns that episode's first frame (the "same step"
  autoreset of ale-py's vector env).
  """

  def __init__(self, envs: Sequence[Environment]):
    if not envs:
      raise ValueError("LockstepEnvs needs at least one environment.")
    self.envs = list(envs)
    self.num_envs = len(self.envs)
    self.observation_spec = factory.observation_spec_of(self.envs[0])
    self.stack_size = self.envs[0].stack_size
    # Action vectors (a continuous box) are passed on as they are, ints otherwise.
    self.continuous = len(factory.action_spec_of(self.envs[0]).shape) > 0
    # An environment's `score(episode_returns)` (bsuite's), which EvalResult reports.
    self.score_fn = getattr(self.envs[0], "score", None)

  def _frames(self) -> np.ndarray:
    return np.zeros((self.num_envs,) + tuple(self.observation_spec.shape),
                    self.observation_spec.dtype)

  def reset(self) -> np.ndarray:
    frames = self._frames()
    for i, env in enumerate(self.envs):
      frames[i] = env.reset()
    return frames

  def step(self, actions: np.ndarray, active: np.ndarray):
    """(frames, rewards, terminals, truncated) [N]; inactive rows are zeros/False."""
    frames = self._frames()
    rewards = np.zeros(self.num_envs)
    terminals = np.zeros(self.num_envs, bool)
    truncated = np.zeros(self.num_envs, bool)
    for i in np.flatnonzero(active):
      frame, rewards[i], terminals[i], truncated[i] = self.envs[i].step(
          actions[i] if self.continuous else int(actions[i]))
      frames[i] = self.envs[i].reset() if terminals[i] or truncated[i] else frame
    return frames, rewards, terminals, truncated

  def close(self) -> None:
    for env in self.envs:
      getattr(env, "close", lambda: None)()


@gin.configurable
def create_environments(name: str, seeds: Sequence[int], atari_vector_env: bool = True):
  """The evaluation environments of `name` ('family:game'), one per seed, as a batch.

  Atari games step in ale-py's C++ vector env (`atari_vector.AtariVectorEnvironments`,
  whose frames equal the Python preprocessing's) unless `atari_vector_env` is False,
  with the protocol `AtariEnvironment` is configured with (its gin bindings: sticky
  actions, frame skip, screen size, episode limit, terminal on life loss); everything
  else (and Atari then) is `LockstepEnvs` of `factory.create_environment`.
  """
  family, _, game = name.partition(":")
  if family == "atari" and atari_vector_env:
    settings = dict(factory.create_environment(name, seed=seeds[0]).settings)
    if settings.pop("full_action_space"):
      raise validation.ConfigError(
          "`AtariEnvironment.full_action_space = True`: the vector env of the evaluation "
          "plays the minimal action set only. Bind `create_environments.atari_vector_env "
          "= False` to evaluate in the Python environment.")
    return atari_vector.AtariVectorEnvironments(game, seeds=list(seeds), **settings)
  return LockstepEnvs([factory.create_environment(name, seed=seed) for seed in seeds])


def as_env_batch(envs):
  """`envs` as a batch: a list of environments becomes LockstepEnvs."""
  return envs if hasattr(envs, "num_envs") else LockstepEnvs(envs)


def evaluate(policy: PolicyFn, envs, min_steps: int, key: jax.Array,
             max_episodes: int | None = None, env_ids: Sequence[int] | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
  """Plays `envs` in lockstep until `min_steps` agent steps, finishing open episodes.

  Args:
    policy: batched policy (epsilon-greedy already inside, e.g. `agent.act`), called
      once per step with one key per row (`agent.act` takes them).
    envs: environments of one kind (same observation spec and stack size), as a list
      or as a batch (module docstring).
    min_steps: the phase's step budget (125,000 agent steps in the papers).
    key: PRNG key; env i's key at its step j is fold_in(fold_in(key, env_ids[i]), j).
    max_episodes: optional cap on completed episodes, all environments together (ends
      the phase early).
    env_ids: the index naming each environment's random stream (default 0..N-1);
      evaluating envs[k] alone with env_ids=[k] replays its episodes in the batch.
    should_stop: checked before every step; True raises Stopped (a graceful stop of
      the run: the phase is replayed from its start when the run resumes).
  """
  batch = as_env_batch(envs)
  ids = list(range(batch.num_envs)) if env_ids is None else [int(i) for i in env_ids]
  if len(ids) != batch.num_envs:
    raise ValueError(f"env_ids has {len(ids)} entries for {batch.num_envs} environments.")
  keys = _env_keys(key, np.asarray(ids, np.uint32))
  return _play(policy, batch, min_steps, keys, np.zeros(batch.num_envs, int), 1, ids,
               max_episodes, should_stop)[0]


def evaluate_groups(policy: PolicyFn, envs, min_steps: int, keys: Sequence[jax.Array],
                    max_episodes: int | None = None,
                    should_stop: Callable[[], bool] | None = None) -> list[EvalResult]:
  """One phase per key, all stepped together: the environments split into len(keys)
  consecutive groups of equal size; group g plays as `evaluate(policy, its envs,
  min_steps, keys[g], max_episodes)` would alone, with its own budget and result."""
  batch = as_env_batch(envs)
  num_groups = len(keys)
  size, rest = divmod(batch.num_envs, num_groups)
  if rest or not size:
    raise ValueError(f"{batch.num_envs} environments do not split into {num_groups} "
                     "groups of equal size.")
  ids = list(range(size)) * num_groups
  env_keys = np.concatenate([np.asarray(_env_keys(k, np.arange(size, dtype=np.uint32)))
                             for k in keys])
  groups = np.repeat(np.arange(num_groups), size)
  return _play(policy, batch, min_steps, env_keys, groups, num_groups, ids, max_episodes,
               should_stop)


def _play(policy, batch, min_steps, env_keys, groups, num_groups, ids, max_episodes,
          should_stop) -> list[EvalResult]:
  """The lockstep loop of `evaluate_groups`: budget, episode cap and results per group."""
  num = batch.num_envs
  env_steps = np.zeros(num, np.uint32)
  spec, stack = batch.observation_spec, batch.stack_size
  states = np.zeros((num,) + tuple(spec.shape) + (stack,), spec.dtype)
  states[..., -1] = batch.reset()
  active = np.ones(num, bool)
  ep_return, ep_length = np.zeros(num), np.zeros(num, np.int64)
  episodes = [[] for _ in range(num_groups)]  # (return, length, env id) per group
  group_steps = np.zeros(num_groups, np.int64)
  capped = np.zeros(num_groups, bool)
  while active.any():
    if should_stop is not None and should_stop():
      raise Stopped()
    actions = np.asarray(policy(states, _step_keys(env_keys, env_steps)))
    frames, rewards, terminals, truncated = batch.step(actions, active)
    stepping = np.flatnonzero(active)
    np.add.at(group_steps, groups[stepping], 1)
    env_steps[stepping] += 1
    ep_return[stepping] += rewards[stepping]
    ep_length[stepping] += 1
    states[stepping] = np.roll(states[stepping], -1, axis=-1)
    states[stepping, ..., -1] = frames[stepping]
    for i in stepping[(terminals | truncated)[stepping]]:
      group = groups[i]
      episodes[group].append((float(ep_return[i]), int(ep_length[i]), ids[i]))
      ep_return[i], ep_length[i] = 0.0, 0
      states[i, ..., :-1] = 0  # the new episode's stack: its first frame only
      capped[group] = max_episodes is not None and len(episodes[group]) >= max_episodes
      if group_steps[group] >= min_steps or capped[group]:
        active[i] = False
    active &= ~capped[groups]  # a group that reached its episode cap ends at once
  return [EvalResult(tuple(e[0] for e in done), tuple(e[1] for e in done),
                     int(steps), tuple(e[2] for e in done),
                     getattr(batch, "score_fn", None))
          for done, steps in zip(episodes, group_steps)]

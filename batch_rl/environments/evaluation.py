"""Evaluation phase: run a policy in the real environment for a step budget.

Dopamine's protocol (`Runner._run_one_phase`): episodes are played until the steps of
the phase reach `min_steps`; the episode in progress when the budget is reached is
played to its end, so every episode counted is complete, and the phase's score is the
mean undiscounted return of those episodes. With several environments stepping in
lockstep (one batched policy call per step), an environment that finishes an episode
starts another only while the phase total is below the budget; episodes in progress
always finish. With one environment this is exactly Dopamine's loop.

Randomness is per environment: the policy gets one key per row, and the key of
environment i at its j-th step is fold_in(fold_in(key, i), j). So environment i's
episodes depend only on (key, i, its own seed), not on how many environments step
beside it: evaluating [e0, e1, e2] in lockstep plays, for each e_i, the same episodes
as evaluating e_i alone (with `env_ids=[i]`), as long as the phase lets it play them
(the step budget is shared, so with more environments each plays fewer episodes).

The agent's state is the stack of the last `stack_size` frames, zeroed at every reset
(Dopamine's `_reset_state`), frames on the last axis, of the environment's observation
dtype (uint8 frames for Atari and MinAtar, float32 vectors for gym).
"""
import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from batch_rl.environments import factory
from batch_rl.environments.factory import Environment

# (states [N, *frame_shape, S] of the observation dtype, keys [N] (one PRNG key per row))
# -> int actions [N]
PolicyFn = Callable[[np.ndarray, jax.Array], jax.Array]

# (keys of the environments [N], their step counts [N]) -> the keys of this step [N]
_step_keys = jax.jit(jax.vmap(jax.random.fold_in))


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of one evaluation phase."""

  episode_returns: tuple[float, ...]
  episode_lengths: tuple[int, ...]
  num_steps: int
  episode_envs: tuple[int, ...] = ()  # env_ids entry of the env that played each episode

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
    return {"Eval/AverageReturn": self.average_return,
            "Eval/NumEpisodes": float(self.num_episodes)}


class Stopped(Exception):
  """`evaluate` ended early because `should_stop()` said so; nothing was returned."""


def evaluate(policy: PolicyFn, envs: Sequence[Environment], min_steps: int,
             key: jax.Array, max_episodes: int | None = None,
             env_ids: Sequence[int] | None = None,
             should_stop: Callable[[], bool] | None = None) -> EvalResult:
  """Plays `envs` in lockstep until `min_steps` agent steps, finishing open episodes.

  Args:
    policy: batched policy (epsilon-greedy already inside, e.g. `agent.act`), called
      once per step with one key per row (`agent.act` takes them).
    envs: environments of one kind (same observation spec and stack size).
    min_steps: the phase's step budget (125,000 agent steps in the papers).
    key: PRNG key; env i's key at its step j is fold_in(fold_in(key, env_ids[i]), j).
    max_episodes: optional cap on completed episodes, all environments together (ends
      the phase early).
    env_ids: the index naming each environment's random stream (default 0..N-1);
      evaluating envs[k] alone with env_ids=[k] replays its episodes in the batch.
    should_stop: checked before every step; True raises Stopped (a graceful stop of
      the run: the phase is replayed from its start when the run resumes).
  """
  num = len(envs)
  ids = list(range(num)) if env_ids is None else [int(i) for i in env_ids]
  if len(ids) != num:
    raise ValueError(f"env_ids has {len(ids)} entries for {num} environments.")
  env_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(np.asarray(ids, np.uint32))
  env_steps = np.zeros(num, np.uint32)
  spec, stack = factory.observation_spec_of(envs[0]), envs[0].stack_size
  states = np.zeros((num,) + spec.shape + (stack,), spec.dtype)

  def start(i):
    states[i] = 0
    states[i, ..., -1] = envs[i].reset()

  for i in range(num):
    start(i)
  active = np.ones(num, bool)
  ep_return, ep_length = np.zeros(num), np.zeros(num, np.int64)
  returns, lengths, episode_envs, total_steps = [], [], [], 0
  while active.any():
    if should_stop is not None and should_stop():
      raise Stopped()
    actions = np.asarray(policy(states, _step_keys(env_keys, env_steps)))
    for i in np.flatnonzero(active):
      frame, reward, terminal, truncated = envs[i].step(int(actions[i]))
      total_steps += 1
      env_steps[i] += 1
      ep_return[i] += reward
      ep_length[i] += 1
      states[i] = np.roll(states[i], -1, axis=-1)
      states[i, ..., -1] = frame
      if terminal or truncated:
        returns.append(float(ep_return[i]))
        lengths.append(int(ep_length[i]))
        episode_envs.append(ids[i])
        ep_return[i], ep_length[i] = 0.0, 0
        done = max_episodes is not None and len(returns) >= max_episodes
        if total_steps >= min_steps or done:
          active[i] = False
        else:
          start(i)
    if max_episodes is not None and len(returns) >= max_episodes:
      break
  return EvalResult(tuple(returns), tuple(lengths), total_steps, tuple(episode_envs))

"""Evaluation phase: run a policy in the real environment for a step budget.

Dopamine's protocol (`Runner._run_one_phase`): episodes are played until the steps of
the phase reach `min_steps`; the episode in progress when the budget is reached is
played to its end, so every episode counted is complete, and the phase's score is the
mean undiscounted return of those episodes. With several environments stepping in
lockstep (one batched policy call per step), an environment that finishes an episode
starts another only while the phase total is below the budget; episodes in progress
always finish. With one environment this is exactly Dopamine's loop.

The agent's state is the stack of the last `stack_size` frames, zeroed at every reset
(Dopamine's `_reset_state`), frames on the last axis.
"""
import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from batch_rl.environments.factory import Environment

# (states uint8 [N, *frame_shape, S], key) -> int actions [N]
PolicyFn = Callable[[np.ndarray, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Outcome of one evaluation phase."""

  episode_returns: tuple[float, ...]
  episode_lengths: tuple[int, ...]
  num_steps: int

  @property
  def num_episodes(self) -> int:
    return len(self.episode_returns)

  @property
  def average_return(self) -> float:
    return float(np.mean(self.episode_returns)) if self.episode_returns else float("nan")

  def metrics(self) -> dict[str, float]:
    return {"Eval/AverageReturn": self.average_return,
            "Eval/NumEpisodes": float(self.num_episodes)}


def evaluate(policy: PolicyFn, envs: Sequence[Environment], min_steps: int,
             key: jax.Array, max_episodes: int | None = None) -> EvalResult:
  """Plays `envs` in lockstep until `min_steps` agent steps, finishing open episodes.

  Args:
    policy: batched policy (epsilon-greedy already inside), called once per step.
    envs: environments of one kind (same frame shape and stack size).
    min_steps: the phase's step budget (125,000 agent steps in the papers).
    key: PRNG key; one fresh subkey per policy call.
    max_episodes: optional cap on completed episodes (ends the phase early).
  """
  num = len(envs)
  frame_shape, stack = tuple(envs[0].observation_shape), envs[0].stack_size
  states = np.zeros((num,) + frame_shape + (stack,), np.uint8)

  def start(i):
    states[i] = 0
    states[i, ..., -1] = envs[i].reset()

  for i in range(num):
    start(i)
  active = np.ones(num, bool)
  ep_return, ep_length = np.zeros(num), np.zeros(num, np.int64)
  returns, lengths, total_steps = [], [], 0
  while active.any():
    key, step_key = jax.random.split(key)
    actions = np.asarray(policy(states, step_key))
    for i in np.flatnonzero(active):
      frame, reward, terminal, truncated = envs[i].step(int(actions[i]))
      total_steps += 1
      ep_return[i] += reward
      ep_length[i] += 1
      states[i] = np.roll(states[i], -1, axis=-1)
      states[i, ..., -1] = frame
      if terminal or truncated:
        returns.append(float(ep_return[i]))
        lengths.append(int(ep_length[i]))
        ep_return[i], ep_length[i] = 0.0, 0
        done = max_episodes is not None and len(returns) >= max_episodes
        if total_steps >= min_steps or done:
          active[i] = False
        else:
          start(i)
    if max_episodes is not None and len(returns) >= max_episodes:
      break
  return EvalResult(tuple(returns), tuple(lengths), total_steps)

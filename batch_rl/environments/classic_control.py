"""Gymnasium's classic-control tasks behind the common `Environment` interface.

Observations are float32 vectors (CartPole (4,), Acrobot (6,), MountainCar (2,)); one
observation is one agent state (stack_size 1, so a CartPole state is (4, 1)). Actions
are discrete. `terminal` is gymnasium's `terminated` (the task's own end: the pole fell,
the goal was reached) and `truncated` its `truncated` (the TimeLimit wrapper's episode
step limit, the registered one unless `max_episode_steps` is given); rewards are the
environment's, unclipped.

Seeding: the first `reset()` passes `seed` to gymnasium (`env.reset(seed=seed)`), later
ones continue the environment's own generator, so an environment's episodes are a
reproducible sequence from its seed.
"""
import difflib
import pickle
from typing import Optional

import gin
import gymnasium
import numpy as np

from batch_rl.environments import specs

GAMES = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")


@gin.configurable
class GymEnvironment:
  """One gymnasium classic-control task with discrete actions.

  Attributes:
    game: the gymnasium id, e.g. 'CartPole-v1'.
    observation_spec: float32, the task's observation shape.
    action_spec: DiscreteActionSpec of the task's actions.
    observation_shape, stack_size (1), num_actions: the same, as the other families.
  """

  stack_size = 1

  def __init__(self, game: str, seed: int = 0, max_episode_steps: Optional[int] = None):
    """Creates the task. Call `reset()` before the first `step()`.

    Args:
      game: one of GAMES.
      seed: seeds the first reset (and through it every later episode).
      max_episode_steps: agent steps after which `step` reports truncated; None keeps
        the registered limit (500 for CartPole-v1 and Acrobot-v1, 200 for MountainCar-v0).
    """
    if game not in GAMES:
      close = difflib.get_close_matches(game, GAMES, n=2)
      hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
      raise ValueError(
          f"Unknown gym game {game!r}.{hint} Valid games: {', '.join(GAMES)}.")
    if max_episode_steps is not None and max_episode_steps < 1:
      raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")
    self.game = game
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    self._env = gymnasium.make(game, **kwargs)
    space = self._env.action_space
    if not isinstance(space, gymnasium.spaces.Discrete) or int(space.start) != 0:
      raise ValueError(f"{game} has action space {space}; expected Discrete(n) from 0.")
    self.observation_spec = specs.ObservationSpec(self._env.observation_space.shape,
                                                  np.float32)
    self.action_spec = specs.DiscreteActionSpec(int(space.n))
    self.observation_shape = self.observation_spec.shape
    self.num_actions = self.action_spec.num_actions
    self._seed = int(seed)
    self._seeded = False

  def reset(self) -> np.ndarray:
    """Starts a new episode; returns float32 observation_shape."""
    if self._seeded:
      observation, _ = self._env.reset()
    else:
      observation, _ = self._env.reset(seed=self._seed)
      self._seeded = True
    return np.asarray(observation, np.float32)

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    """Plays one action.

    Args:
      action: an int in [0, num_actions).

    Returns:
      observation: float32 observation_shape.
      reward: float.
      terminal: gymnasium's `terminated`.
      truncated: gymnasium's `truncated` (the episode step limit).
    """
    action = int(action)
    if not 0 <= action < self.num_actions:
      raise ValueError(f"action must be in [0, {self.num_actions}), got {action}.")
    observation, reward, terminated, truncated, _ = self._env.step(action)
    return (np.asarray(observation, np.float32), float(reward), bool(terminated),
            bool(truncated))

  def snapshot(self) -> bytes:
    """The task's whole state (gymnasium env, wrappers and np_random) as bytes."""
    return pickle.dumps((self._env, self._seeded))

  def restore(self, snapshot: bytes) -> None:
    """Continues exactly from a `snapshot` of the same task."""
    self._env, self._seeded = pickle.loads(snapshot)

"""bsuite's catch, cartpole and mountain_car behind the common `Environment` interface.

The three tasks of RL Unplugged's bsuite set (Gulcehre et al. 2020), as the `bsuite`
package defines them (dm_env API), with their default settings: catch is a 10 x 5 grid
(a ball falls one row a step, the paddle on the bottom row moves left/stays/right,
reward +1 or -1 when the ball lands, episodes of 9 steps); cartpole is the swing-free
balance task with 3 actions (left, stay, right), reward 1 a step while the pole is up,
episodes of at most 1000 steps; mountain_car has reward -1 a step until the car reaches
the goal, at most 1000 steps.

Observations are bsuite's float32 arrays: catch (10, 5), cartpole (1, 6), mountain_car
(1, 3); one observation is one agent state (stack_size 1). `terminal` is a dm_env LAST
step with discount 0 (the task ended); a LAST step with discount 1 is `truncated` (the
episode's time limit). bsuite does not truncate its three tasks this way (their time
limits end with discount 0, as in bsuite), so `truncated` is reported only if a future
version does.

Seeding: the environment is built with `seed` (bsuite's RandomState), so its sequence
of episodes is reproducible from the seed.

`bsuite_score` is bsuite's own score of these experiments (`bsuite.experiments.<name>.
analysis.score`: average regret normalised by a random agent's, clipped to [0, 1], and
for cartpole half of it for an episode above 500 steps), applied to the episodes of a
fixed policy: bsuite scores a learning agent over its first episodes, here every
evaluation episode is played by the same policy, so the average regret is that policy's.
"""
import difflib
import pickle
import types
from typing import Sequence

import gin
import numpy as np

from batch_rl.environments import specs

GAMES = ("catch", "cartpole", "mountain_car")


def check_game(game: str, binding: str = "game") -> None:
  """ValueError naming `binding` and listing the valid games if `game` is not one."""
  if game not in GAMES:
    close = difflib.get_close_matches(str(game), GAMES, n=2)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown bsuite environment {game!r} (`{binding}`).{hint} Valid "
                     f"environments: {', '.join(GAMES)}.")


def _make(game: str, seed: int):
  # Imported here: bsuite pulls in pandas and plotnine, which only this domain needs.
  from bsuite.environments import cartpole, catch, mountain_car
  return {"catch": catch.Catch, "cartpole": cartpole.Cartpole,
          "mountain_car": mountain_car.MountainCar}[game](seed=seed)


@gin.configurable
class BsuiteEnvironment:
  """One bsuite task with discrete actions.

  Attributes:
    game: 'catch', 'cartpole' or 'mountain_car'.
    observation_spec: float32, the task's observation shape.
    action_spec: DiscreteActionSpec(3).
    observation_shape, stack_size (1), num_actions: the same, as the other families.
  """

  stack_size = 1

  def __init__(self, game: str, seed: int = 0):
    """Creates the task. Call `reset()` before the first `step()`.

    Args:
      game: one of GAMES.
      seed: seeds bsuite's RandomState (the starting states and catch's ball columns).
    """
    check_game(game)
    self.game = game
    self._env = _make(game, int(seed))
    self.observation_spec = specs.ObservationSpec(self._env.observation_spec().shape,
                                                  np.float32)
    self.action_spec = specs.DiscreteActionSpec(int(self._env.action_spec().num_values))
    self.observation_shape = self.observation_spec.shape
    self.num_actions = self.action_spec.num_actions

  def reset(self) -> np.ndarray:
    """Starts a new episode; returns float32 observation_shape."""
    return np.asarray(self._env.reset().observation, np.float32)

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    """Plays one action.

    Args:
      action: an int in [0, num_actions).

    Returns:
      observation: float32 observation_shape.
      reward: float.
      terminal: the episode ended with discount 0.
      truncated: the episode ended with a nonzero discount (a time limit).
    """
    action = int(action)
    if not 0 <= action < self.num_actions:
      raise ValueError(f"action must be in [0, {self.num_actions}), got {action}.")
    timestep = self._env.step(action)
    last = bool(timestep.last())
    terminal = last and float(timestep.discount) == 0.0
    return (np.asarray(timestep.observation, np.float32), float(timestep.reward or 0.0),
            terminal, last and not terminal)

  def score(self, episode_returns: Sequence[float]) -> float:
    """bsuite's score of a policy that played these episodes (`bsuite_score`)."""
    return bsuite_score(self.game, episode_returns)

  def snapshot(self) -> bytes:
    """The task's whole state (its RandomState included) as bytes: its attributes but
    the functions (cartpole keeps its start-state sampler as a lambda over itself,
    which `restore` leaves in place)."""
    return pickle.dumps({k: v for k, v in vars(self._env).items()
                         if not isinstance(v, types.FunctionType)})

  def restore(self, snapshot: bytes) -> None:
    """Continues exactly from a `snapshot` of the same task."""
    vars(self._env).update(pickle.loads(snapshot))


# bsuite's scoring constants (bsuite/experiments/<name>/analysis.py): the regret of a
# random agent per episode, and the ideal episode return the regret is measured from.
_BASE_REGRET = {"catch": 1.6, "cartpole": 1000.0, "mountain_car": 1000.0}
_IDEAL_RETURN = {"catch": 1.0, "cartpole": 1000.0, "mountain_car": -100.0}
_CARTPOLE_GOOD_EPISODE = 500.0


def bsuite_score(game: str, episode_returns: Sequence[float]) -> float:
  """bsuite's score in [0, 1] of a fixed policy from its episodes' returns.

  score = clip((base_regret - mean regret) / base_regret, 0, 1), with regret = ideal
  return - episode return (catch: ideal 1, base 1.6; mountain_car: ideal -100, base
  1000); cartpole: ideal 1000, base 1000, and the score is the mean of that and 1 if
  the best episode's return exceeds 500 (else 0). NaN without episodes.
  """
  check_game(game)
  returns = np.asarray(episode_returns, np.float64)
  if returns.size == 0:
    return float("nan")
  regret = _IDEAL_RETURN[game] - returns.mean()
  score = float(np.clip((_BASE_REGRET[game] - regret) / _BASE_REGRET[game], 0.0, 1.0))
  if game == "cartpole":
    score = 0.5 * (score + float(returns.max() > _CARTPOLE_GOOD_EPISODE))
  return score


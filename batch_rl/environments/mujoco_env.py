"""Gymnasium's MuJoCo locomotion tasks behind the common `Environment` interface.

The tasks of the IUP paper's continuous-control results (HalfCheetah, Hopper, Walker2d,
Ant), as gymnasium registers them today on the `mujoco` package from PyPI: version v5.
The paper used the v2 tasks on mujoco-py. The dynamics and rewards are the same
models; v5 fixes v2's bugs (Hopper's and Walker2d's healthy checks, Walker2d's foot
friction) and Ant-v5 leaves out the external contact forces (zeros under MuJoCo >= 2
anyway), so its observation is 105 floats where v2's was 111. Episodes are truncated
at 1,000 steps, as in v2.

Observations are float32 vectors (one per agent state, stack_size 1); actions are
float32 vectors within the task's box (BoxActionSpec; all four are [-1, 1]^|A|).
`terminal` is gymnasium's `terminated` (Hopper, Walker2d and Ant fall; HalfCheetah
never terminates), `truncated` the step limit. Seeding: the first reset passes `seed`,
later ones continue the task's own generator. `snapshot` saves MuJoCo's integration
state (mj_getState), the task's generator and the step count, so a run resumes
mid-episode exactly.
"""
import copy
import difflib
import pickle
from typing import Optional

import gin
import gymnasium
import numpy as np

from batch_rl.environments import specs

GAMES = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
BOUNDS_TOLERANCE = specs.BOX_TOLERANCE


@gin.configurable
class MujocoEnvironment:
  """One gymnasium MuJoCo task with continuous actions.

  Attributes:
    game: the gymnasium id, e.g. 'Hopper-v5'.
    observation_spec: float32, the task's observation shape.
    action_spec: BoxActionSpec of the task's action box.
    observation_shape, stack_size (1): as the other families.
  """

  stack_size = 1

  def __init__(self, game: str, seed: int = 0, max_episode_steps: Optional[int] = None):
    """Creates the task. Call `reset()` before the first `step()`.

    Args:
      game: one of GAMES.
      seed: seeds the first reset (and through it every later episode).
      max_episode_steps: steps after which `step` reports truncated; None keeps the
        registered 1,000.
    """
    if game not in GAMES:
      close = difflib.get_close_matches(game, GAMES, n=2)
      hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
      raise ValueError(f"Unknown mujoco game {game!r}.{hint} Valid games: "
                       f"{', '.join(GAMES)}.")
    if max_episode_steps is not None and max_episode_steps < 1:
      raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")
    try:
      import mujoco  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ValueError(f"mujoco:{game} needs the `mujoco` package (pip install mujoco), "
                       f"which does not import here: {e}") from e
    self.game = game
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    self._env = gymnasium.make(game, **kwargs)
    space = self._env.action_space
    self.observation_spec = specs.ObservationSpec(self._env.observation_space.shape,
                                                  np.float32)
    self.action_spec = specs.BoxActionSpec(space.shape, tuple(space.low.ravel()),
                                           tuple(space.high.ravel()))
    self.observation_shape = self.observation_spec.shape
    self._low, self._high = self.action_spec.low_array, self.action_spec.high_array
    self._seed = int(seed)
    self._seeded = False

  @property
  def num_actions(self) -> int:
    raise AttributeError(f"mujoco:{self.game} has continuous actions (a "
                         f"{self.action_spec.shape} box), not a number of actions.")

  def reset(self) -> np.ndarray:
    """Starts a new episode; returns float32 observation_shape."""
    if self._seeded:
      observation, _ = self._env.reset()
    else:
      observation, _ = self._env.reset(seed=self._seed)
      self._seeded = True
    return np.asarray(observation, np.float32)

  def step(self, action) -> tuple[np.ndarray, float, bool, bool]:
    """Applies one action vector (action_spec's shape, within its box)."""
    action = np.asarray(action, np.float32)
    if action.shape != self.action_spec.shape:
      raise ValueError(f"mujoco:{self.game} takes actions of shape "
                       f"{self.action_spec.shape}, got {action.shape}.")
    if not (np.all(np.isfinite(action)) and np.all(action >= self._low - BOUNDS_TOLERANCE)
            and np.all(action <= self._high + BOUNDS_TOLERANCE)):
      raise ValueError(f"mujoco:{self.game} action {action} is outside the action box "
                       f"[{self._low.min()}, {self._high.max()}] or not finite.")
    observation, reward, terminated, truncated, _ = self._env.step(
        np.clip(action, self._low, self._high))
    return (np.asarray(observation, np.float32), float(reward), bool(terminated),
            bool(truncated))

  def snapshot(self) -> bytes:
    """MuJoCo's integration state, the task's generator and the episode's step count."""
    import mujoco  # pylint: disable=g-import-not-at-top
    task = self._env.unwrapped
    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(task.model, kind))
    mujoco.mj_getState(task.model, task.data, state, kind)
    return pickle.dumps({"state": state, "seeded": self._seeded,
                         "np_random": copy.deepcopy(task.np_random.bit_generator.state),
                         "elapsed_steps": getattr(self._env, "_elapsed_steps", None)})

  def restore(self, snapshot: bytes) -> None:
    """Continues exactly from a `snapshot` of the same task."""
    import mujoco  # pylint: disable=g-import-not-at-top
    saved = pickle.loads(snapshot)
    task = self._env.unwrapped
    if not self._seeded:  # gymnasium refuses a step before the first reset
      self._env.reset(seed=self._seed)
    mujoco.mj_setState(task.model, task.data, saved["state"],
                       mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(task.model, task.data)
    task.np_random.bit_generator.state = saved["np_random"]
    self._env._elapsed_steps = saved["elapsed_steps"]  # pylint: disable=protected-access
    self._seeded = saved["seeded"]

"""Atari evaluation environments stepped in lockstep by ale-py's C++ vector env.

`AtariVectorEnvironments` runs N games of one ROM in `ale_py.vector_env.AtariVectorEnv`
(C++ worker threads, one ALE per game) configured as Dopamine's evaluation protocol, the
protocol `atari.AtariEnvironment` implements in Python:

  * sticky actions inside the ALE (`repeat_action_probability`), the minimal action set
    in the ALE's order (the same `getMinimalActionSet()` the Python env uses);
  * each agent step repeats the action `frame_skip` times and sums the unclipped reward;
  * the grayscale screens of the last two of those frames are max-pooled and resized
    with OpenCV's `INTER_AREA` (ale-py's C++ preprocessing does what atari.py does);
  * no no-op starts, no FIRE on reset, one frame per observation (the caller stacks);
  * terminal = game over (or a lost life with `terminal_on_life_loss`); `truncated`
    once the episode has had `max_episode_steps` agent steps;
  * an environment whose episode ends in a step starts its next episode in that same
    step (the vector env's "SameStep" autoreset): the frame it returns is the first
    frame of the new episode.

Environment i is seeded with `seeds[i]` at every `reset()` (the vector env sets the
ALE's `random_seed` and reloads the ROM, so a reset costs about what construction
does), and each game runs in its own ALE, so its episodes depend only on seeds[i] and
the actions it is given, not on N or on its neighbours. Later episodes, started by the
autoreset, continue the sticky-action stream, as `AtariEnvironment.reset()` does.

The ALE's `random_seed` is seeds[i] itself, whereas `AtariEnvironment(seed=s)` derives
it with `atari.ale_seed(s)`: given the same seed the two draw different sticky-action
streams, and `AtariVectorEnvironments(game, [atari.ale_seed(s)])` (where that is
non-negative) plays exactly the games of `AtariEnvironment(game, seed=s)`.

With `terminal_on_life_loss` the vector env restarts the game after a lost life (its
"episodic life" ends the episode), whereas Dopamine's runner keeps playing the same
game after such a terminal until game over; evaluation normally leaves it off.
"""
import hashlib
import inspect
import logging
from typing import Sequence

import ale_py
import numpy as np

from batch_rl import validation
from batch_rl.environments import atari
from batch_rl.environments import specs
from batch_rl.environments.atari import _rom_id_to_game, check_dataset_rom, resolve_rom_id

# The ALE takes int32 seeds, and the vector env treats a negative one as "keep the
# current seed" (not reproducible), so seeds must lie in [0, 2**31).
_MAX_SEED = 2**31 - 1


def atari_vector_env_class():
  """`ale_py.vector_env.AtariVectorEnv`, or a ConfigError if ale-py lacks it.

  The vector env appeared in ale-py 0.11.0; its "SameStep" autoreset, which this
  module relies on, in 0.11.1.
  """
  version = getattr(ale_py, "__version__", "unknown")
  needs = ("AtariVectorEnvironments needs ale_py.vector_env.AtariVectorEnv with its "
           f"'SameStep' autoreset, which the installed ale-py {version} does not have")
  since = ("The vector env was added in ale-py 0.11.0 and has that autoreset since "
           "0.11.1; ale-py 0.12 has both: pip install 'ale-py>=0.12', or evaluate in the "
           "Python preprocessing with `create_environments.atari_vector_env = False`.")
  try:
    from ale_py.vector_env import AtariVectorEnv  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise validation.ConfigError(f"{needs} ({e}). {since}") from e
  if "autoreset_mode" not in inspect.signature(AtariVectorEnv).parameters:
    raise validation.ConfigError(f"{needs}. {since}")
  return AtariVectorEnv


def rom_md5(rom_id: str) -> str:
  """md5 hex digest of the ROM file ale-py loads for `rom_id`."""
  with open(ale_py.roms.get_rom_path(rom_id), "rb") as f:
    return hashlib.md5(f.read()).hexdigest()


def _check_seeds(seeds) -> np.ndarray:
  """`seeds` as int32 [N], N >= 1, each in [0, 2**31); else a ValueError."""
  values = [int(s) for s in seeds]
  if not values:
    raise ValueError("seeds must name at least one environment, got none.")
  bad = [s for s in values if not 0 <= s <= _MAX_SEED]
  if bad:
    raise ValueError(f"seeds must be ints in [0, {_MAX_SEED}], got {bad}.")
  return np.asarray(values, np.int32)


class AtariVectorEnvironments(specs.DiscreteFrames):
  """N games of one Atari ROM with Dopamine's preprocessing, stepped in lockstep.

  See the module docstring.

  Attributes:
    game: CamelCase game name, e.g. 'Pong'.
    rom_id: ale-py rom id, e.g. 'pong'.
    rom_md5: md5 hex digest of the ROM file loaded.
    rom_warning: None if rom_md5 is the DQN Replay dataset's ROM, else why not.
    seeds: tuple of ints, environment i's seed.
    num_envs: N = len(seeds).
    action_set: tuple of `ale_py.Action`; agent action a plays action_set[a].
    observation_shape: (screen_size, screen_size), shape of one frame.
    stack_size: 4, frames per agent state (stacking is the caller's job).
    num_actions: len(action_set).
    observation_spec: uint8 frames of observation_shape.
    action_spec: DiscreteActionSpec(num_actions).
    lives: int32 [N], each game's lives now.
    episode_steps: int64 [N], agent steps taken in each current episode.
  """

  stack_size = 4

  def __init__(
      self,
      game: str,
      seeds: Sequence[int],
      *,
      sticky_action_prob: float = 0.25,
      frame_skip: int = 4,
      screen_size: int = 84,
      max_episode_steps: int = 27_000,
      terminal_on_life_loss: bool = False,
      num_threads: int = 0,
  ):
    """Loads the ROM into N emulators. Call `reset()` before the first `step()`.

    Args:
      game: CamelCase name ('Pong', 'SpaceInvaders', 'MsPacman') or ale-py rom id.
      seeds: one int in [0, 2**31) per environment; seeds[i] seeds environment i's ALE
        (sticky actions are its only randomness) at every `reset()`.
      sticky_action_prob: ALE `repeat_action_probability`, per emulator frame.
      frame_skip: emulator frames per agent step (>= 1).
      screen_size: side of the square resized observation.
      max_episode_steps: agent steps after which `step` reports truncated.
      terminal_on_life_loss: report terminal when a life is lost; the vector env then
        restarts the game (see the module docstring).
      num_threads: C++ worker threads; 0 for min(N, the machine's hardware threads).

    Raises:
      ValueError: unknown game (the message lists the valid ones), bad seeds or sizes.
      validation.ConfigError: the installed ale-py has no AtariVectorEnv.
    """
    atari.check_preprocessing(frame_skip, screen_size, max_episode_steps)
    # The vector env counts its episode limit in emulator frames, as an int32.
    max_frames = int(max_episode_steps) * int(frame_skip)
    if max_frames > _MAX_SEED:
      raise ValueError(f"max_episode_steps * frame_skip must be < 2**31, got {max_frames}.")
    self.rom_id = resolve_rom_id(game)
    self.game = _rom_id_to_game(self.rom_id)
    self._seeds = _check_seeds(seeds)
    self.seeds = tuple(int(s) for s in self._seeds)
    self.num_envs = len(self.seeds)
    self._max_episode_steps = int(max_episode_steps)

    self.rom_md5 = rom_md5(self.rom_id)
    # None when the ROM is the one DQN Replay was recorded with; else logged as a warning.
    self.rom_warning = check_dataset_rom(self.rom_id, self.rom_md5)
    if self.rom_warning:
      logging.warning(self.rom_warning)

    vector_env_class = atari_vector_env_class()
    self._env = vector_env_class(
        self.rom_id,
        self.num_envs,
        num_threads=int(num_threads),
        repeat_action_probability=float(sticky_action_prob),
        frameskip=int(frame_skip),
        maxpool=True,
        grayscale=True,
        img_height=int(screen_size),
        img_width=int(screen_size),
        stack_num=1,
        # Each episode starts with a no-op count drawn from [0, noop_max - 1], which
        # noop_max 0 makes [0, 0]: no no-op starts.
        noop_max=0,
        use_fire_reset=False,
        episodic_life=bool(terminal_on_life_loss),
        reward_clipping=False,
        max_num_frames_per_episode=max_frames,
        autoreset_mode="SameStep",
        full_action_space=False,
    )
    self.action_set = tuple(self._env.ale.get_action_set())
    self.num_actions = len(self.action_set)
    self.observation_shape = (int(screen_size), int(screen_size))
    # Agent steps taken in each environment's current episode.
    self._episode_steps = np.zeros(self.num_envs, np.int64)
    self._lives = np.zeros(self.num_envs, np.int32)
    self._started = False

  @property
  def lives(self) -> np.ndarray:
    """int32 [N]: each game's lives after the last reset or step (a new episode's
    after an autoreset)."""
    return self._lives.copy()

  @property
  def episode_steps(self) -> np.ndarray:
    """int64 [N]: agent steps taken so far in each environment's current episode."""
    return self._episode_steps.copy()

  def reseed(self, seeds: Sequence[int]) -> None:
    """Seeds for the next `reset()`, one per environment (as many as now): a reset
    reseeds every game and reloads its ROM, so it then plays as a new
    AtariVectorEnvironments(game, seeds) would, without building the emulators anew."""
    values = _check_seeds(seeds)
    if len(values) != self.num_envs:
      raise ValueError(f"reseed got {len(values)} seeds for {self.num_envs} environments.")
    self._seeds = values
    self.seeds = tuple(int(s) for s in values)
    self._started = False

  def reset(self) -> np.ndarray:
    """Starts an episode in every environment, environment i seeded with seeds[i].

    Returns:
      uint8 [N, screen_size, screen_size]: the first frames.
    """
    observations, info = self._env.reset(seed=self._seeds.copy())
    self._lives = info["lives"]
    self._episode_steps[:] = 0
    self._started = True
    return self._frames(observations)

  def step(self, actions, active=None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Plays actions[i] in environment i for `frame_skip` frames.

    Args:
      actions: ints [N], each an index into `action_set`.
      active: the batch interface's mask of environments the caller still uses
        (evaluation.py); every environment steps regardless, since the vector env
        steps all of them together, and the caller ignores the inactive ones.

    Returns:
      frames: uint8 [N, screen_size, screen_size]; for an environment whose episode
        ended in this step, the first frame of its next episode.
      rewards: float64 [N], the sums of the frames' rewards (unclipped).
      terminals: bool [N], game over (or a lost life with terminal_on_life_loss).
      truncated: bool [N], the episode has now had max_episode_steps agent steps
        (may be True together with terminals, as in AtariEnvironment).
    """
    if not self._started:
      raise RuntimeError("Call reset() before step().")
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
      raise ValueError(f"actions must be ints of shape ({self.num_envs},), got "
                       f"{actions.dtype} {actions.shape}.")
    if actions.min() < 0 or actions.max() >= self.num_actions:
      raise ValueError(f"actions must be in [0, {self.num_actions}), got {actions}.")
    observations, rewards, terminated, env_truncated, info = self._env.step(
        actions.astype(np.int32))
    self._lives = info["lives"]
    self._episode_steps += 1
    truncated = self._episode_steps >= self._max_episode_steps
    # The vector env counts frames to the same limit and reports truncation only
    # without a termination; a mismatch would mean its episodes are not ours.
    if not np.array_equal(env_truncated, truncated & ~terminated):
      raise RuntimeError(
          f"AtariVectorEnv truncated {env_truncated} where {self._max_episode_steps} "
          f"agent steps give {truncated & ~terminated}.")
    self._episode_steps[terminated | truncated] = 0
    return (self._frames(observations), rewards.astype(np.float64),
            terminated.astype(bool), truncated)

  def _frames(self, observations: np.ndarray) -> np.ndarray:
    """The vector env's [N, 1, H, W] stacks of one frame as uint8 [N, H, W]."""
    return observations.reshape((self.num_envs,) + self.observation_shape)

  def close(self) -> None:
    """Stops the worker threads and frees the emulators; the object is unusable after."""
    if self._env is not None:
      self._env.close()
      # The C++ vectorizer joins its threads when it is destroyed.
      self._env.ale = None
      self._env = None
      self._started = False

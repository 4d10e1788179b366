"""Atari 2600 on `ale_py.ALEInterface` with Dopamine's preprocessing, reproduced exactly.

This is `dopamine.discrete_domains.atari_lib.AtariPreprocessing` over gym's
`<Game>NoFrameskip-v0` (what the DQN Replay dataset was collected with), rebuilt directly on
the ALE because Dopamine's atari_lib cannot be imported here:

  * sticky actions inside the ALE (`repeat_action_probability`, 0.25 as in v0 envs),
    ALE frameskip 1, the minimal action set;
  * each agent step repeats the action `frame_skip` times and sums the (unclipped) reward;
  * the grayscale screens of the last two of those frames are max-pooled and resized to
    `screen_size` x `screen_size` with `cv2.INTER_AREA`;
  * terminal = game over (or a lost life with `terminal_on_life_loss`);
  * `truncated` once the agent has taken `max_episode_steps` steps in the episode
    (Dopamine Runner's `max_steps_per_episode`, 27,000 agent steps = 108K frames).
"""
import difflib
import hashlib

import ale_py
import cv2
import gin
import numpy as np


def _rom_id_to_game(rom_id: str) -> str:
  """'space_invaders' -> 'SpaceInvaders', the CamelCase names gym and Dopamine use.

  Same rule as `ale_py.registration.rom_id_to_name`; it reproduces all 60 DQN Replay
  names (e.g. 'ms_pacman' -> 'MsPacman', 'up_n_down' -> 'UpNDown', 'jamesbond' ->
  'Jamesbond').
  """
  return rom_id.title().replace("_", "")


def game_to_rom_id() -> dict[str, str]:
  """{CamelCase game name: ale-py rom id} for every ROM that ale-py ships."""
  return {_rom_id_to_game(rom): rom for rom in ale_py.roms.get_all_rom_ids()}


def resolve_rom_id(game: str) -> str:
  """Maps a CamelCase game ('MsPacman') or a rom id ('ms_pacman') to the rom id.

  Raises:
    ValueError: the name is neither; the message lists the valid game names.
  """
  games = game_to_rom_id()
  if game in games:
    return games[game]
  if game in games.values():
    return game
  close = difflib.get_close_matches(game, list(games) + list(games.values()), n=3)
  hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
  raise ValueError(
      f"Unknown Atari game {game!r}.{hint} Valid games (CamelCase as in the DQN Replay "
      f"dataset, or the equivalent ale-py rom id such as 'space_invaders'): "
      f"{', '.join(sorted(games))}."
  )


def ale_seed(seed: int) -> int:
  """The ALE `random_seed` (int32) derived from `seed`.

  Derived exactly as `ale_py.env.AtariEnv.seed_game` does, so `AtariEnvironment(g, seed=s)`
  and gymnasium's `ALE/<g>-v5` after `reset(seed=s)` draw the same sticky-action stream.
  """
  _, seed32 = np.random.SeedSequence(seed).generate_state(n_words=2)
  return int(np.uint32(seed32).view(np.int32))


@gin.configurable
class AtariEnvironment:
  """One Atari game with Dopamine's preprocessing. See the module docstring.

  Attributes:
    game: CamelCase game name, e.g. 'Pong'.
    rom_id: ale-py rom id, e.g. 'pong'.
    rom_md5: md5 hex digest of the ROM file loaded.
    action_set: tuple of `ale_py.Action`; agent action i plays action_set[i].
    observation_shape: (screen_size, screen_size), shape of one frame.
    stack_size: 4, frames per agent state (stacking is the replay's / agent's job).
    num_actions: len(action_set).
    ale: the underlying `ale_py.ALEInterface` (read-only use, e.g. frame counters).
  """

  stack_size = 4

  def __init__(
      self,
      game: str,
      seed: int = 0,
      sticky_action_prob: float = 0.25,
      frame_skip: int = 4,
      screen_size: int = 84,
      max_episode_steps: int = 27_000,
      terminal_on_life_loss: bool = False,
      full_action_space: bool = False,
  ):
    """Loads the ROM. Call `reset()` before the first `step()`.

    Args:
      game: CamelCase name ('Pong', 'SpaceInvaders', 'MsPacman') or ale-py rom id.
      seed: non-negative int; seeds the ALE (sticky actions are its only randomness).
      sticky_action_prob: ALE `repeat_action_probability`, per emulator frame.
      frame_skip: emulator frames per agent step (>= 1).
      screen_size: side of the square resized observation.
      max_episode_steps: agent steps after which `step` reports truncated.
      terminal_on_life_loss: report terminal when a life is lost (Mnih et al. 2015).
      full_action_space: use all 18 actions instead of the game's minimal set.
    """
    if frame_skip < 1:
      raise ValueError(f"frame_skip must be >= 1, got {frame_skip}.")
    if screen_size < 1:
      raise ValueError(f"screen_size must be >= 1, got {screen_size}.")
    if max_episode_steps < 1:
      raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")
    self.rom_id = resolve_rom_id(game)
    self.game = _rom_id_to_game(self.rom_id)
    self._frame_skip = frame_skip
    self._screen_size = screen_size
    self._max_episode_steps = max_episode_steps
    self._terminal_on_life_loss = terminal_on_life_loss

    rom_path = ale_py.roms.get_rom_path(self.rom_id)
    with open(rom_path, "rb") as f:
      self.rom_md5 = hashlib.md5(f.read()).hexdigest()

    # Process-wide and static; set before construction to also silence the banner
    # (gymnasium's AtariEnv sets the same level).
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    self.ale = ale_py.ALEInterface()
    # Settings are read by loadROM, so they must all be set before it.
    self.ale.setInt("random_seed", ale_seed(seed))
    self.ale.setFloat("repeat_action_probability", float(sticky_action_prob))
    self.ale.setInt("frame_skip", 1)  # We skip frames ourselves (the default, made explicit).
    self.ale.loadROM(str(rom_path))
    self.action_set = tuple(
        self.ale.getLegalActionSet() if full_action_space else self.ale.getMinimalActionSet()
    )
    self.num_actions = len(self.action_set)
    self.observation_shape = (screen_size, screen_size)

    height, width = self.ale.getScreenDims()
    # Raw grayscale screens uint8 [210, 160] of the last two frames of a step.
    self._screen_buffer = [
        np.zeros((height, width), dtype=np.uint8),
        np.zeros((height, width), dtype=np.uint8),
    ]
    self._lives = 0
    self._episode_steps = 0

  @property
  def game_over(self) -> bool:
    """The ALE's game over (differs from `terminal` only with terminal_on_life_loss)."""
    return self.ale.game_over()

  @property
  def lives(self) -> int:
    return self.ale.lives()

  def reset(self) -> np.ndarray:
    """Starts a new game.

    Returns:
      uint8 [screen_size, screen_size]: the first screen (pooled with a zero screen).
    """
    self.ale.reset_game()
    self._lives = self.ale.lives()
    self._episode_steps = 0
    self.ale.getScreenGrayscale(self._screen_buffer[0])
    self._screen_buffer[1].fill(0)
    return self._pool_and_resize()

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    """Plays `action` for `frame_skip` frames.

    As in Dopamine, on a terminal before the last frame the loop stops early and the
    screen buffers keep whatever they held (a stale observation; the agent ignores it).

    Args:
      action: index into `action_set`, in [0, num_actions).

    Returns:
      observation: uint8 [screen_size, screen_size].
      reward: float, the sum of the frames' rewards (unclipped).
      terminal: game over, or a lost life with terminal_on_life_loss.
      truncated: this episode has now had max_episode_steps agent steps.
    """
    action = int(action)
    if not 0 <= action < self.num_actions:
      raise ValueError(f"action must be in [0, {self.num_actions}), got {action}.")
    ale_action = self.action_set[action]
    reward = 0.0
    is_terminal = False
    for time_step in range(self._frame_skip):
      reward += self.ale.act(ale_action)
      # game_over() includes ALE truncation, like gym v0's `terminated or truncated`.
      game_over = self.ale.game_over()
      if self._terminal_on_life_loss:
        new_lives = self.ale.lives()
        is_terminal = game_over or new_lives < self._lives
        self._lives = new_lives
      else:
        is_terminal = game_over
      # Fetch before the terminal check, as Dopamine does. Dopamine's index
      # `time_step - (frame_skip - 2)` would be 1 for frame_skip == 1 and never refresh
      # buffer 0; clamping to 0 only changes that degenerate case.
      if time_step >= self._frame_skip - 2:
        t = max(0, time_step - (self._frame_skip - 2))
        self.ale.getScreenGrayscale(self._screen_buffer[t])
      if is_terminal:
        break
    self._episode_steps += 1
    truncated = self._episode_steps >= self._max_episode_steps
    return self._pool_and_resize(), reward, is_terminal, truncated

  def _pool_and_resize(self) -> np.ndarray:
    """Max-pools the two screens and resizes: uint8 [screen_size, screen_size].

    Pools in place into buffer 0, like Dopamine: a later early-terminal step that does
    not refresh buffer 0 therefore sees the previous pooled screen.
    """
    if self._frame_skip > 1:
      np.maximum(self._screen_buffer[0], self._screen_buffer[1], out=self._screen_buffer[0])
    return cv2.resize(
        self._screen_buffer[0],
        (self._screen_size, self._screen_size),
        interpolation=cv2.INTER_AREA,
    )

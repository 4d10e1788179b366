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
import logging
import pickle

import ale_py
import cv2
import gin
import numpy as np

from batch_rl.environments import specs


# MD5 of the ROMs the DQN Replay dataset was recorded with: the ROM files bundled in
# atari-py 0.2.6 (2019; Dopamine then ran gym's <Game>NoFrameskip-v0 on atari-py).
# ale-py >= 0.7 ships ROMs (from AutoROM) whose bytes differ for 31 of these 63 games
# (e.g. MsPacman, SpaceInvaders, Assault, Centipede, VideoPinball), checked against
# ale-py 0.12; a different dump can change the game's dynamics or screens and so skews
# evaluation against the dataset. To play the legacy ROM:
#   pip download atari-py==0.2.6 --no-deps --no-binary :all:
#   tar xzf atari-py-0.2.6.tar.gz atari-py-0.2.6/atari_py/atari_roms/<rom_id>.bin
# and copy that file over ale_py/roms/<rom_id>.bin in the environment (its MD5 then
# equals the one below and the warning disappears).
DATASET_ROM_MD5 = {
    "adventure": "4b27f5397c442d25f0c418ccdacf1926",
    "air_raid": "35be55426c1fec32dfb503b4f0651572",
    "alien": "f1a0a23e6464d954e3a9579c4ccd01c8",
    "amidar": "056f5d886a4e7e6fdd83650554997d0d",
    "assault": "c31a17942d162b80962cb1f7571cd1d5",
    "asterix": "89a68746eff7f266bbf08de2483abe55",
    "asteroids": "ccbd36746ed4525821a8083b0d6d2c2c",
    "atlantis": "0b33252b680b65001e91a411e56e72e9",
    "bank_heist": "83b8c01c72306d60dd9b753332ebd276",
    "battle_zone": "e434c0e161dd3c3fb435eb6bad2e182c",
    "beam_rider": "79ab4123a83dc11d468fb2108ea09e2e",
    "berzerk": "fac28963307b6e85082ccd77c88325e7",
    "bowling": "c9b7afad3bfd922e006a6bfc1d4f3fe7",
    "boxing": "c3ef5c4653212088eda54dc91d787870",
    "breakout": "f34f08e5eb96e500e851a80be3277a56",
    "carnival": "de29e46dbea003c3c09c892d668b9413",
    "centipede": "17d000a2882f9fdaa8b4a391ad367f00",
    "chopper_command": "c1cb228470a87beb5f36e90ac745da26",
    "crazy_climber": "55ef7b65066428367844342ed59f956c",
    "defender": "e1029676edb3d35b76ca943da7434da8",
    "demon_attack": "b24f6a5820a4b7763a3d547e3e07441d",
    "double_dunk": "cfc226d04d7490b69e155abd7741e98c",
    "elevator_action": "71f8bacfbdca019113f3f0801849057e",
    "enduro": "94b92a882f6dbaa6993a46e2dcc58402",
    "fishing_derby": "b8865f05676e64f3bec72b9defdacfa7",
    "freeway": "8e0ab801b1705a740b476b7f588c6d16",
    "frostbite": "4ca73eb959299471788f0b685c3ba0b5",
    "gopher": "8f90590dba143d783df5a6cff2000e4d",
    "gravitar": "4767356fa0ed3ebe21437b4473d4ee28",
    "hero": "fca4a5be1251927027f2c24774a02160",
    "ice_hockey": "47711c44723da5d67047990157dcb5dd",
    "jamesbond": "e51030251e440cffaab1ac63438b44ae",
    "journey_escape": "718ae62c70af4e5fd8e932fee216948a",
    "kaboom": "dbdaf82f4f0c415a94d1030271a9ef44",
    "kangaroo": "4326edb70ff20d0ee5ba58fa5cb09d60",
    "krull": "cc724ebe74a109e39c0b2784ddc980ca",
    "kung_fu_master": "0b4e793c9425175498f5a65a3e960086",
    "montezuma_revenge": "3347a6dd59049b15a38394aa2dafa585",
    "ms_pacman": "9469d18238345d87768e8965f9f4a6b2",
    "name_this_game": "f98d2276d4a25b286135566255aea9d0",
    "phoenix": "7e52a95074a66640fcfde124fffd491a",
    "pitfall": "f73d2d0eff548e8fc66996f27acf2b4b",
    "pong": "60e0ea3cbe0913d39803477945e9e5ec",
    "pooyan": "668dc528b7ea9345140f4fcfbecf7066",
    "private_eye": "ef3a4f64b6494ba770862768caf04b86",
    "qbert": "484b0076816a104875e00467d431c2d2",
    "riverraid": "da5096000db5fdaa8d02db57d9367998",
    "road_runner": "7d3cdde63b16fa637c4484e716839c94",
    "robotank": "4f618c2429138e0280969193ed6c107e",
    "seaquest": "240bfbac5163af4df5ae713985386f92",
    "skiing": "367411b78119299234772c08df10e134",
    "solaris": "e72eb8d4410152bdcb69e7fba327b420",
    "space_invaders": "61dbe94f110f30ca4ec524ae5ce2d026",
    "star_gunner": "a3c1c70024d7aabb41381adbfb6d3b25",
    "tennis": "a5c96b046d5f8b7c96daaa12f925bef8",
    "time_pilot": "fc2104dd2dadf9a6176c1c1c8f87ced9",
    "tutankham": "66c2380c71709efa7b166621e5bb4558",
    "up_n_down": "a499d720e7ee35c62424de882a3351b6",
    "venture": "c63a98ca404aa5ee9fcff1de488c3f43",
    "video_pinball": "a2424c1a0c783d7585d701b1c71b5fdc",
    "wizard_of_wor": "663ef22eb399504d5204c543b8a86bcd",
    "yars_revenge": "ee8027d554d14c8d0b86f94737d2fdcc",
    "zaxxon": "eea0da9b987d661264cce69a7c13c3bd",
}


def check_dataset_rom(rom_id: str, rom_md5: str):
  """A warning message if `rom_md5` is not the ROM DQN Replay was recorded with, else None."""
  expected = DATASET_ROM_MD5.get(rom_id)
  if expected is None:
    return (f"ROM {rom_id!r} (md5 {rom_md5}) is not one the DQN Replay dataset was recorded "
            "with; no reference MD5 is known.")
  if expected != rom_md5:
    return (f"ROM {rom_id!r} has md5 {rom_md5}, but the DQN Replay dataset was recorded with "
            f"atari-py 0.2.6's ROM (md5 {expected}): evaluation may not match the dataset's "
            "game. See DATASET_ROM_MD5 in batch_rl/environments/atari.py for how to get the "
            "legacy ROM.")
  return None


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


def check_preprocessing(frame_skip: int, screen_size: int, max_episode_steps: int) -> None:
  """ValueError naming the first of the preprocessing's sizes that is below 1."""
  for name, value in (("frame_skip", frame_skip), ("screen_size", screen_size),
                      ("max_episode_steps", max_episode_steps)):
    if value < 1:
      raise ValueError(f"{name} must be >= 1, got {value}.")


@gin.configurable
class AtariEnvironment(specs.DiscreteFrames):
  """One Atari game with Dopamine's preprocessing. See the module docstring.

  Attributes:
    game: CamelCase game name, e.g. 'Pong'.
    rom_id: ale-py rom id, e.g. 'pong'.
    rom_md5: md5 hex digest of the ROM file loaded.
    rom_warning: None if rom_md5 is DATASET_ROM_MD5's (the dataset's ROM), else why not.
    action_set: tuple of `ale_py.Action`; agent action i plays action_set[i].
    observation_shape: (screen_size, screen_size), shape of one frame.
    stack_size: 4, frames per agent state (stacking is the replay's / agent's job).
    num_actions: len(action_set).
    ale: the underlying `ale_py.ALEInterface` (read-only use, e.g. frame counters).
    observation_spec: uint8 frames of observation_shape.
    action_spec: DiscreteActionSpec(num_actions).
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
    check_preprocessing(frame_skip, screen_size, max_episode_steps)
    self.rom_id = resolve_rom_id(game)
    self.game = _rom_id_to_game(self.rom_id)
    self._frame_skip = frame_skip
    self._screen_size = screen_size
    self._max_episode_steps = max_episode_steps
    self._terminal_on_life_loss = terminal_on_life_loss
    # The protocol as configured (gin's AtariEnvironment.* bindings), which the vector
    # env of the evaluation is built with too.
    self.settings = dict(sticky_action_prob=sticky_action_prob, frame_skip=frame_skip,
                         screen_size=screen_size, max_episode_steps=max_episode_steps,
                         terminal_on_life_loss=terminal_on_life_loss,
                         full_action_space=full_action_space)

    rom_path = ale_py.roms.get_rom_path(self.rom_id)
    with open(rom_path, "rb") as f:
      self.rom_md5 = hashlib.md5(f.read()).hexdigest()
    # None when the ROM is the one DQN Replay was recorded with; else logged as a warning.
    self.rom_warning = check_dataset_rom(self.rom_id, self.rom_md5)
    if self.rom_warning:
      logging.warning(self.rom_warning)

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

  def snapshot(self) -> bytes:
    """The emulator's state with its RNG (sticky actions continue as they would) and
    this wrapper's screen buffers and counters, as bytes."""
    return pickle.dumps((self.ale.cloneState(include_rng=True),
                         [buffer.copy() for buffer in self._screen_buffer], self._lives,
                         self._episode_steps))

  def restore(self, snapshot: bytes) -> None:
    """Continues exactly from a `snapshot` of the same game."""
    state, screens, self._lives, self._episode_steps = pickle.loads(snapshot)
    self.ale.restoreState(state)
    for buffer, screen in zip(self._screen_buffer, screens):
      buffer[...] = screen

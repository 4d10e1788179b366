"""Tests for batch_rl.environments.atari (Dopamine's Atari preprocessing on ale-py)."""
import ale_py
import cv2
import gin
import gymnasium
import numpy as np
import pytest

from batch_rl.environments.atari import AtariEnvironment, ale_seed, resolve_rom_id
from batch_rl.environments.factory import Environment, create_environment

gymnasium.register_envs(ale_py)

# The 60 games of the DQN Replay dataset, as named there and in Dopamine.
DQN_REPLAY_GAMES = (
    "AirRaid Alien Amidar Assault Asterix Asteroids Atlantis BankHeist BattleZone "
    "BeamRider Berzerk Bowling Boxing Breakout Carnival Centipede ChopperCommand "
    "CrazyClimber DemonAttack DoubleDunk ElevatorAction Enduro FishingDerby Freeway "
    "Frostbite Gopher Gravitar Hero IceHockey Jamesbond JourneyEscape Kangaroo Krull "
    "KungFuMaster MontezumaRevenge MsPacman NameThisGame Phoenix Pitfall Pong Pooyan "
    "PrivateEye Qbert Riverraid RoadRunner Robotank Seaquest Skiing Solaris "
    "SpaceInvaders StarGunner Tennis TimePilot Tutankham UpNDown Venture VideoPinball "
    "WizardOfWor YarsRevenge Zaxxon"
).split()


def _actions(num_actions, n, seed=0):
  return np.random.default_rng(seed).integers(num_actions, size=n)


def _gymnasium_reference(game, sticky_action_prob):
  """gymnasium's own AtariPreprocessing, an implementation independent of ours."""
  env = gymnasium.make(
      f"ALE/{game}-v5",
      frameskip=1,
      repeat_action_probability=sticky_action_prob,
      full_action_space=False,
  )
  return gymnasium.wrappers.AtariPreprocessing(
      env,
      noop_max=0,
      frame_skip=4,
      screen_size=84,
      terminal_on_life_loss=False,
      grayscale_obs=True,
  )


@pytest.mark.parametrize("game,num_steps", [("Pong", 400), ("Breakout", 400)])
def test_matches_gymnasium_atari_preprocessing(game, num_steps):
  # Sticky actions on: gymnasium's reset(seed=s) sets the ALE random_seed from
  # SeedSequence(s), and ale_seed() derives ours the same way, so both ALEs draw the
  # same sticky-action stream and must agree exactly.
  seed = 3
  ref = _gymnasium_reference(game, sticky_action_prob=0.25)
  ref_obs, _ = ref.reset(seed=seed)
  env = AtariEnvironment(game, seed=seed, sticky_action_prob=0.25)
  obs = env.reset()
  np.testing.assert_array_equal(obs, ref_obs)
  assert obs.shape == (84, 84) and obs.dtype == np.uint8

  rewards, distinct, terminals = [], set(), 0
  for action in _actions(env.num_actions, num_steps):
    ref_obs, ref_reward, ref_term, ref_trunc, _ = ref.step(action)
    obs, reward, terminal, truncated = env.step(action)
    assert (terminal, truncated) == (ref_term, ref_trunc)
    assert reward == ref_reward
    rewards.append(reward)
    if terminal:
      # gymnasium breaks before fetching the screen on a terminal frame and Dopamine
      # after, so terminal observations legitimately differ; start a new game instead.
      terminals += 1
      np.testing.assert_array_equal(env.reset(), ref.reset()[0])
    else:
      np.testing.assert_array_equal(obs, ref_obs)
      distinct.add(obs.tobytes())
  # The comparison saw real game play: scoring and many different screens.
  assert any(r != 0 for r in rewards)
  assert len(distinct) > num_steps // 4
  if game == "Breakout":  # Random Breakout ends in ~250 steps: the reset path is covered.
    assert terminals >= 1


class _HandReference:
  """Dopamine's AtariPreprocessing written out over a second, raw ALE.

  Same settings and seed as AtariEnvironment, so the same sticky-action draws. Screens
  of frames 3 and 4 of each step are fetched (before the terminal check, as Dopamine
  does) into two slots that keep stale contents when a terminal cuts the step short,
  then max-pooled and resized with INTER_AREA.
  """

  def __init__(self, rom_id, seed, sticky_action_prob, terminal_on_life_loss):
    self.ale = ale_py.ALEInterface()
    self.ale.setInt("random_seed", ale_seed(seed))
    self.ale.setFloat("repeat_action_probability", sticky_action_prob)
    self.ale.loadROM(str(ale_py.roms.get_rom_path(rom_id)))
    self.action_set = self.ale.getMinimalActionSet()
    self.terminal_on_life_loss = terminal_on_life_loss

  def reset(self):
    self.ale.reset_game()
    self.lives = self.ale.lives()
    self.slots = [self.ale.getScreenGrayscale(), np.zeros((210, 160), np.uint8)]
    return self._observation()

  def step(self, action):
    """Returns (observation, reward, terminal, frames played, pooling changed a pixel)."""
    reward = 0
    for frame in range(4):
      reward += self.ale.act(self.action_set[action])
      lives = self.ale.lives()
      terminal = self.ale.game_over() or (
          self.terminal_on_life_loss and lives < self.lives)
      self.lives = lives
      if frame >= 2:
        self.slots[frame - 2] = self.ale.getScreenGrayscale()
      if terminal:
        break
    pooling_mattered = not np.array_equal(np.maximum(*self.slots), self.slots[1])
    return self._observation(), reward, terminal, frame + 1, pooling_mattered

  def _observation(self):
    self.slots[0] = np.maximum(self.slots[0], self.slots[1])
    return cv2.resize(self.slots[0], (84, 84), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("game,seed,terminal_on_life_loss", [
    ("Pong", 5, False),  # 400 non-terminal steps.
    ("Breakout", 0, True),  # Life losses cut steps after 1, 3 and 4 frames; game over.
    ("Breakout", 1, True),  # ... after 1, 2 and 3 frames.
])
def test_matches_hand_computed_pooling_and_resizing(game, seed, terminal_on_life_loss):
  env = AtariEnvironment(game, seed=seed, terminal_on_life_loss=terminal_on_life_loss)
  ref = _HandReference(env.rom_id, seed, 0.25, terminal_on_life_loss)
  np.testing.assert_array_equal(env.reset(), ref.reset())
  pooling_mattered, terminal_frames = 0, set()
  for action in _actions(env.num_actions, 400, seed=1):
    obs, reward, terminal, _ = env.step(action)
    ref_obs, ref_reward, ref_terminal, frames, mattered = ref.step(action)
    assert (reward, terminal) == (ref_reward, ref_terminal)
    np.testing.assert_array_equal(obs, ref_obs)
    pooling_mattered += mattered
    if terminal:
      terminal_frames.add(frames)
      if env.game_over:
        break
  assert pooling_mattered > 0  # Otherwise a no-pooling bug would pass this test.
  if terminal_on_life_loss:
    assert env.game_over and terminal_frames & {1, 2} and terminal_frames & {3, 4}


def test_early_terminal_keeps_stale_buffers():
  # Dopamine stops the frame loop on a terminal; if that happens on the first or second
  # frame, neither screen buffer is refreshed and (pooled in place) the observation
  # equals the previous one. Lost lives in Breakout end the loop at varying frames.
  env = AtariEnvironment("Breakout", seed=0, terminal_on_life_loss=True)
  prev = env.reset()
  frame = env.ale.getEpisodeFrameNumber()
  early, life_losses = 0, 0
  for action in _actions(env.num_actions, 2000):
    obs, _, terminal, _ = env.step(action)
    frames_played = env.ale.getEpisodeFrameNumber() - frame
    frame += frames_played
    assert frames_played == 4 or terminal
    if terminal and frames_played <= 2:
      early += 1
      np.testing.assert_array_equal(obs, prev)
    if terminal and not env.game_over:
      life_losses += 1
    if env.game_over:
      break
    prev = obs
  assert env.game_over
  assert early >= 1 and life_losses == 4


def test_same_seed_same_trajectory_different_seed_differs():
  def rollout(seed, sticky):
    env = AtariEnvironment("Pong", seed=seed, sticky_action_prob=sticky)
    frames = [env.reset()]
    for action in _actions(env.num_actions, 150):
      frames.append(env.step(action)[0])
    return np.stack(frames)

  np.testing.assert_array_equal(rollout(0, 0.25), rollout(0, 0.25))
  assert not np.array_equal(rollout(0, 0.25), rollout(1, 0.25))
  # The seed only drives sticky actions: without them the ALE is deterministic.
  np.testing.assert_array_equal(rollout(0, 0.0), rollout(1, 0.0))


def test_truncation_at_max_episode_steps_and_reset_clears_it():
  env = AtariEnvironment("Pong", seed=0, max_episode_steps=50)
  for _ in range(2):
    env.reset()
    flags = [env.step(a)[2:] for a in _actions(env.num_actions, 50)]
    assert flags[:-1] == [(False, False)] * 49
    assert flags[-1] == (False, True)


def test_game_over_is_terminal():
  # A random Pong game is over in ~1000 agent steps (< 1 s): one side reaches 21.
  env = AtariEnvironment("Pong", seed=2)
  env.reset()
  rewards = []
  for action in _actions(env.num_actions, 3000, seed=2):
    _, reward, terminal, truncated = env.step(action)
    rewards.append(reward)
    assert not truncated
    if terminal:
      break
  assert terminal and env.game_over
  rewards = np.array(rewards)
  assert 21 in (rewards[rewards > 0].sum(), -rewards[rewards < 0].sum())


def test_terminal_on_life_loss():
  actions = _actions(4, 500, seed=4)
  lol = AtariEnvironment("Breakout", seed=4, terminal_on_life_loss=True)
  plain = AtariEnvironment("Breakout", seed=4)
  lol.reset(), plain.reset()
  assert lol.lives == 5
  for action in actions:
    _, _, lol_terminal, _ = lol.step(action)
    _, _, plain_terminal, _ = plain.step(action)
    if lol_terminal:
      break
  assert lol_terminal and not plain_terminal
  assert lol.lives == plain.lives == 4 and not lol.game_over


def test_name_mapping_and_rom_metadata():
  assert resolve_rom_id("Pong") == "pong"
  assert resolve_rom_id("SpaceInvaders") == "space_invaders"
  assert resolve_rom_id("MsPacman") == "ms_pacman"
  assert resolve_rom_id("BeamRider") == "beam_rider"
  assert resolve_rom_id("YarsRevenge") == "yars_revenge"
  assert resolve_rom_id("space_invaders") == "space_invaders"
  for game in DQN_REPLAY_GAMES:
    assert ale_py.roms.get_rom_path(resolve_rom_id(game)) is not None, game

  env = AtariEnvironment("space_invaders")
  assert (env.game, env.rom_id) == ("SpaceInvaders", "space_invaders")
  pong = AtariEnvironment("Pong")
  # md5 of the standard Pong cartridge (Stella's database; also atari-py's ROM).
  assert pong.rom_md5 == "60e0ea3cbe0913d39803477945e9e5ec"
  assert pong.num_actions == 6 and len(pong.action_set) == 6
  assert AtariEnvironment("Pong", full_action_space=True).num_actions == 18


def test_unknown_game_message_lists_valid_games():
  with pytest.raises(ValueError) as err:
    AtariEnvironment("Pongg")
  # One paragraph: gin appends its own "In call to configurable ..." line after it.
  message = str(err.value).splitlines()[0]
  assert "'Pongg'" in message and "Did you mean 'Pong'" in message
  for game in ("Pong", "SpaceInvaders", "MsPacman", "YarsRevenge"):
    assert game in message


def test_invalid_action_rejected():
  env = AtariEnvironment("Pong")
  env.reset()
  for action in (-1, 6):
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
      env.step(action)


def test_factory_and_gin():
  env = create_environment("atari:Pong", seed=0, sticky_action_prob=0.0)
  assert isinstance(env, AtariEnvironment) and isinstance(env, Environment)
  assert (env.observation_shape, env.stack_size, env.num_actions) == ((84, 84), 4, 6)
  assert env.reset().shape == env.observation_shape

  gin.parse_config("AtariEnvironment.max_episode_steps = 3")
  try:
    env = create_environment("atari:Pong", seed=0)
  finally:
    gin.clear_config()
  env.reset()
  assert [env.step(0)[3] for _ in range(3)] == [False, False, True]

  with pytest.raises(ValueError, match="'pong:Atari'.*'atari', 'minatar'"):
    create_environment("pong:Atari", seed=0)
  with pytest.raises(ValueError, match="expected '<family>:<game>'"):
    create_environment("Pong", seed=0)
  with pytest.raises(ValueError, match="Unknown Atari game 'Pongg'"):
    create_environment("atari:Pongg", seed=0)

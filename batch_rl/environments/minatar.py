"""MinAtar games (Young & Tian, 2019) behind the common `Environment` interface.

A thin layer over `minatar.Environment`, which already implements sticky actions
(`sticky_action_prob`) and difficulty ramping. Observations are the game's boolean
10x10xC state cast to uint8; one frame is one agent state (stack_size 1).

Seeding: `minatar.Environment.seed(s)` installs one `np.random.RandomState(s)` that is
shared by the sticky-action draw and the game's own spawns, so `seed` controls all the
randomness (the game module constructs an unseeded RandomState and resets once in its
constructor; we re-seed and the first `reset()` redoes that reset from the seeded state).

Action sets: with `minimal_action_set=True` agent action i plays
`minatar.Environment.minimal_action_set()[i]`, as MinAtar's gymnasium `-v1` envs do.
MinAtar's own examples, its `-v0` gym envs and Dopamine's `MinAtarEnv` use all 6 actions,
so that is the default here (`minimal_action_set=False`).
"""
import difflib
import pickle

import gin
import minatar
import numpy as np

from batch_rl.environments import specs

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


@gin.configurable
class MinAtarEnvironment(specs.DiscreteFrames):
  """One MinAtar game.

  Attributes:
    game: the MinAtar game name, e.g. 'breakout'.
    action_set: tuple of MinAtar action indices (into 'n','l','u','r','d','f');
      agent action i plays action_set[i].
    observation_shape: (10, 10, C), shape of one uint8 frame (C depends on the game).
    stack_size: 1.
    num_actions: len(action_set).
    observation_spec: uint8 frames of observation_shape.
    action_spec: DiscreteActionSpec(num_actions).
  """

  stack_size = 1

  def __init__(
      self,
      game: str,
      seed: int = 0,
      sticky_action_prob: float = 0.1,
      difficulty_ramping: bool = True,
      max_episode_steps: int = 27_000,
      minimal_action_set: bool = False,
  ):
    """Creates and seeds the game. Call `reset()` before the first `step()`.

    Args:
      game: one of GAMES.
      seed: seeds the single RandomState behind sticky actions and game dynamics.
      sticky_action_prob: probability that MinAtar replays the previous action.
      difficulty_ramping: MinAtar's speed-up over time (asterix, seaquest,
        space_invaders; the other games ignore it).
      max_episode_steps: agent steps after which `step` reports truncated.
      minimal_action_set: expose only the game's meaningful actions (else all 6).
    """
    if game not in GAMES:
      close = difflib.get_close_matches(game, GAMES, n=2)
      hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
      raise ValueError(
          f"Unknown MinAtar game {game!r}.{hint} Valid games: {', '.join(GAMES)}."
      )
    if max_episode_steps < 1:
      raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")
    self.game = game
    self._max_episode_steps = max_episode_steps
    self._env = minatar.Environment(
        game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping
    )
    self._env.seed(seed)
    if minimal_action_set:
      self.action_set = tuple(int(a) for a in self._env.minimal_action_set())
    else:
      self.action_set = tuple(range(self._env.num_actions()))
    self.num_actions = len(self.action_set)
    self.observation_shape = tuple(self._env.state_shape())
    self._episode_steps = 0

  def reset(self) -> np.ndarray:
    """Starts a new episode.

    MinAtar keeps the previous episode's last action for its sticky-action draw (we do
    not touch that), so episodes are reproducible as a sequence from the seed.

    Returns:
      uint8 [10, 10, C], values in {0, 1}.
    """
    self._env.reset()
    self._episode_steps = 0
    return self._env.state().astype(np.uint8)

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    """Plays one agent action (one MinAtar time step; MinAtar has no frame skip).

    Args:
      action: index into `action_set`, in [0, num_actions).

    Returns:
      observation: uint8 [10, 10, C].
      reward: float.
      terminal: game over.
      truncated: this episode has now had max_episode_steps agent steps.
    """
    action = int(action)
    if not 0 <= action < self.num_actions:
      raise ValueError(f"action must be in [0, {self.num_actions}), got {action}.")
    reward, terminal = self._env.act(self.action_set[action])
    self._episode_steps += 1
    truncated = self._episode_steps >= self._max_episode_steps
    return self._env.state().astype(np.uint8), float(reward), bool(terminal), truncated

  def snapshot(self) -> bytes:
    """The game's whole state, its RandomState included (`restore` continues it exactly)."""
    return pickle.dumps((self._env, self._episode_steps))

  def restore(self, snapshot: bytes) -> None:
    """Continues from a `snapshot` of the same game (taken by this or another instance)."""
    self._env, self._episode_steps = pickle.loads(snapshot)

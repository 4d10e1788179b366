"""The environment interface the runners use, and a gin-configurable factory."""
from typing import Protocol, runtime_checkable

import gin
import numpy as np

from batch_rl.environments.atari import AtariEnvironment
from batch_rl.environments.minatar import MinAtarEnvironment


@runtime_checkable
class Environment(Protocol):
  """An episodic, discrete-action environment that emits one uint8 frame per step.

  Agent states are stacks of the last `stack_size` frames on a trailing axis; stacking
  is done by the replay / agent (as Dopamine does), not here.

  Attributes:
    observation_shape: shape of ONE frame as stored in the replay: (84, 84) for Atari,
      (10, 10, C) for MinAtar.
    stack_size: frames per agent state: 4 for Atari, 1 for MinAtar.
    num_actions: actions are the ints in [0, num_actions).

  reset() starts an episode and returns its first frame (uint8, observation_shape).
  step(action) returns (frame uint8 observation_shape, reward float (unclipped),
  terminal (game over), truncated (the episode step limit is reached)).
  """

  observation_shape: tuple[int, ...]
  stack_size: int
  num_actions: int

  def reset(self) -> np.ndarray:
    ...

  def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
    ...


_FAMILIES = {"atari": AtariEnvironment, "minatar": MinAtarEnvironment}


@gin.configurable
def create_environment(name: str, seed: int, **overrides) -> Environment:
  """Creates an environment from a 'family:game' name.

  Args:
    name: 'atari:<Game>' (e.g. 'atari:Pong', 'atari:SpaceInvaders') or
      'minatar:<game>' (e.g. 'minatar:breakout').
    seed: passed to the environment's constructor.
    **overrides: further constructor kwargs (e.g. sticky_action_prob). Anything not
      given here can be bound in gin on AtariEnvironment / MinAtarEnvironment.

  Raises:
    ValueError: unknown family or game; the message lists the valid choices.
  """
  family, sep, game = name.partition(":")
  if not sep or family not in _FAMILIES:
    raise ValueError(
        f"Unknown environment {name!r}: expected '<family>:<game>' with family one of "
        f"{', '.join(repr(f) for f in _FAMILIES)}, e.g. 'atari:Pong' or "
        f"'minatar:breakout'."
    )
  return _FAMILIES[family](game, seed=seed, **overrides)


def describe_environment(name: str, env: Environment) -> str:
  """One line for the run's logs: the environment and, for Atari, the ROM's MD5.

  An Atari ROM other than the one DQN Replay was recorded with (atari.DATASET_ROM_MD5)
  says so, so that a run's TensorBoard text records which ROM its returns come from.
  """
  rom_md5 = getattr(env, "rom_md5", None)
  if rom_md5 is None:
    return name
  warning = getattr(env, "rom_warning", None)
  verdict = (f"WARNING: {warning}" if warning
             else "the ROM the DQN Replay dataset was recorded with")
  return f"{name}: ROM {getattr(env, 'rom_id', '?')!r} md5 {rom_md5} ({verdict})"

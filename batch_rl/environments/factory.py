"""The environment interface the runners use, and a gin-configurable factory."""
from typing import Protocol, runtime_checkable

import gin
import numpy as np

from batch_rl.environments import specs
from batch_rl.environments.atari import AtariEnvironment
from batch_rl.environments.bsuite_env import BsuiteEnvironment
from batch_rl.environments.classic_control import GymEnvironment
from batch_rl.environments.minatar import MinAtarEnvironment
from batch_rl.environments.mujoco_env import MujocoEnvironment


@runtime_checkable
class Environment(Protocol):
  """An episodic environment that emits one observation per step.

  Agent states are stacks of the last `stack_size` observations on a trailing axis;
  stacking is done by the replay / agent (as Dopamine does), not here.

  Attributes:
    observation_spec: `specs.ObservationSpec`, shape and dtype of ONE observation as
      stored in the replay: uint8 (84, 84) for Atari, uint8 (10, 10, C) for MinAtar,
      float32 (4,) for gym:CartPole-v1, float32 (10, 5) for bsuite:catch, float32
      (11,) for mujoco:Hopper-v5.
    action_spec: `specs.DiscreteActionSpec(num_actions)` (actions are the ints in
      [0, num_actions), stored int32) or `specs.BoxActionSpec(shape, low, high)`
      (float32 action vectors).
    observation_shape: observation_spec.shape.
    stack_size: observations per agent state: 4 for Atari, 1 for MinAtar and gym.
    num_actions: action_spec.num_actions (discrete environments).

  reset() starts an episode and returns its first observation (observation_spec).
  step(action) returns (observation, reward float (unclipped), terminal (the episode
  ended in the task: game over, the pole fell), truncated (the episode step limit is
  reached)).

  snapshot() -> bytes and restore(bytes) (optional; all environments here have them)
  save and continue the environment's exact state, its random state included, so an
  online run resumes mid-episode as if never stopped (`snapshot_of`/`restore_from`).

  Environments without the two specs (uint8 frames of `observation_shape`,
  `num_actions` discrete actions) are read through `observation_spec_of` and
  `action_spec_of`.
  """

  observation_spec: specs.ObservationSpec
  action_spec: specs.ActionSpec
  observation_shape: tuple[int, ...]
  stack_size: int
  num_actions: int

  def reset(self) -> np.ndarray:
    ...

  def step(self, action) -> tuple[np.ndarray, float, bool, bool]:
    ...


def observation_spec_of(env) -> specs.ObservationSpec:
  """`env.observation_spec`, or uint8 frames of `env.observation_shape` if it has none."""
  spec = getattr(env, "observation_spec", None)
  return spec if spec is not None else specs.ObservationSpec(env.observation_shape, np.uint8)


def action_spec_of(env) -> specs.ActionSpec:
  """`env.action_spec`, or `num_actions` discrete actions if it has none."""
  spec = getattr(env, "action_spec", None)
  return spec if spec is not None else specs.DiscreteActionSpec(env.num_actions)


_FAMILIES = {"atari": AtariEnvironment, "minatar": MinAtarEnvironment,
             "gym": GymEnvironment, "bsuite": BsuiteEnvironment,
             "mujoco": MujocoEnvironment}


@gin.configurable
def create_environment(name: str, seed: int, **overrides) -> Environment:
  """Creates an environment from a 'family:game' name.

  Args:
    name: 'atari:<Game>' (e.g. 'atari:Pong', 'atari:SpaceInvaders'),
      'minatar:<game>' (e.g. 'minatar:breakout'), 'gym:<id>' (gymnasium's classic
      control, e.g. 'gym:CartPole-v1'), 'bsuite:<name>' ('bsuite:catch',
      'bsuite:cartpole', 'bsuite:mountain_car') or 'mujoco:<id>' (gymnasium's MuJoCo
      locomotion tasks, continuous actions, e.g. 'mujoco:Hopper-v5').
    seed: passed to the environment's constructor.
    **overrides: further constructor kwargs (e.g. sticky_action_prob). Anything not
      given here can be bound in gin on AtariEnvironment / MinAtarEnvironment /
      GymEnvironment / BsuiteEnvironment / MujocoEnvironment.

  Raises:
    ValueError: unknown family or game; the message lists the valid choices.
  """
  family, sep, game = name.partition(":")
  if not sep or family not in _FAMILIES:
    raise ValueError(
        f"Unknown environment {name!r}: expected '<family>:<game>' with family one of "
        f"{', '.join(repr(f) for f in _FAMILIES)}, e.g. 'atari:Pong', "
        f"'minatar:breakout', 'gym:CartPole-v1', 'bsuite:catch' or 'mujoco:Hopper-v5'."
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


def snapshot_of(env) -> bytes:
  """env.snapshot(); a TypeError naming the environment if it cannot be saved."""
  if not hasattr(env, "snapshot") or not hasattr(env, "restore"):
    raise TypeError(f"{type(env).__name__} has no snapshot()/restore(): an online run in "
                    "it cannot checkpoint the environment, so it cannot resume.")
  return env.snapshot()


def restore_from(env, snapshot: bytes) -> None:
  """env.restore(snapshot), the inverse of snapshot_of."""
  env.restore(snapshot)

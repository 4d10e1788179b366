"""What an environment emits and takes: observation and action specs.

An environment declares `observation_spec` (shape and dtype of ONE observation, the
frame stored per replay entry) and `action_spec` (discrete or a box). Everything that
allocates states, replay entries or dummy network inputs reads its dtype and shapes
from these, so a domain with float observations (classic control, MuJoCo) or vector
actions needs no special case: uint8 frames and int32 scalar actions are simply the
specs of Atari and MinAtar.

Agent states stack `stack_size` observations on a new trailing axis (as Dopamine):
an Atari state is (84, 84, 4), a MinAtar one (10, 10, C, 1) merged by its network, a
CartPole one (4, 1). `state_shape` says so.
"""
import dataclasses
from typing import Union

import numpy as np


def _float_tuple(value, size: int, name: str) -> tuple[float, ...]:
  flat = np.asarray(value, np.float64).reshape(-1)
  if flat.size == 1:  # one bound for every element
    flat = np.repeat(flat, size)
  if flat.size != size:
    raise ValueError(f"BoxActionSpec.{name} has {flat.size} values for {size} action "
                     "dimensions.")
  return tuple(float(v) for v in flat)


@dataclasses.dataclass(frozen=True)
class ObservationSpec:
  """One observation: `shape` (no stack axis) and numpy `dtype` (uint8, float32)."""

  shape: tuple[int, ...]
  dtype: np.dtype = np.dtype(np.uint8)

  def __post_init__(self):
    object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
    object.__setattr__(self, "dtype", np.dtype(self.dtype))


@dataclasses.dataclass(frozen=True)
class DiscreteActionSpec:
  """Actions are the ints in [0, num_actions), stored as int32 scalars."""

  num_actions: int

  def __post_init__(self):
    if int(self.num_actions) < 1:
      raise ValueError(f"num_actions must be >= 1, got {self.num_actions}.")
    object.__setattr__(self, "num_actions", int(self.num_actions))

  @property
  def shape(self) -> tuple[int, ...]:
    """Shape of one stored action: a scalar."""
    return ()

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.int32)


@dataclasses.dataclass(frozen=True)
class BoxActionSpec:
  """Continuous actions: float32 arrays of `shape` with low <= a <= high elementwise.

  `low` and `high` are given as a scalar or one value per element and kept as flat
  tuples (so that the spec stays hashable); `low_array` / `high_array` have `shape`.
  """

  shape: tuple[int, ...]
  low: Union[float, tuple[float, ...]]
  high: Union[float, tuple[float, ...]]

  def __post_init__(self):
    shape = tuple(int(d) for d in self.shape)
    size = int(np.prod(shape, dtype=np.int64))
    low = _float_tuple(self.low, size, "low")
    high = _float_tuple(self.high, size, "high")
    if any(lo > hi for lo, hi in zip(low, high)):
      raise ValueError(f"BoxActionSpec needs low <= high, got low {low}, high {high}.")
    object.__setattr__(self, "shape", shape)
    object.__setattr__(self, "low", low)
    object.__setattr__(self, "high", high)

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(np.float32)

  @property
  def low_array(self) -> np.ndarray:
    return np.asarray(self.low, np.float32).reshape(self.shape)

  @property
  def high_array(self) -> np.ndarray:
    return np.asarray(self.high, np.float32).reshape(self.shape)


ActionSpec = Union[DiscreteActionSpec, BoxActionSpec]


# How far an action may leave its box and still count as inside (float rounding of a
# squashed policy's output mapped onto the box).
BOX_TOLERANCE = 1e-5


def out_of_box(actions: np.ndarray, spec: BoxActionSpec, tolerance: float = BOX_TOLERANCE
               ) -> tuple[np.ndarray, float]:
  """(bool [N]: action row i has an element outside [low - tolerance, high +
  tolerance] or not finite, the largest distance of any element from the box) for
  actions [N, *spec.shape]."""
  actions = np.asarray(actions, np.float64).reshape((-1,) + tuple(spec.shape))
  low, high = spec.low_array.astype(np.float64), spec.high_array.astype(np.float64)
  excess = np.maximum(low - actions, actions - high)
  excess = np.where(np.isfinite(actions), excess, np.inf)
  axes = tuple(range(1, actions.ndim))
  row_excess = excess.max(axis=axes) if axes else excess
  largest = float(max(row_excess.max(initial=0.0), 0.0))
  return row_excess > tolerance, largest


def state_shape(observation: ObservationSpec, stack_size: int) -> tuple[int, ...]:
  """Shape of one agent state: the observation's shape plus a trailing stack axis."""
  return observation.shape + (int(stack_size),)


class DiscreteFrames:
  """Specs of an environment of uint8 frames (`observation_shape`) and discrete
  actions (`num_actions`): Atari and MinAtar."""

  observation_shape: tuple[int, ...]
  num_actions: int

  @property
  def observation_spec(self) -> ObservationSpec:
    return ObservationSpec(self.observation_shape, np.uint8)

  @property
  def action_spec(self) -> DiscreteActionSpec:
    return DiscreteActionSpec(self.num_actions)

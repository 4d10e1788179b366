"""The 16x16 gridworld of Fu et al. (2019) used by IUP (Kumar et al. 2021, App. B.2).

Sections 1-2 of the gridworld spec. Everything here is numpy (float64 for the MDP);
the layout is generated with Python's `random` exactly as Fu's `random_grid_env`, so
seed 0 reproduces the reference layout of the spec.

Conventions: cell (x, y), x = column, y = row (y grows "down"); state s = x + W * y.
Wall cells are states too (never entered; they self-loop). Actions: 0 no-op, 1 up
(y - 1), 2 down (y + 1), 3 left (x - 1), 4 right (x + 1).
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import random
from typing import Optional

import gin
import numpy as np

from batch_rl.gridworld import tabular

NUM_ACTIONS = 5
# (dx, dy) of actions 0..4: no-op, up, down, left, right.
ACTION_DELTAS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0))


class FeatureType(str, enum.Enum):
  SMOOTH = "smooth"    # Fu's LocalObsWrapper: Gaussian noise smoothed by the random walk
  RANDOM = "random"    # U(-1, 1) i.i.d. (grid16randomobs)
  TWO_HOT = "two_hot"  # e_x concatenated with e_y (Fu's OneHotObsWrapper, grid16onehot)
  ONE_HOT = "one_hot"  # e_s, |S| dims (Fu's TabularNetwork input)


@dataclasses.dataclass(frozen=True)
class Layout:
  width: int
  height: int
  walls: frozenset  # of (x, y)
  start: tuple[int, int]
  goal: tuple[int, int]

  def state(self, cell: tuple[int, int]) -> int:
    return cell[0] + self.width * cell[1]

  def wall_mask(self) -> np.ndarray:
    """bool [S], True on wall cells."""
    mask = np.zeros(self.width * self.height, bool)
    for cell in self.walls:
      mask[self.state(cell)] = True
    return mask

  def render(self) -> str:
    """Rows joined by '|': 'S' start, 'G' goal, '#' wall, '.' free (as in the spec)."""
    rows = []
    for y in range(self.height):
      row = ""
      for x in range(self.width):
        row += ("S" if (x, y) == self.start else "G" if (x, y) == self.goal
                else "#" if (x, y) in self.walls else ".")
      rows.append(row)
    return "|".join(rows)


def generate_layout(seed: int, width: int = 16, height: int = 16,
                    wall_fraction: float = 0.2, goal_candidate_fraction: float = 0.25,
                    start: Optional[tuple[int, int]] = None) -> tuple[Layout, list]:
  """Fu's `random_grid_env` layout: walls, start and goal from `random.Random(seed)`.

  Returns (layout, walls in the order they were sampled).

  Exactly floor(wall_fraction * W * H) walls are sampled among the cells other than the
  start; the goal is the candidate (floor(goal_candidate_fraction * W * H) sampled free
  cells) farthest from the start in Euclidean distance, first on ties. Connectivity is
  not enforced here (see `reachable_from`).
  """
  rng = random.Random(seed)
  start = (width // 2, height // 2) if start is None else tuple(start)
  locs = [(x, y) for x in range(width) for y in range(height)]
  locs.remove(start)
  walls = rng.sample(locs, int(width * height * wall_fraction))
  wall_set = set(walls)
  locs = [c for c in locs if c not in wall_set]
  cands = rng.sample(locs, int(width * height * goal_candidate_fraction))
  dists = [np.hypot(c[0] - start[0], c[1] - start[1]) for c in cands]
  goal = cands[int(np.argmax(dists))]
  return Layout(width, height, frozenset(walls), start, goal), walls


def deterministic_next(layout: Layout) -> np.ndarray:
  """int [S, A]: the cell the move leads to (clipped to the grid; a wall target or a
  wall origin means staying)."""
  w, h = layout.width, layout.height
  nxt = np.zeros((w * h, NUM_ACTIONS), np.int64)
  for y in range(h):
    for x in range(w):
      s = x + w * y
      for a, (dx, dy) in enumerate(ACTION_DELTAS):
        tx, ty = min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1)
        if (x, y) in layout.walls or (tx, ty) in layout.walls:
          tx, ty = x, y
        nxt[s, a] = tx + w * ty
  return nxt


def reachable_from(layout: Layout) -> np.ndarray:
  """bool [S]: cells reachable from the start by deterministic moves (BFS)."""
  nxt = deterministic_next(layout)
  seen = np.zeros(nxt.shape[0], bool)
  s0 = layout.state(layout.start)
  seen[s0] = True
  queue = collections.deque([s0])
  while queue:
    s = queue.popleft()
    for t in nxt[s]:
      if not seen[t]:
        seen[t] = True
        queue.append(t)
  return seen


def transition_matrix(layout: Layout, noise: float = 0.05) -> np.ndarray:
  """float64 [S, A, S]: P(s'|s,a) = (1 - noise) D(s'|s,a) + noise/|A| sum_a' D(s'|s,a')."""
  nxt = deterministic_next(layout)
  num_states = nxt.shape[0]
  det = np.zeros((num_states, NUM_ACTIONS, num_states))
  det[np.arange(num_states)[:, None], np.arange(NUM_ACTIONS)[None, :], nxt] = 1.0
  return (1.0 - noise) * det + noise * det.mean(axis=1, keepdims=True)


def reward_vector(layout: Layout) -> np.ndarray:
  """float64 [S]: r(s) = max(0, 1 - manhattan(s, goal) / manhattan(start, goal))."""
  gx, gy = layout.goal
  sx, sy = layout.start
  denom = abs(sx - gx) + abs(sy - gy)
  r = np.zeros(layout.width * layout.height)
  for y in range(layout.height):
    for x in range(layout.width):
      r[x + layout.width * y] = max(0.0, 1.0 - (abs(x - gx) + abs(y - gy)) / denom)
  return r


def make_features(kind: FeatureType, layout: Layout, transitions: np.ndarray, seed: int,
                  dim: int = 16, smoothing_sweeps: int = 10) -> np.ndarray:
  """float32 [S, d] input features of every state (spec section 2)."""
  kind = FeatureType(kind)
  num_states = layout.width * layout.height
  if kind == FeatureType.SMOOTH:
    # np.random.seed(seed) then randn, as Fu's LocalObsWrapper (RandomState(seed) draws
    # the same stream as the seeded global generator).
    x = np.random.RandomState(seed).randn(num_states, dim).astype(np.float32)
    walk = transitions.mean(axis=1)  # [S, S]; wall rows are the identity
    for _ in range(smoothing_sweeps):
      for s in range(num_states):  # Gauss-Seidel: in place, row by row
        x[s] = walk[s] @ x
    return x.astype(np.float32)
  if kind == FeatureType.RANDOM:
    return np.random.RandomState(seed).uniform(-1, 1, (num_states, dim)).astype(np.float32)
  if kind == FeatureType.TWO_HOT:
    x = np.zeros((num_states, layout.width + layout.height), np.float32)
    for s in range(num_states):
      x[s, s % layout.width] = 1.0
      x[s, layout.width + s // layout.width] = 1.0
    return x
  return np.eye(num_states, dtype=np.float32)


@gin.configurable
class GridworldEnv:
  """The gridworld MDP as numpy arrays, with its exact solutions (float64).

  Args:
    seed: layout and feature seed (IUP: 0, Fu's suite seed).
    width, height: grid size (16 x 16).
    wall_fraction: floor(wall_fraction * |S|) walls (the paper's "probability 0.2").
    goal_candidate_fraction: fraction of cells sampled as goal candidates (0.25).
    transition_noise: probability of replacing the action by a uniform one (0.05).
    gamma: discount (0.95).
    horizon: episode length for returns (50).
    temperature: soft-Q / Boltzmann temperature alpha (0.1); 0 = hard max, greedy.
    features: "smooth" (IUP's grid16smoothobs), "random", "two_hot", "one_hot".
    feature_dim: d of smooth/random features. [ASSUMED] 16 (Fu's grid16randomobs).
    smoothing_sweeps: Gauss-Seidel sweeps of the smooth features (10).

  Attributes (numpy): transitions [S, A, S], rewards [S], features [S, d] float32,
    walls bool [S], start_state, goal_state, q_star [S, A] (soft value iteration),
    return_expert / return_random (exact 50-step returns of softmax(Q*/alpha) and of the
    uniform policy).
  """

  def __init__(self, seed: int = 0, width: int = 16, height: int = 16,
               wall_fraction: float = 0.2, goal_candidate_fraction: float = 0.25,
               transition_noise: float = 0.05, gamma: float = 0.95, horizon: int = 50,
               temperature: float = 0.1, features: str = "smooth", feature_dim: int = 16,
               smoothing_sweeps: int = 10):
    if width < 2 or height < 2:
      raise ValueError(f"`GridworldEnv.width` and `GridworldEnv.height` must be >= 2, "
                       f"got {width} x {height}.")
    if not 0.0 <= wall_fraction < 1.0:
      raise ValueError(f"`GridworldEnv.wall_fraction` must be in [0, 1), got {wall_fraction}.")
    if not 0.0 < goal_candidate_fraction <= 1.0 or int(
        width * height * goal_candidate_fraction) < 1:
      raise ValueError("`GridworldEnv.goal_candidate_fraction` must select at least one "
                       f"cell, got {goal_candidate_fraction}.")
    free = width * height - 1 - int(width * height * wall_fraction)
    if int(width * height * goal_candidate_fraction) > free:
      raise ValueError(
          f"`GridworldEnv.wall_fraction` = {wall_fraction} leaves {free} free cells, fewer "
          f"than the {int(width * height * goal_candidate_fraction)} goal candidates of "
          "`GridworldEnv.goal_candidate_fraction`; lower one of them.")
    if not 0.0 <= transition_noise <= 1.0:
      raise ValueError(f"`GridworldEnv.transition_noise` must be in [0, 1], got "
                       f"{transition_noise}.")
    if not 0.0 <= gamma < 1.0:
      raise ValueError(f"`GridworldEnv.gamma` must be in [0, 1), got {gamma}.")
    if horizon < 1:
      raise ValueError(f"`GridworldEnv.horizon` must be >= 1, got {horizon}.")
    if temperature < 0:
      raise ValueError(f"`GridworldEnv.temperature` must be >= 0, got {temperature}.")
    try:
      features = FeatureType(features)
    except ValueError:
      raise ValueError(f"`GridworldEnv.features` must be one of "
                       f"{[f.value for f in FeatureType]}, got {features!r}.") from None
    if features in (FeatureType.SMOOTH, FeatureType.RANDOM) and feature_dim < 1:
      raise ValueError(f"`GridworldEnv.feature_dim` must be >= 1, got {feature_dim}.")

    self.layout, self.wall_order = generate_layout(seed, width, height, wall_fraction,
                                                   goal_candidate_fraction)
    reach = reachable_from(self.layout)
    if not reach[self.layout.state(self.layout.goal)]:
      raise ValueError(
          f"`GridworldEnv.wall_fraction` = {wall_fraction} with `GridworldEnv.seed` = {seed} "
          f"encloses the start {self.layout.start}: the goal {self.layout.goal} cannot be "
          "reached. Lower the wall fraction or pick another seed.")
    self.seed = seed
    self.gamma = gamma
    self.horizon = horizon
    self.temperature = temperature
    self.feature_type = features
    self.num_states = width * height
    self.num_actions = NUM_ACTIONS
    self.walls = self.layout.wall_mask()
    self.reachable = reach
    self.start_state = self.layout.state(self.layout.start)
    self.goal_state = self.layout.state(self.layout.goal)
    self.transitions = transition_matrix(self.layout, transition_noise)
    self.rewards = reward_vector(self.layout)
    self.features = make_features(features, self.layout, self.transitions, seed,
                                  feature_dim, smoothing_sweeps)
    self.q_star, self.value_iterations = tabular.value_iteration(
        self.transitions, self.rewards, gamma, temperature)
    self.return_expert = tabular.expected_return(
        self.transitions, self.rewards, tabular.boltzmann_policy(self.q_star, temperature),
        self.start_state, horizon)
    self.return_random = tabular.expected_return(
        self.transitions, self.rewards, tabular.uniform_policy(self.num_states, NUM_ACTIONS),
        self.start_state, horizon)

  def describe(self) -> str:
    return (f"gridworld {self.layout.width}x{self.layout.height} seed {self.seed}: "
            f"{len(self.layout.walls)} walls, start {self.layout.start}, goal "
            f"{self.layout.goal}, features {self.feature_type.value} "
            f"{self.features.shape[1]}-dim, Q* in [{self.q_star.min():.3f}, "
            f"{self.q_star.max():.3f}], expert return {self.return_expert:.2f}, random "
            f"{self.return_random:.2f}")

r"""ale-py's C++ vector env against the Python Atari env: pixels, returns and speed.

  python benchmarks/vector_env_pixels.py [--smoke]

Compares `atari_vector.AtariVectorEnvironments` (ale-py's `AtariVectorEnv`) with
`atari.AtariEnvironment` (Dopamine's preprocessing on `ALEInterface`, `cv2.INTER_AREA`
in Python), printing three things:

  1. pixels   Pong and Breakout with sticky actions off, one fixed random action
              sequence played in both (both are then deterministic). Every step's
              reward, terminal and truncated flag must agree (the emulators play the
              same game, frame for frame); the printout is the per-pixel absolute
              difference of the 84x84 frames (mean, max, fraction of pixels that
              differ). After a terminal the Python env is reset by hand, as the vector
              env resets itself ("SameStep" autoreset), so both frames are the next
              episode's first.
  2. returns  A fixed deterministic policy of the frames (a hand-written Pong tracker
              that moves its paddle toward the ball's row, read from resized pixel
              values; epsilon-greedy with a per-episode random stream) for a number of
              Pong episodes with sticky actions 0.25, truncated at --max_episode_steps,
              on both paths: mean return and its standard error. Episode k runs in
              AtariEnvironment(seed=s_k); in the vector env once with ALE seed
              `ale_seed(s_k)` (the ALE random_seed the Python env derives from s_k, so
              both draw the same sticky actions and, if the frames agree, play the
              same episode), and once with seed s_k itself (independent sticky
              actions: how the class is used). The seeds s_k are the first ints whose
              `ale_seed` is non-negative (the vector env takes seeds in [0, 2**31)).
  3. speed    Agent steps per second with random actions: the vector env alone with
              N = 1, 4, 8 environments (C++ threads: min(N, hardware threads), and
              N = 8 on one thread) and the Python env with one environment, in the
              same run (--smoke: N = 1, 2).
"""
import argparse
import math
import os
import time

import numpy as np

from batch_rl.environments.atari import AtariEnvironment, ale_seed
from batch_rl.environments.atari_vector import AtariVectorEnvironments

# Where the Pong tracker looks in an 84x84 frame, and the grays it tells apart.
PLAYFIELD_ROWS = slice(14, 77)  # between the top and bottom walls
PADDLE_COLUMNS = slice(73, 76)  # the agent's (right) paddle
PADDLE_GRAY = (120, 155)  # exclusive bounds of a resized paddle pixel
BALL_GRAY = 155  # the ball (white) and its blends are brighter than this


def compare_pixels(game: str, num_steps: int, seed: int) -> dict:
  """Plays one random action sequence in both envs (no sticky actions); frame diffs.

  Raises:
    AssertionError: rewards or episode ends differ at some step.
  """
  python_env = AtariEnvironment(game, seed=0, sticky_action_prob=0.0)
  vector_env = AtariVectorEnvironments(game, [0], sticky_action_prob=0.0)
  actions = np.random.default_rng(seed).integers(python_env.num_actions, size=num_steps)
  diffs = [np.abs(python_env.reset().astype(np.int16) - vector_env.reset()[0])]
  returns = [0.0, 0.0]
  episodes = 0
  for step, action in enumerate(actions):
    frame, reward, terminal, truncated = python_env.step(action)
    frames, rewards, terminals, truncateds = vector_env.step(np.array([action]))
    got = (rewards[0], terminals[0], truncateds[0])
    assert (reward, terminal, truncated) == got, (game, step, (reward, terminal, truncated), got)
    returns[0] += reward
    returns[1] += rewards[0]
    if terminal or truncated:
      episodes += 1
      frame = python_env.reset()
    diffs.append(np.abs(frame.astype(np.int16) - frames[0]))
  vector_env.close()
  diffs = np.stack(diffs)
  return {"game": game, "steps": num_steps, "episodes_ended": episodes,
          "return_python": returns[0], "return_vector": returns[1],
          "mean_abs_diff": float(diffs.mean()), "max_abs_diff": int(diffs.max()),
          "frac_pixels_differ": float((diffs > 0).mean()),
          "frac_frames_differ": float((diffs.reshape(len(diffs), -1) > 0).any(1).mean())}


def tracker_action(frame: np.ndarray, up: int, down: int) -> int:
  """Pong's paddle toward the ball: `up`, `down` or 0 (NOOP) from one 84x84 frame.

  The ball is what is brighter than the paddles (gray 147-148) in the playfield, the
  agent's paddle what has a paddle's gray in its three columns; the paddle moves when
  the ball's mean row is over 2 rows from its own. The thresholds read resized pixel
  values, so the policy is sensitive to how the frame was resized.
  """
  field = frame[PLAYFIELD_ROWS].astype(np.int16)
  ball_rows = np.nonzero(field > BALL_GRAY)[0]
  paddle = field[:, PADDLE_COLUMNS]
  paddle_rows = np.nonzero((paddle > PADDLE_GRAY[0]) & (paddle < PADDLE_GRAY[1]))[0]
  if not len(ball_rows) or not len(paddle_rows):
    return 0
  offset = ball_rows.mean() - paddle_rows.mean()
  if offset < -2:
    return up
  if offset > 2:
    return down
  return 0


def policy_actions(frames, rngs, epsilon, up, down, num_actions) -> np.ndarray:
  """int [B]: the tracker's action per frame [B, 84, 84], uniform with prob. epsilon.

  Row b draws from its own `rngs[b]`, so an episode's choices depend only on its
  frames and its stream, whichever path or batch it is played in.
  """
  actions = np.array([tracker_action(frame, up, down) for frame in frames])
  for b, rng in enumerate(rngs):
    if rng.random() < epsilon:
      actions[b] = rng.integers(num_actions)
  return actions


def pong_moves(env) -> tuple:
  """(up, down, num_actions): Pong's RIGHT moves the paddle up, LEFT down."""
  names = [action.name for action in env.action_set]
  return names.index("RIGHT"), names.index("LEFT"), env.num_actions


def episode_seeds(count: int) -> list:
  """The first `count` non-negative ints whose `ale_seed` is non-negative."""
  seeds = []
  candidate = 0
  while len(seeds) < count:
    if ale_seed(candidate) >= 0:
      seeds.append(candidate)
    candidate += 1
  return seeds


def python_returns(seeds, max_episode_steps, epsilon) -> tuple:
  """One Pong episode per seed in AtariEnvironment(seed=s): (returns, agent steps)."""
  returns = []
  steps = 0
  for seed in seeds:
    env = AtariEnvironment("Pong", seed=seed, max_episode_steps=max_episode_steps)
    moves = pong_moves(env)
    rngs = [np.random.default_rng(seed)]
    frame = env.reset()
    total = 0.0
    done = False
    while not done:
      action = policy_actions(frame[None], rngs, epsilon, *moves)[0]
      frame, reward, terminal, truncated = env.step(action)
      total += reward
      steps += 1
      done = terminal or truncated
    returns.append(total)
  return returns, steps


def vector_returns(env_seeds, stream_seeds, max_episode_steps, epsilon) -> tuple:
  """One Pong episode per environment, all in lockstep: (returns, agent steps counted).

  Environment i is seeded with env_seeds[i] and draws its epsilon from
  stream_seeds[i]; an environment whose episode has ended keeps stepping (lockstep)
  but is no longer counted.
  """
  env = AtariVectorEnvironments("Pong", env_seeds, max_episode_steps=max_episode_steps)
  moves = pong_moves(env)
  rngs = [np.random.default_rng(seed) for seed in stream_seeds]
  frames = env.reset()
  totals = np.zeros(env.num_envs)
  running = np.ones(env.num_envs, bool)
  steps = 0
  while running.any():
    actions = policy_actions(frames, rngs, epsilon, *moves)
    frames, rewards, terminals, truncated = env.step(actions)
    totals += np.where(running, rewards, 0.0)
    steps += int(running.sum())
    running &= ~(terminals | truncated)
  env.close()
  return totals.tolist(), steps


def mean_and_error(values) -> tuple:
  """(mean, standard error of the mean) of a list of floats."""
  values = np.asarray(values, np.float64)
  error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
  return float(values.mean()), float(error)


def compare_returns(num_episodes, max_episode_steps, epsilon) -> None:
  """Prints each path's mean Pong return (and its standard error) under the tracker."""
  seeds = episode_seeds(num_episodes)
  ale_seeds = [ale_seed(s) for s in seeds]
  runs = {}
  start = time.perf_counter()
  runs["python AtariEnvironment(seed=s_k)"] = python_returns(
      seeds, max_episode_steps, epsilon)
  runs["vector seeds ale_seed(s_k) (paired)"] = vector_returns(
      ale_seeds, seeds, max_episode_steps, epsilon)
  runs["vector seeds s_k (independent)"] = vector_returns(
      seeds, seeds, max_episode_steps, epsilon)
  seconds = time.perf_counter() - start
  print(f"\n## returns: Pong, {num_episodes} episodes, sticky 0.25, max_episode_steps "
        f"{max_episode_steps}, ball-tracking policy, epsilon {epsilon} ({seconds:.1f} s)")
  for name, (returns, steps) in runs.items():
    mean, error = mean_and_error(returns)
    print(f"  {name:36s} mean {mean:7.2f} +- {error:5.2f} (s.e.)  steps {steps:6d}  "
          f"returns {[round(r) for r in returns]}")
  python = runs["python AtariEnvironment(seed=s_k)"][0]
  paired = runs["vector seeds ale_seed(s_k) (paired)"][0]
  same = sum(a == b for a, b in zip(python, paired))
  print(f"  paired episodes with identical returns: {same} / {len(python)}")


def python_rate(game: str, num_steps: int, seed: int) -> float:
  """Agent steps per second of one AtariEnvironment with random actions."""
  env = AtariEnvironment(game, seed=seed)
  actions = np.random.default_rng(seed).integers(env.num_actions, size=num_steps)
  env.reset()
  start = time.perf_counter()
  for action in actions:
    _, _, terminal, truncated = env.step(action)
    if terminal or truncated:
      env.reset()
  return num_steps / (time.perf_counter() - start)


def vector_rate(game: str, num_envs: int, num_threads: int, num_steps: int,
                seed: int) -> float:
  """Agent steps per second (all environments) of the vector env with random actions."""
  env = AtariVectorEnvironments(game, list(range(seed, seed + num_envs)),
                                num_threads=num_threads)
  rng = np.random.default_rng(seed)
  actions = rng.integers(env.num_actions, size=(num_steps, num_envs))
  env.reset()
  start = time.perf_counter()
  for row in actions:
    env.step(row)
  seconds = time.perf_counter() - start
  env.close()
  return num_steps * num_envs / seconds


def compare_speed(game: str, num_steps: int, settings, seed: int) -> None:
  """Prints steps/s of the Python env (N=1) and of the vector env.

  Args:
    settings: (num_envs, num_threads) pairs of the vector env to time.
  """
  print(f"\n## speed: {game}, random actions, {num_steps} lockstep steps per setting, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
  print(f"  python AtariEnvironment  N=1  {python_rate(game, num_steps, seed):8.0f} steps/s")
  for num_envs, num_threads in settings:
    rate = vector_rate(game, num_envs, num_threads, num_steps, seed)
    threads = min(num_envs, os.cpu_count()) if num_threads == 0 else num_threads
    print(f"  vector AtariVectorEnv    N={num_envs}  {rate:8.0f} steps/s  "
          f"({threads} C++ threads)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
  parser.add_argument("--pixel_steps", type=int, default=3000)
  parser.add_argument("--episodes", type=int, default=10)
  parser.add_argument("--max_episode_steps", type=int, default=1000)
  parser.add_argument("--epsilon", type=float, default=0.001)
  parser.add_argument("--speed_steps", type=int, default=3000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.smoke:
    args.pixel_steps = 60
    args.episodes = 2
    args.max_episode_steps = 30
    args.speed_steps = 60
  print(f"## pixels: sticky 0, {args.pixel_steps} steps of random actions (seed {args.seed})")
  for game in ("Pong", "Breakout"):
    result = compare_pixels(game, args.pixel_steps, args.seed)
    print("  " + "  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in result.items()))
  compare_returns(args.episodes, args.max_episode_steps, args.epsilon)
  settings = ((1, 0), (2, 0)) if args.smoke else ((1, 0), (4, 0), (8, 0), (8, 1))
  compare_speed("Pong", args.speed_steps, settings, args.seed)


if __name__ == "__main__":
  main()

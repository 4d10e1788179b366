"""Records transitions the way the DQN Replay dataset was recorded, and writes its shards.

The dataset was made by an online agent whose Dopamine `OutOfGraphReplayBuffer` was
saved every 1M adds, so each checkpoint holds 1M new transitions in a full, wrapped
circular buffer. This logger keeps the same circular buffer in numpy and follows
`OutOfGraphReplayBuffer.add` exactly: entry t is (frame o_t seen before acting, action
a_t, reward r_t clipped to [-1, 1] as Dopamine's Runner did, terminal after a_t), and
before the first entry and after every terminal it adds stack_size - 1 all-zero
entries, so episode-initial states are zero-padded stacks. A shard is written (suffix
0, 1, ...) each time `capacity` more entries have been added.
"""
import numpy as np

from batch_rl.datasets import dqn_replay_format as fmt


class ReplayLogger:
  """Circular buffer with Dopamine's add() semantics, saved every `capacity` adds.

  Args:
    replay_dir: the replay_logs directory to write shards into.
    frame_shape: shape of one frame ((84, 84) for Atari, (10, 10, C) for MinAtar, (4,)
      for gym:CartPole-v1).
    capacity: entries per shard (1,000,000 in the public dataset).
    stack_size: frames per state (zero entries added at episode starts: stack_size - 1).
    clip_rewards: store rewards clipped to [-1, 1], as the DQN Replay dataset does.
    observation_dtype: uint8 frames (the default) or float32 vector observations (the
      environment's `observation_spec.dtype`).
    action_shape, action_dtype: one action (the environment's `action_spec`): () int32
      for discrete actions (the default), (d,) float32 for continuous ones.
  """

  def __init__(self, replay_dir: str, frame_shape, capacity: int, stack_size: int = 4,
               clip_rewards: bool = True, observation_dtype=np.uint8,
               action_shape: tuple[int, ...] = (), action_dtype=np.int32):
    self.replay_dir = replay_dir
    self.capacity = capacity
    self.stack_size = stack_size
    self.clip_rewards = clip_rewards
    self.observation = np.zeros((capacity,) + tuple(frame_shape), observation_dtype)
    self.action = np.zeros((capacity,) + tuple(action_shape), action_dtype)
    self.reward = np.zeros(capacity, np.float32)
    self.terminal = np.zeros(capacity, np.uint8)
    self.add_count = 0
    self.suffixes_written: list[int] = []

  def _put(self, frame, action, reward, terminal) -> None:
    cursor = self.add_count % self.capacity
    self.observation[cursor] = frame
    self.action[cursor] = action
    self.reward[cursor] = reward
    self.terminal[cursor] = terminal
    self.add_count += 1
    if self.add_count % self.capacity == 0:
      suffix = self.add_count // self.capacity - 1
      fmt.write_shard(self.replay_dir, suffix, observation=self.observation,
                      action=self.action, reward=self.reward, terminal=self.terminal,
                      add_count=self.add_count, stack_size=self.stack_size,
                      observation_dtype=self.observation.dtype,
                      action_shape=self.action.shape[1:], action_dtype=self.action.dtype)
      self.suffixes_written.append(suffix)

  def add(self, frame: np.ndarray, action, reward: float, terminal: bool) -> None:
    """Adds (o_t, a_t, r_t, terminal_t), zero-padding first at an episode start."""
    last = (self.add_count - 1) % self.capacity
    if self.add_count == 0 or self.terminal[last] == 1:
      for _ in range(self.stack_size - 1):
        self._put(0, 0, 0.0, False)
    if self.clip_rewards:
      reward = float(np.clip(reward, -1.0, 1.0))
    self._put(frame, action, reward, terminal)

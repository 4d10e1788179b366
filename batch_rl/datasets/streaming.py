"""Streaming fixed replay: a device window of the dataset, refilled by a host thread.

For datasets larger than device memory (or than RAM), the jitted training loop samples
from a *window*: `num_slots` slots of `chunk_transitions` sampleable transitions each,
held on the device in the usual `sampler.ReplayArrays` layout (one slot = one "shard"
of the sampler), so the existing sampler and train step run unchanged and nothing
recompiles (every shape is static). A background thread reads the next chunks from the
memory-mapped store (frames stay on disk / in the page cache until read), copies them
into fresh host buffers and `jax.device_put`s them while training runs; between two
train calls the Runner swaps one slot every `refresh_every` gradient steps (the slots
are replaced in ring order). The swap only blocks if the prefetch is behind: each such
stall is counted (`stalls`, TensorBoard `Data/StreamStalls`) and logged.

Chunks. The dataset's sampleable transitions (the `valid` indices `load_fixed_replay`
chose: every checkpoint, subsample and validity rule applied, in storage order) are cut
into consecutive blocks of `chunk_transitions`; the last block is completed by wrapping
around to the first transitions (so at most `chunk_transitions - 1` transitions occur
twice per epoch). A chunk is therefore a contiguous stretch of a checkpoint (or of two
adjacent ones). Its slot holds the chunk's states *and* every frame their stacks,
n-step trajectories and next states read, copied in storage order as merged runs
[i - stack_size + 1, i + update_horizon] (the same idea as `batch_rl.data subsample`):
a state at a chunk edge keeps its exact 4-frame stack and next state, validity is the
one decided on the whole checkpoint (fixed_replay.valid_indices), and no state is lost
at chunk edges. The slot length P is the longest chunk's run length (static); for
dense data it is chunk_transitions + stack_size - 1 + update_horizon plus a few frames
per gap, for a sparse subsample up to chunk_transitions * (stack_size + update_horizon).

Order. Epoch e visits all chunks once, in the permutation
`np.random.default_rng([seed, 7, e]).permutation(num_chunks)`: chunk stream position p
is chunk perm_{p // N}[p % N]. The window at gradient step t holds stream positions
r .. r + S - 1 with r = t // refresh_every (position p in slot p % S), so the stream is
a deterministic function of (seed, step) and a resumed run sees the same windows.

How sampling differs from uniform over the dataset.
  * At any moment the sampler draws uniformly (with replacement) from the S * L
    transitions in the window: the same rule as the loaded dataset, on a subset.
  * Over time each chunk, once it enters, stays for exactly S * refresh_every steps,
    so over E full epochs every transition is in the window for E * S *
    refresh_every steps and its marginal probability of being drawn is uniform,
    except for edge effects: the first S chunks of the run (already in the initial
    window) stay 1..S refreshes, the chunks of an unfinished epoch have not had
    their turn, a chunk that ends epoch e and starts e + 1 can be in the window
    twice (double weight for up to S refreshes), and the wrap-around padding of the
    last chunk (above) doubles at most L - 1 transitions per epoch. The relative
    error of the marginal after E epochs is O(S / (E * N)) for N chunks.
  * Minibatches are not independent across time at the chunk scale: consecutive
    minibatches share S - 1 of S chunks, and a transition is only drawable during its
    residence window. Within a minibatch, draws are i.i.d. from the window.
  * Window size trades memory for mixing: a larger window (S * L) means each
    minibatch comes from a larger, more varied part of the dataset (closer to i.i.d.
    sampling of the whole, which is the limit S * L = dataset), at the cost of device
    memory (S * P frames) and of a longer start-up (S chunks are read before step 0).
    More slots of smaller chunks (larger S at fixed S * L) mix finer (more distinct
    stretches of the data per window) but read more, smaller pieces. With a fixed
    refresh_every, the stream's data rate is L transitions per refresh_every steps;
    refreshing faster than the disk delivers shows up as stalls.
  * Diagnostics (srank etc.) are computed on a batch from the current window, not
    from the whole dataset.
"""
import dataclasses
import functools
import logging
import os
import queue
import threading
import time
from typing import Optional

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batch_rl import host_arrays
from batch_rl.datasets import fixed_replay
from batch_rl.datasets import store as store_lib
from batch_rl.replay import sampler

log = logging.getLogger("batch_rl")

CONVERT_HINT = ("Streaming reads frames from a memory-mapped store: bind "
                "`load_fixed_replay.store_dir`, after converting the data once with "
                "`python -m batch_rl.data convert REPLAY_DIR STORE`.")


@dataclasses.dataclass(frozen=True)
class HostChunk:
  """One chunk read on the host: a slot's worth of arrays, plus where it came from.

  Attributes:
    position: stream position (entry number) of this chunk.
    chunk_id: which chunk of the dataset (0 .. num_chunks - 1).
    arrays: ReplayArrays for one slot: observation [P, *frame], action / reward /
      terminal / return_to_go [P], valid [L] (slot-local positions of the states).
    source: int64 [L], the dataset flat index (FixedReplay's shard * C + i) of each
      state in `arrays.valid`, in the same order.
  """

  position: int
  chunk_id: int
  arrays: sampler.ReplayArrays
  source: np.ndarray


def _layout(shard: np.ndarray, index: np.ndarray, stack_size: int, update_horizon: int):
  """Frames each state adds to the merged runs (c) and each state's local position.

  A state i needs frames i - S + 1 .. i + n. It starts a new run (S + n frames) unless
  it follows the previous state in the same checkpoint closely enough to extend that
  run by i - i_prev frames.
  """
  span = stack_size + update_horizon
  new = np.ones(index.shape, bool)
  step = np.diff(index)
  new[1:] = (shard[1:] != shard[:-1]) | (step > span) | (step <= 0)
  frames = np.where(new, span, np.concatenate([[span], step])).astype(np.int64)
  return new, frames


@gin.configurable(denylist=["replay", "window_transitions", "seed", "default_refresh_every"])
class StreamingReplay:
  """A device window over a FixedReplay whose frames stay in the store.

  Args:
    replay: the loaded data (`load_fixed_replay(..., stream=True)`: frames not loaded,
      read from the store it names; or any FixedReplay with frames).
    window_transitions: sampleable transitions held on the device (rounded down to a
      multiple of num_slots).
    seed: seed of the chunk order.
    num_slots: S, chunks in the window (one is replaced per refresh).
    refresh_every: gradient steps between slot replacements; None = the Runner's
      steps per train call. Refreshes happen between train calls.
    prefetch: chunks read ahead (host and device memory: this many extra slots).
    default_refresh_every: refresh_every when not bound (the Runner passes its
      fused_steps).
  """

  def __init__(self, replay: fixed_replay.FixedReplay, window_transitions: int, *,
               seed: int = 0, num_slots: int = 8, refresh_every: Optional[int] = None,
               prefetch: int = 2, default_refresh_every: int = 1):
    if replay.arrays.observation is None and not store_lib.is_store(replay.replay_dir):
      raise ValueError(f"{replay.replay_dir} is not a converted store. {CONVERT_HINT}")
    refresh_every = default_refresh_every if refresh_every is None else refresh_every
    for name, value in (("num_slots", num_slots), ("refresh_every", refresh_every),
                        ("prefetch", prefetch)):
      if value < 1:
        raise ValueError(f"`StreamingReplay.{name}` must be >= 1, got {value}.")
    total = replay.num_transitions
    if window_transitions > total:
      raise ValueError(
          f"The streaming window ({window_transitions:,} transitions, "
          "`FixedReplayRunner.stream_window_transitions`) is larger than the dataset "
          f"({total:,} valid transitions of {replay.replay_dir}): load it whole (leave "
          "`stream_window_transitions` unset) or bind a smaller window.")
    if window_transitions < num_slots:
      raise ValueError(
          f"The streaming window ({window_transitions} transitions) must hold at least "
          f"one transition per slot (`StreamingReplay.num_slots` = {num_slots}).")
    self.replay = replay
    self.seed = seed
    self.num_slots = num_slots
    self.refresh_every = refresh_every
    self.prefetch = prefetch
    self.stack_size, self.update_horizon = replay.stack_size, replay.update_horizon
    self.chunk_transitions = window_transitions // num_slots
    self.window_transitions = self.chunk_transitions * num_slots
    self.num_chunks = -(-total // self.chunk_transitions)
    self._valid = np.asarray(replay.arrays.valid).astype(np.int64)
    self._action = np.asarray(replay.arrays.action)
    self._reward = np.asarray(replay.arrays.reward)
    self._terminal = np.asarray(replay.arrays.terminal)
    self._return_to_go = (None if replay.arrays.return_to_go is None
                          else np.asarray(replay.arrays.return_to_go))
    self.capacity = self._action.shape[1]
    self._file = None
    if replay.arrays.observation is not None:
      self._frames = [replay.arrays.observation[k] for k in range(self._action.shape[0])]
    else:
      # Chunks are read with pread from the store's file, not through the map: the pages
      # stay in the (shared, reclaimable) page cache without counting in this process's
      # RSS, which would otherwise grow to the whole dataset over an epoch.
      opened = store_lib.open_store(replay.replay_dir)
      self._frames = [opened.observation[opened.slot(s)] for s in replay.suffixes]
      self._frame_bytes = int(np.prod(opened.frame_shape))
      self._file = os.open(opened.observation.filename, os.O_RDONLY)
      self._file_base = [opened.observation.offset + opened.slot(s) * opened.capacity *
                         self._frame_bytes for s in replay.suffixes]
    # The static slot length: the longest chunk's merged runs.
    ext = np.take(self._valid, np.arange(self.num_chunks * self.chunk_transitions),
                  mode="wrap")
    shard, index = np.divmod(ext, self.capacity)
    new, frames = _layout(shard, index, self.stack_size, self.update_horizon)
    frames[::self.chunk_transitions] = self.stack_size + self.update_horizon
    self.slot_capacity = int(frames.reshape(self.num_chunks, -1).sum(axis=1).max())
    self._permutations: dict[int, np.ndarray] = {}
    self._thread = self._stop = self._queue = None
    self.window: Optional[sampler.ReplayArrays] = None
    self.slot_source = np.full((num_slots, self.slot_capacity), -1, np.int64)
    self.slot_chunk = np.full(num_slots, -1, np.int64)
    self.entered: list[tuple[int, int, int]] = []  # (step, slot, chunk_id) since start()
    self.refreshes = self.stalls = 0
    self.stall_seconds = 0.0
    self._step = self._position = 0
    self._reported_stalls = 0

  # ------------------------------------------------------------------ chunks
  def chunk_id(self, position: int) -> int:
    """The chunk at stream position `position` (epoch-wise seeded permutations)."""
    epoch, k = divmod(position, self.num_chunks)
    if epoch not in self._permutations:
      if len(self._permutations) > 4:
        self._permutations.pop(min(self._permutations))
      self._permutations[epoch] = np.random.default_rng(
          [self.seed, 7, epoch]).permutation(self.num_chunks)
    return int(self._permutations[epoch][k])

  def chunk_elements(self, chunk_id: int) -> np.ndarray:
    """Dataset flat indices of the chunk's states, int64 [L] (the last one wraps)."""
    start = chunk_id * self.chunk_transitions
    return np.take(self._valid, np.arange(start, start + self.chunk_transitions), mode="wrap")

  def read_chunk(self, position: int, chunk_id: Optional[int] = None) -> HostChunk:
    """Reads stream position `position` from the store into fresh host arrays."""
    chunk_id = self.chunk_id(position) if chunk_id is None else chunk_id
    source = self.chunk_elements(chunk_id)
    shard, index = np.divmod(source, self.capacity)
    n, span = self.update_horizon, self.stack_size + self.update_horizon
    _, frames = _layout(shard, index, self.stack_size, n)
    frames[0] = span
    ends = np.cumsum(frames)
    total = int(ends[-1])
    local = ends - n - 1
    # Storage positions of the merged runs: state j adds index_j + n - c_j + 1 .. index_j + n.
    within = np.arange(total) - np.repeat(ends - frames, frames)
    positions = (np.repeat(index + n - frames + 1, frames) + within) % self.capacity
    shards = np.repeat(shard, frames)
    length = self.slot_capacity
    observation = host_arrays.aligned_empty((length,) + self._frames[0].shape[1:], np.uint8)
    observation[total:] = 0
    cuts = np.flatnonzero((np.diff(shards) != 0) | (np.diff(positions) != 1)) + 1
    for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [total]])):
      k, first = int(shards[a]), int(positions[a])
      if self._file is None:
        observation[a:b] = self._frames[k][first:first + (b - a)]
      else:  # a contiguous read of the store file
        view = memoryview(observation[a:b]).cast("B")
        offset, done = self._file_base[k] + first * self._frame_bytes, 0
        while done < len(view):
          got = os.preadv(self._file, [view[done:]], offset + done)
          if got <= 0:
            raise OSError(f"Store file ended {len(view) - done} bytes early.")
          done += got

    def gather(array, dtype):
      out = np.zeros(length, dtype)
      out[:total] = array[shards, positions]
      return out

    arrays = sampler.ReplayArrays(
        observation=observation, action=gather(self._action, np.int32),
        reward=gather(self._reward, np.float32), terminal=gather(self._terminal, np.uint8),
        valid=local.astype(np.int32),
        return_to_go=(None if self._return_to_go is None
                      else gather(self._return_to_go, np.float32)))
    return HostChunk(position=position, chunk_id=chunk_id, arrays=arrays, source=source)

  # ------------------------------------------------------------------ window
  def _install(self, slot: int, chunk: HostChunk, device_arrays) -> None:
    self.window = _replace_slot(self.window, jnp.int32(slot), device_arrays)
    self.slot_source[slot] = -1
    self.slot_source[slot, chunk.arrays.valid] = chunk.source
    self.slot_chunk[slot] = chunk.chunk_id
    self.entered.append((self._step, slot, chunk.chunk_id))

  def start(self, step: int = 0) -> sampler.ReplayArrays:
    """Builds the window the stream holds at gradient step `step`; starts prefetching."""
    self.close()
    s, p, frame_shape = self.num_slots, self.slot_capacity, self._frames[0].shape[1:]
    self._step = step
    self.entered = []
    first = step // self.refresh_every
    self.window = sampler.ReplayArrays(
        observation=jnp.zeros((s, p) + frame_shape, jnp.uint8),
        action=jnp.zeros((s, p), jnp.int32), reward=jnp.zeros((s, p), jnp.float32),
        terminal=jnp.zeros((s, p), jnp.uint8),
        valid=jnp.zeros((s * self.chunk_transitions,), jnp.int32),
        return_to_go=None if self._return_to_go is None else jnp.zeros((s, p), jnp.float32))
    for position in range(first, first + s):
      chunk = self.read_chunk(position)
      self._install(position % s, chunk, jax.device_put(chunk.arrays))
    self._position = first + s
    self._stop = threading.Event()
    self._queue = queue.Queue(maxsize=self.prefetch)
    self._thread = threading.Thread(target=self._produce,
                                    args=(self._position, self._stop, self._queue),
                                    name="batch_rl-stream-prefetch", daemon=True)
    self._thread.start()
    return self.window

  def _produce(self, position: int, stop: threading.Event, out: queue.Queue) -> None:
    while not stop.is_set():
      try:
        chunk = self.read_chunk(position)
        item = (chunk, jax.block_until_ready(jax.device_put(chunk.arrays)))
      except BaseException as e:  # pylint: disable=broad-except
        item = (position, e)  # re-raised in the training thread
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if isinstance(item[1], BaseException):
        return
      position += 1

  def advance(self, num_steps: int) -> sampler.ReplayArrays:
    """The window for the next train call of `num_steps` steps (refreshed if due)."""
    if self._thread is None:  # not started, or closed by the Runner at the end of run()
      self.start(self._step)
    due = self._step // self.refresh_every + self.num_slots
    while self._position < due:
      try:
        item = self._queue.get_nowait()
      except queue.Empty:
        self.stalls += 1
        waited = time.perf_counter()
        item = self._queue.get()
        self.stall_seconds += time.perf_counter() - waited
        if self.stalls == 1 or self.stalls % 100 == 0:
          log.warning("Streaming replay stalled %d time(s) (%.1f s in all) waiting for the "
                      "prefetch: reading chunks is slower than training consumes them "
                      "(raise `StreamingReplay.refresh_every` or `prefetch`, or put the "
                      "store on a faster disk).", self.stalls, self.stall_seconds)
      chunk, device_arrays = item
      if isinstance(device_arrays, BaseException):
        raise RuntimeError(f"Streaming replay: reading stream position {chunk} failed: "
                           f"{device_arrays}") from device_arrays
      assert chunk.position == self._position, (chunk.position, self._position)
      self._install(self._position % self.num_slots, chunk, device_arrays)
      self._position += 1
      self.refreshes += 1
    self._step += num_steps
    return self.window

  def dataset_index(self, window_index) -> np.ndarray:
    """Dataset flat indices (FixedReplay's) of window flat indices (Transition.index)."""
    window_index = np.asarray(window_index)
    slot, local = np.divmod(window_index, self.slot_capacity)
    return self.slot_source[slot, local]

  def pop_stalls(self) -> int:
    """Stalls since the previous call (for the per-iteration TensorBoard scalar)."""
    new, self._reported_stalls = self.stalls - self._reported_stalls, self.stalls
    return new

  def close(self) -> None:
    """Stops the prefetch thread (the window stays usable for sampling)."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None

  def __del__(self):
    if getattr(self, "_file", None) is not None:
      os.close(self._file)

  def describe(self) -> str:
    frame_bytes = int(np.prod(self._frames[0].shape[1:]))
    return (f"streaming window of {self.num_slots} slots x {self.chunk_transitions:,} "
            f"transitions ({self.window_transitions:,} of {self.replay.num_transitions:,}; "
            f"{self.num_chunks} chunks per epoch; slot length {self.slot_capacity:,} frames, "
            f"{self.num_slots * self.slot_capacity * frame_bytes / 1e9:.2f} GB of frames on "
            f"the device), one slot replaced every {self.refresh_every} steps, "
            f"{self.prefetch} chunk(s) prefetched")


@functools.partial(jax.jit, donate_argnums=0)
def _replace_slot(window: sampler.ReplayArrays, slot, chunk: sampler.ReplayArrays):
  """The window with slot `slot` replaced by `chunk` (static shapes; donate `window`)."""
  put = functools.partial(jax.lax.dynamic_update_index_in_dim, index=slot, axis=0)
  length, per_slot = window.action.shape[1], chunk.valid.shape[0]
  return sampler.ReplayArrays(
      observation=put(window.observation, chunk.observation),
      action=put(window.action, chunk.action),
      reward=put(window.reward, chunk.reward),
      terminal=put(window.terminal, chunk.terminal),
      valid=jax.lax.dynamic_update_slice_in_dim(
          window.valid, chunk.valid + slot * length, slot * per_slot, axis=0),
      return_to_go=(None if window.return_to_go is None
                    else put(window.return_to_go, chunk.return_to_go)))

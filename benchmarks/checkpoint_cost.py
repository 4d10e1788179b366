r"""Checkpoint write time, read time and size on disk per runner.

  python benchmarks/checkpoint_cost.py                      # all rows, Atari online at 1M
  python benchmarks/checkpoint_cost.py --skip_atari_online  # the small rows only
  python benchmarks/checkpoint_cost.py --capacity 200000    # a smaller Atari online buffer
  python benchmarks/checkpoint_cost.py --atari_game SpaceInvaders  # compresses less than Pong
  python benchmarks/checkpoint_cost.py --smoke              # 2,000-entry buffers, about a minute

Builds each runner from its gin config (`config.parse_gin` + `registry.create_runner`)
and times its own checkpoint code:
  * offline MinAtar: FixedReplayRunner of gin_configs/quickstart.gin (the quickstart
    dataset; with --smoke a 2,000-entry one logged into --out_dir);
  * offline Atari: FixedReplayRunner of gin_configs/offline/dqn.gin (Nature DQN network,
    84x84x4 uint8 states), built on a small synthetic DQN Replay shard: its checkpoint
    is the agent's TrainState and holds no data;
  * online MinAtar: OnlineRunner of gin_configs/online/minatar_dqn.gin (replay
    capacity 100,000);
  * online Atari: OnlineRunner of gin_configs/online/dqn.gin (84x84 uint8 frames,
    capacity 1,000,000 = about 7 GB of frames), uncompressed and with
    `OnlineRunner.compress_checkpoints = True`.
An offline checkpoint is written with the call the runner makes after each iteration
(`checkpointing.save` of the TrainState) and read back as `run()` resumes
(`checkpointing.restore_latest` then `jax.device_put`). An online checkpoint is
written with `runner._save(iteration, state, buffer, carry)`: state and carry from
`runner._fresh_start()`, the buffer replaced by a full one whose frames, actions,
rewards and terminals were played in the environment with random actions (--frames
entries, laid out as the buffer's `add` does, tiled to the capacity; a tile is far
longer than deflate's 32 KB window, so the compression ratio is that of the played
frames). It
is read back twice: the files alone (`checkpointing.read_state_dict` + `read_arrays`),
and `runner._resume()` (the same reads, then the agent and the buffer put on the device
and the environment restored).

Prints one table: per checkpoint its content, size on disk, write seconds (the call
training waits for; the data may still be in the page cache), fsync seconds (until it
is on disk), read and resume seconds, MB/s of the file (MB = 10^6 bytes), and the
process's peak resident memory during that row. Unless --no-cold_read, every file is
fsynced and dropped from the page cache (posix_fadvise DONTNEED) before each read, so
reads come from the disk. Then the command line, the load average and the overall peak
RSS. Files are written under a fresh folder inside --out_dir (default: a temporary
folder), removed at the end.
"""
import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time

import gin
import jax
import numpy as np

from batch_rl import checkpointing
from batch_rl import config as config_lib
from batch_rl import host_arrays
from batch_rl import tf_utils
from batch_rl.datasets import dqn_replay_format as fmt
from batch_rl.environments import factory
from batch_rl.runners import registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN = os.path.join(REPO, "gin_configs")
SMOKE_CAPACITY = 2000


# ---------------------------------------------------------------- memory and files
def rss_gb() -> float:
  """Current resident size of this process, GB."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def reset_peak() -> bool:
  """Resets the kernel's resident high-water mark of this process (Linux); False if
  it cannot, when peaks are the whole process's (getrusage)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


_PEAKS = []  # every peak_gb() reading: reset_peak() also resets getrusage's maximum


def peak_gb() -> float:
  """Resident high-water mark since the last reset_peak(), GB."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          peak = int(line.split()[1]) * 1024 / 1e9
  except OSError:
    pass
  _PEAKS.append(peak)
  return peak


def files_of(directory: str) -> list[str]:
  return sorted(os.path.join(directory, name) for name in os.listdir(directory))


def size_mb(paths) -> float:
  return sum(os.path.getsize(p) for p in paths) / 1e6


def sync_files(directory: str) -> float:
  """fsyncs every file of `directory` (and the directory); seconds taken."""
  start = time.perf_counter()
  for path in files_of(directory) + [directory]:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
  return time.perf_counter() - start


def drop_from_cache(directory: str) -> None:
  """Drops this folder's (synced) files from the page cache: the next read hits disk."""
  for path in files_of(directory):
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


class Clock:
  """Wall and CPU seconds (all of this process's threads) of a `with` block."""

  def __enter__(self):
    self._start = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *exc_info):
    self.wall = time.perf_counter() - self._start[0]
    self.cpu = time.process_time() - self._start[1]


def build_runner(base_dir: str, files: list[str], bindings: list[str]):
  """registry.create_runner of `files` + `bindings`; the gin config cleared after."""
  try:
    config_lib.parse_gin(files, bindings)
    return registry.create_runner(base_dir=base_dir)
  finally:
    gin.clear_config()


def describe_agent(state) -> str:
  params = sum(int(np.size(x)) for x in jax.tree.leaves(state.params))
  total = sum(int(np.size(x)) for x in jax.tree.leaves(state))
  return (f"agent TrainState: {params / 1e6:.2f}M network params, {total / 1e6:.2f}M "
          "values (params, target params, Adam moments)")


# ---------------------------------------------------------------- a full replay buffer
def play_entries(env_name: str, frames: int, stack_size: int, clip_rewards: bool, seed=0):
  """`frames` buffer entries played with random actions, laid out as
  circular_buffer.add lays them out (stack_size - 1 zero entries before every episode,
  the episode's last step terminal), cut after the last complete episode if any."""
  env = factory.create_environment(env_name, seed=seed)
  rng = np.random.default_rng(seed)
  frame = env.reset()
  observation = np.zeros((frames,) + frame.shape, frame.dtype)
  action = np.zeros(frames, np.int32)
  reward = np.zeros(frames, np.float32)
  terminal = np.zeros(frames, np.uint8)
  index, episodes, episode_start, last_end = 0, 0, True, 0
  while index < frames:
    if episode_start:
      index += stack_size - 1  # the padding entries stay zero
      episode_start = False
      continue
    a = int(rng.integers(env.num_actions))
    next_frame, r, term, trunc = env.step(a)
    observation[index], action[index] = frame, a
    reward[index] = np.clip(r, -1.0, 1.0) if clip_rewards else r
    terminal[index] = term or trunc
    index += 1
    frame = next_frame
    if term or trunc:
      episodes += 1
      last_end, episode_start, frame = index, True, env.reset()
  end = last_end if episodes else frames
  padding = (stack_size - 1) * max(episodes, 1)  # entries of padding among the `end`
  return dict(observation=observation[:end], action=action[:end], reward=reward[:end],
              terminal=terminal[:end]), episodes, padding


def tiled(entries: np.ndarray, capacity: int, shape_dtype) -> np.ndarray:
  """A 64-byte-aligned array of `shape_dtype` ([1, capacity, ...]) filled with `entries`
  repeated; aligned so that jax.device_put on the CPU aliases it instead of copying."""
  out = host_arrays.aligned_empty(shape_dtype.shape, shape_dtype.dtype)
  period = len(entries)
  for start in range(0, capacity, period):
    stop = min(start + period, capacity)
    out[0, start:stop] = entries[:stop - start]
  return out


def full_buffer(runner, shapes, frames: int):
  """A full buffer of `shapes` (the runner's empty one, as ShapeDtypeStructs): played
  entries tiled to the capacity, add_count past the capacity."""
  capacity = shapes.action.shape[1]
  print(f"  playing {min(frames, capacity):,} entries of {runner.env_name} with random "
        "actions ...", flush=True)
  (entries, episodes, padding), seconds = timed(
      play_entries, runner.env_name, min(frames, capacity), runner.env.stack_size,
      runner.clip_rewards)
  period = len(entries["action"])
  fields = {name: jax.device_put(tiled(entries[name], capacity, getattr(shapes, name)))
            for name in ("observation", "action", "reward", "terminal")}
  pad_total = padding * capacity // period
  fields["add_count"] = jax.device_put(np.asarray(capacity + pad_total, shapes.add_count.dtype))
  note = (f"{runner.env_name}: {period:,} entries played with random actions ({episodes} "
          f"episodes, {seconds:.0f} s)" + (f", tiled {capacity / period:.1f}x to "
                                           f"{capacity:,}" if period < capacity else ""))
  print(f"  {note}", flush=True)
  return type(shapes)(**fields), note


# ---------------------------------------------------------------- rows
class Table:
  """The printed rows."""
  header = ("| runner | in the checkpoint | size MB | write s | write MB/s | fsync s | "
            "read s | read MB/s | resume s | peak RSS GB |")

  def __init__(self):
    self.rows, self.notes = [], []

  def add(self, runner, content, size, write, fsync, read, resume, peak):
    fmt_s = lambda s: "-" if s is None else f"{s:.3f}" if s < 10 else f"{s:.1f}"
    rate = lambda s: "-" if not s else f"{size / s:,.0f}"
    row = (f"| {runner} | {content} | {size:,.2f} | {fmt_s(write)} | {rate(write)} | "
           f"{fmt_s(fsync)} | {fmt_s(read)} | {rate(read)} | {fmt_s(resume)} | {peak:.2f} |")
    self.rows.append(row)
    print(f"  {row}", flush=True)

  def print(self):
    print()
    print(self.header)
    print("|" + " --- |" * (self.header.count("|") - 1))
    for row in self.rows:
      print(row)
    for note in self.notes:
      print(f"* {note}")


def offline_row(table: Table, name: str, base_dir: str, files, bindings, note: str,
                cold: bool) -> None:
  print(f"{name}: building the runner ...", flush=True)
  reset_peak()
  runner = build_runner(base_dir, files, bindings)
  state = runner._initial_state  # pylint: disable=protected-access
  # What FixedReplayRunner._run_logged_iteration writes after each iteration.
  _, write = timed(lambda: checkpointing.save(runner.checkpoint_dir, 0, state,
                                              keep=runner.keep_checkpoints))
  paths = files_of(runner.checkpoint_dir)
  fsync = sync_files(runner.checkpoint_dir)
  if cold:
    drop_from_cache(runner.checkpoint_dir)
  # What FixedReplayRunner.run reads to resume.
  restored, read = timed(lambda: jax.block_until_ready(jax.device_put(
      checkpointing.restore_latest(runner.checkpoint_dir, state)[1])))
  assert int(restored.step) == int(state.step)
  table.add(name, describe_agent(state), size_mb(paths), write, fsync, read, None, peak_gb())
  table.notes.append(f"{name}: {note}")
  del runner, state, restored
  shutil.rmtree(base_dir)


def online_rows(table: Table, name: str, root: str, files, bindings, frames: int,
                cold: bool, compressed_too: bool) -> None:
  """One row per variant (uncompressed; compressed with `compressed_too`), all written
  from one full buffer, which is dropped before anything is read back."""
  variants = [("", ["OnlineRunner.compress_checkpoints = False"])] + (
      [(", compressed", ["OnlineRunner.compress_checkpoints = True"])]
      if compressed_too else [])
  reset_peak()
  os.makedirs(root, exist_ok=True)
  runners = []
  for suffix, extra in variants:
    print(f"{name}{suffix}: building the runner ...", flush=True)
    runners.append(build_runner(os.path.join(root, f"run{len(runners)}"), files,
                                [*bindings, *extra]))
  state, empty, carry = runners[0]._fresh_start()  # pylint: disable=protected-access
  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), empty)
  del empty  # freed before the full buffer that replaces it is built
  gc.collect()
  buffer, note = full_buffer(runners[0], shapes, frames)
  table.notes.append(f"{name}: the replay buffer holds {note}.")
  nbytes = sum(a.nbytes for a in jax.tree.leaves(buffer))
  arrays = runners[0]._buffer_arrays(buffer)  # pylint: disable=protected-access
  aliased = np.shares_memory(arrays["observation"], np.asarray(buffer.observation))
  print(f"  buffer {nbytes / 1e9:.3f} GB in memory ({rss_gb():.2f} GB resident); the "
        f"arrays handed to the writer {'alias' if aliased else 'COPY'} the device buffer",
        flush=True)
  del arrays
  free = shutil.disk_usage(root).free
  if free < 1.1 * nbytes * len(variants):
    raise SystemExit(f"{free / 1e9:.1f} GB free under {root}, {len(variants)} x "
                     f"{nbytes / 1e9:.1f} GB needed: pass --out_dir on a larger disk.")
  measured = []
  for (suffix, _), runner in zip(variants, runners):
    print(f"{name}{suffix}: writing ...", flush=True)
    with Clock() as write:
      runner._save(0, state, buffer, carry)  # pylint: disable=protected-access
    fsync = sync_files(runner.checkpoint_dir)
    paths = files_of(runner.checkpoint_dir)
    arrays_mb = size_mb(p for p in paths if p.endswith(".npz"))
    print(f"  {size_mb(paths):,.1f} MB in {write.wall:.2f} s (+ {fsync:.2f} s fsync)",
          flush=True)
    measured.append((write, fsync, paths, arrays_mb))
  del buffer
  gc.collect()
  write_peak = peak_gb()
  print(f"  peak RSS while building the buffer and writing: {write_peak:.2f} GB", flush=True)
  for (suffix, _), runner, (write, fsync, paths, arrays_mb) in zip(variants, runners,
                                                                   measured):
    print(f"{name}{suffix}: reading ({rss_gb():.2f} GB resident) ...", flush=True)
    reset_peak()
    if cold:
      drop_from_cache(runner.checkpoint_dir)
    with Clock() as read:
      checkpointing.read_state_dict(runner.checkpoint_dir, 0)
      read_back = checkpointing.read_arrays(runner.checkpoint_dir, 0)
    del read_back
    gc.collect()
    if cold:
      drop_from_cache(runner.checkpoint_dir)
    with Clock() as resume:
      resumed = jax.block_until_ready(runner._resume())  # pylint: disable=protected-access
    assert resumed[0] == 1  # the iteration after the checkpointed one
    del resumed
    gc.collect()
    content = (f"agent + loop carry + env snapshot "
               f"({size_mb(paths) - arrays_mb:,.1f} MB msgpack); replay "
               f"{runner.replay_capacity:,} x "
               f"{'x'.join(map(str, runner.env.observation_shape))} uint8 "
               f"({nbytes / 1e6:,.0f} MB in memory{', deflated' if suffix else ''})")
    read_peak = peak_gb()
    print(f"  peak RSS while reading and resuming: {read_peak:.2f} GB (the buffer is "
          f"{nbytes / 1e9:.2f} GB)", flush=True)
    table.add(name + suffix, content, size_mb(paths), write.wall, fsync, read.wall,
              resume.wall, max(write_peak, read_peak))
    table.notes.append(
        f"{name}{suffix}: CPU seconds (all threads) of write / read / resume "
        f"{write.cpu:.2f} / {read.cpu:.2f} / {resume.cpu:.2f}; peak RSS "
        f"{write_peak:.2f} GB building the buffer and writing, {read_peak:.2f} GB reading "
        "and resuming." + (
            f" The buffer's {nbytes / 1e6:,.0f} MB deflated (level 1) to {arrays_mb:,.2f} "
            f"MB ({nbytes / 1e6 / arrays_mb:.1f}x) at {nbytes / 1e6 / write.wall:,.0f} MB/s "
            f"of buffer written, {nbytes / 1e6 / read.wall:,.0f} MB/s read."
            if suffix else ""))
    shutil.rmtree(os.path.dirname(runner.checkpoint_dir))
  del runners, state, carry
  gc.collect()


def synthetic_atari_shard(replay_dir: str, capacity: int) -> None:
  """A small DQN Replay shard of 84x84 frames: enough to build the offline runner."""
  rng = np.random.default_rng(0)
  terminal = np.zeros(capacity, np.uint8)
  terminal[capacity // 2] = 1
  fmt.write_shard(replay_dir, 0,
                  observation=rng.integers(0, 255, (capacity, 84, 84), dtype=np.uint8),
                  action=rng.integers(0, 6, capacity, dtype=np.int32),
                  reward=np.zeros(capacity, np.float32), terminal=terminal,
                  add_count=capacity)


def capacity_bindings(capacity, min_replay_history: int) -> list[str]:
  """OnlineRunner bindings of a replay capacity other than the gin config's (its
  min_replay_history, the config's, cut to fit)."""
  if not capacity:
    return []
  return [f"OnlineRunner.replay_capacity = {capacity}",
          f"OnlineRunner.min_replay_history = {min(capacity, min_replay_history)}"]


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out_dir", default=None,
                      help="where the checkpoints are written (a fresh folder inside it, "
                      "removed at the end); default: a temporary folder")
  parser.add_argument("--skip_atari_online", action="store_true",
                      help="leave out the online Atari rows (the 7 GB buffer)")
  parser.add_argument("--capacity", type=int, default=None,
                      help="online Atari replay capacity (default: the gin config's, 1M)")
  parser.add_argument("--atari_game", default=None,
                      help="online Atari game (default: the gin config's, Pong); the "
                      "compression ratio depends on it")
  parser.add_argument("--minatar_capacity", type=int, default=None,
                      help="online MinAtar replay capacity (default: the gin config's, 100K)")
  parser.add_argument("--frames", type=int, default=20_000,
                      help="buffer entries played in the environment, tiled to the capacity")
  parser.add_argument("--cold_read", action=argparse.BooleanOptionalAction, default=True,
                      help="drop the files from the page cache before each read")
  parser.add_argument("--smoke", action="store_true",
                      help=f"{SMOKE_CAPACITY:,}-entry buffers and dataset (about a minute)")
  args = parser.parse_args(argv)
  if args.smoke:
    args.capacity = args.capacity or SMOKE_CAPACITY
    args.minatar_capacity = args.minatar_capacity or SMOKE_CAPACITY
    args.frames = min(args.frames, SMOKE_CAPACITY)
  tf_utils.tensorflow()  # imported before anything is timed (checkpoints use its gfile)
  print(f"jax backend: {jax.default_backend()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
  root = tempfile.mkdtemp(prefix="checkpoint_cost_", dir=args.out_dir)
  print(f"writing under {root}", flush=True)
  table = Table()
  start = time.perf_counter()
  try:
    quickstart = []
    if args.smoke:  # a tiny quickstart dataset, logged into root
      quickstart += [f"quickstart_dataset.cache_dir = '{os.path.join(root, 'cache')}'",
                     "quickstart_dataset.num_checkpoints = 1",
                     f"quickstart_dataset.capacity = {SMOKE_CAPACITY}"]
    offline_row(table, "offline MinAtar (FixedReplayRunner)",
                os.path.join(root, "offline_minatar"), [os.path.join(GIN, "quickstart.gin")],
                quickstart, "gin_configs/quickstart.gin, built on the quickstart dataset"
                + (f" (a {SMOKE_CAPACITY:,}-entry one)" if args.smoke else ""),
                args.cold_read)
    shard = os.path.join(root, "atari_data", "replay_logs")
    synthetic_atari_shard(shard, 1000)
    offline_row(table, "offline Atari (FixedReplayRunner)",
                os.path.join(root, "offline_atari"),
                [os.path.join(GIN, "offline", "dqn.gin")],
                [f"load_fixed_replay.replay_dir = '{shard}'"],
                "gin_configs/offline/dqn.gin (Nature DQN, 84x84x4 uint8 states), the runner "
                "built on a synthetic 1,000-entry DQN Replay shard (the checkpoint holds no "
                "data)", args.cold_read)
    shutil.rmtree(os.path.dirname(shard))
    minatar = ["OnlineRunner.evaluation_steps = 0", *capacity_bindings(
        args.minatar_capacity, 1000)]
    online_rows(table, "online MinAtar (OnlineRunner)", os.path.join(root, "online_minatar"),
                [os.path.join(GIN, "online", "minatar_dqn.gin")], minatar, args.frames,
                args.cold_read, compressed_too=True)
    if not args.skip_atari_online:
      atari = ["OnlineRunner.evaluation_steps = 0", *capacity_bindings(args.capacity,
                                                                        20_000)]
      if args.atari_game:
        atari.append(f"OnlineRunner.game = '{args.atari_game}'")
      online_rows(table, "online Atari (OnlineRunner)", os.path.join(root, "online_atari"),
                  [os.path.join(GIN, "online", "dqn.gin")], atari, args.frames,
                  args.cold_read, compressed_too=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  table.notes.append(
      "write s: the runner's checkpoint call (what training waits for; the kernel may "
      "still hold the data in its page cache); fsync s: then until it is on disk; "
      + ("read s / resume s from disk (files dropped from the page cache first); "
         if args.cold_read else "read s / resume s possibly from the page cache; ")
      + "online read s: checkpointing.read_state_dict + read_arrays, resume s: "
      "runner._resume() (the reads, then agent and buffer onto the device, environment "
      "restored); offline read s: checkpointing.restore_latest + jax.device_put; MB/s: "
      "of the file on disk; peak RSS: the process's high-water mark during the row (an "
      "online row's includes building the buffer and writing both variants); CPU "
      "seconds well under the wall ones: waiting for the disk or for other jobs.")
  table.print()
  print(f"\ncommand: python benchmarks/checkpoint_cost.py {' '.join(argv)}".rstrip())
  print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; peak RSS of the "
        f"whole run {max(_PEAKS + [peak_gb()]):.2f} GB; "
        f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
  main(sys.argv[1:])

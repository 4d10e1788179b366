"""RL Unplugged Atari through tensorflow-datasets, laid out as DQN Replay checkpoints.

RL Unplugged's copy of DQN Replay (`rlu_atari_checkpoints_ordered/<Game>_run_<k>`, one
split `checkpoint_NN` per checkpoint, episodes in logged order) stores whole
episodes in RLDS form: step t holds observation o_t (84x84x1 PNG), action a_t, reward
r_t and is_terminal; when the episode ended in a terminal state its last step holds only
that state's observation. `episodes_to_replay` turns a checkpoint's episodes into the
arrays of Dopamine's circular buffer, exactly as `OutOfGraphReplayBuffer.add` would have
stored them: stack_size - 1 zero entries before each episode, then (o_t, a_t, r_t,
terminal_t) with terminal on the last action of a terminated episode (the terminal
observation is not stored, as in Dopamine). An episode that ends without a terminal
(truncated) keeps its last step but that state is never sampled (its next state is
unknown). Rewards are clipped to [-1, 1], as DQN Replay stores them.

The buffer of each checkpoint is "not full" (add_count = entries, one unused slot), so
`fixed_replay.valid_indices` applies unchanged; the padding entries and truncated
ends go into the shard's invalid_range.

`rlu_atari` (one `train` split for all checkpoints) reads as one checkpoint, suffix 0.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Iterator, NamedTuple

import numpy as np

DEFAULT = "rlu_atari_checkpoints_ordered"
_STEPS_PER_READ = 4096


class RLUError(ValueError):
  """A TFDS name, split or data_dir that does not hold the requested dataset."""


class ReplayPiece(NamedTuple):
  """One checkpoint in Dopamine's layout; `never_valid` are int64 indices not to sample."""

  observation: np.ndarray  # uint8 [N, 84, 84]
  action: np.ndarray       # int32 [N]
  reward: np.ndarray       # float32 [N]
  terminal: np.ndarray     # uint8 [N]
  never_valid: np.ndarray  # int64 [M]


def episode_pieces(episodes: Iterable[dict], stack_size: int = 4,
                   clip_rewards: bool = True) -> Iterator[ReplayPiece]:
  """Each episode's entries in Dopamine's layout (`never_valid` relative to the piece).

  Each episode: observation uint8 [T, H, W(, 1)], action int [T], reward float [T],
  is_terminal bool [T]. An episode that stores no action (a lone terminal state) is skipped.
  """
  pad = stack_size - 1
  for ep in episodes:
    o = np.asarray(ep["observation"])
    if o.ndim == 4 and o.shape[-1] == 1:
      o = o[..., 0]
    a, r = np.asarray(ep["action"]), np.asarray(ep["reward"], np.float32)
    terminated = bool(np.asarray(ep["is_terminal"])[-1])
    if terminated:  # the last step holds only the terminal observation
      o, a, r = o[:-1], a[:-1], r[:-1]
    if len(a) == 0:
      continue
    t = np.zeros(len(a), np.uint8)
    if terminated:
      t[-1] = 1
    never = np.arange(pad) if terminated else np.append(np.arange(pad), pad + len(a) - 1)
    yield ReplayPiece(
        np.concatenate([np.zeros((pad,) + o.shape[1:], np.uint8), o.astype(np.uint8)]),
        np.concatenate([np.zeros(pad, np.int32), a.astype(np.int32)]),
        np.concatenate([np.zeros(pad, np.float32), np.clip(r, -1, 1) if clip_rewards else r]),
        np.concatenate([np.zeros(pad, np.uint8), t]), never.astype(np.int64))


def layout(episode_ends: Iterable[tuple[int, bool]], stack_size: int = 4
           ) -> tuple[int, np.ndarray]:
  """(entries, never_valid) of a checkpoint from its episodes' (steps, ends terminal?).

  The same numbers `episodes_to_replay` gives, without the frames (the size of a
  store is known before any frame is decoded).
  """
  size, never, pad = 0, [], stack_size - 1
  for steps, terminated in episode_ends:
    stored = steps - 1 if terminated else steps
    if stored <= 0:
      continue
    never.append(np.arange(size, size + pad))
    size += pad + stored
    if not terminated:
      never.append(np.array([size - 1]))
  return size, (np.concatenate(never).astype(np.int64) if never else np.zeros(0, np.int64))


def episodes_to_replay(episodes: Iterable[dict], stack_size: int = 4,
                       clip_rewards: bool = True) -> ReplayPiece:
  """Dopamine-layout arrays of RLDS episodes (dicts of numpy step arrays), concatenated."""
  pieces = list(episode_pieces(episodes, stack_size, clip_rewards))
  if not pieces:
    raise RLUError("The checkpoint holds no steps.")
  offsets = np.cumsum([0] + [p.action.size for p in pieces[:-1]])
  return ReplayPiece(*(np.concatenate([getattr(p, k) for p in pieces])
                       for k in ("observation", "action", "reward", "terminal")),
                     np.concatenate([p.never_valid + o for p, o in zip(pieces, offsets)]))


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise RLUError("Reading RL Unplugged needs tensorflow-datasets: pip install "
                   "tensorflow-datasets") from e
  from batch_rl.tf_utils import tensorflow  # pylint: disable=g-import-not-at-top
  tensorflow()  # keep TF (used by tfds) off the GPUs
  return tfds


def open_builder(name: str, data_dir: str):
  """The prepared TFDS builder `name` ('<dataset>/<Game>_run_<k>') in `data_dir`."""
  tfds = _tfds()
  if "/" not in name:
    raise RLUError(f"`load_fixed_replay.tfds_name` = {name!r} names no game and run; expected "
                   f"e.g. '{DEFAULT}/Pong_run_1'.")
  dataset, config = name.split("/", 1)
  try:
    cls = tfds.builder_cls(dataset)
  except Exception as e:  # noqa: BLE001 - tfds raises several types for unknown names
    raise RLUError(f"`load_fixed_replay.tfds_name` = {name!r}: TFDS has no dataset "
                   f"{dataset!r}; the RL Unplugged Atari ones are {DEFAULT!r} and "
                   "'rlu_atari'.") from e
  configs = [c.name for c in getattr(cls, "BUILDER_CONFIGS", [])]
  if configs and config.split(":")[0] not in configs:
    close = difflib.get_close_matches(config, configs, n=3)
    raise RLUError(f"`load_fixed_replay.tfds_name` = {name!r}: {dataset} has no config "
                   f"{config!r}" + (f"; did you mean {close}?" if close else "") +
                   " Configs are '<Game>_run_<1..5>'.")
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    raise RLUError(
        f"`load_fixed_replay.tfds_data_dir` = {data_dir!r} does not hold {name} version "
        f"{builder.version} (looked in {builder.data_dir}). Copy it there, e.g. gsutil -m cp "
        f"-r gs://tfds-data/datasets/{dataset}/{config}/{builder.version} "
        f"{data_dir}/{dataset}/{config}/")
  return builder


def checkpoint_suffixes(builder) -> list[int]:
  """Checkpoint numbers of the builder's splits ('checkpoint_07' -> 7; 'train' -> [0])."""
  names = list(builder.info.splits.keys())
  numbers = sorted(int(n.split("_")[1]) for n in names if n.startswith("checkpoint_"))
  if numbers:
    return numbers
  if "train" in names:
    return [0]
  raise RLUError(f"{builder.name} has splits {names}; expected 'checkpoint_NN' or 'train'.")


def _split(builder, suffix: int) -> str:
  names = list(builder.info.splits.keys())
  name = f"checkpoint_{int(suffix):02d}"
  if name in names:
    return name
  if int(suffix) == 0 and "train" in names and not any(n.startswith("checkpoint_") for n in names):
    return "train"
  raise RLUError(f"{builder.info.full_name} has no split for checkpoint {suffix}; "
                 f"splits: {names}.")


def frame_shape(builder) -> tuple[int, ...]:
  """Frame shape as stored in Dopamine's layout ((84, 84, 1) -> (84, 84)), from the info."""
  shape = tuple(int(d) for d in builder.info.features["steps"]["observation"].shape)
  return shape[:-1] if len(shape) == 3 and shape[-1] == 1 else shape


def _episodes(builder, suffix: int, keys=None, decoders=None) -> Iterator[dict]:
  """A checkpoint's episodes in logged order, as dicts of numpy step arrays."""
  tfds = _tfds()
  dataset = builder.as_dataset(split=_split(builder, suffix), shuffle_files=False,
                               decoders=decoders)
  for episode in dataset:
    steps = episode["steps"]
    if keys is not None:
      steps = steps.map(lambda s: {k: s[k] for k in keys})
    # Bounded batches: TF preallocates per batch, so batch(huge) stalls.
    chunks = [tfds.as_numpy(c) for c in steps.batch(_STEPS_PER_READ)]
    if chunks:
      yield {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def checkpoint_layout(builder, suffix: int, stack_size: int = 4) -> tuple[int, np.ndarray]:
  """`layout` of one checkpoint: reads its episodes without decoding a frame."""
  tfds = _tfds()
  skip = {"steps": {"observation": tfds.decode.SkipDecoding()}}
  ends = ((len(ep["is_terminal"]), bool(ep["is_terminal"][-1]))
          for ep in _episodes(builder, suffix, keys=("is_terminal",), decoders=skip))
  return layout(ends, stack_size)


def iter_checkpoint(builder, suffix: int, stack_size: int = 4) -> Iterator[ReplayPiece]:
  """One checkpoint's episodes, in logged order, one Dopamine-layout piece at a time."""
  return episode_pieces(_episodes(builder, suffix), stack_size)


def read_checkpoint(builder, suffix: int, stack_size: int = 4) -> ReplayPiece:
  """Reads one checkpoint's episodes, in logged order, into Dopamine's layout."""
  return episodes_to_replay(_episodes(builder, suffix), stack_size)

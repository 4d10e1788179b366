"""TensorBoard event files: the contract with analysis/ (tags in docs/ARCHITECTURE.md).

One writer per run, scalars keyed by their final tag and stepped by iteration. On
resume, events past the last checkpointed iteration (written by the interrupted run
before it could checkpoint) are removed first, so every iteration appears exactly once.
"""
import os

from batch_rl.tf_utils import gfile, tensorflow


class SummaryWriter:
  """tf.summary writer of flat {tag: value} dicts."""

  def __init__(self, logdir: str):
    self._tf = tensorflow()
    self._writer = self._tf.summary.create_file_writer(logdir)

  def scalars(self, step: int, metrics: dict[str, float]) -> None:
    with self._writer.as_default(step=step):
      for tag, value in sorted(metrics.items()):
        self._tf.summary.scalar(tag, float(value))
    self._writer.flush()

  def text(self, tag: str, text: str, step: int = 0) -> None:
    with self._writer.as_default(step=step):
      self._tf.summary.text(tag, text)
    self._writer.flush()

  def image(self, tag: str, image, step: int) -> None:
    """One grayscale image [H, W] with values in [0, 1] (TensorBoard's Images tab)."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    pixels = np.asarray(image, np.float32)[None, :, :, None]
    with self._writer.as_default(step=step):
      self._tf.summary.image(tag, pixels)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def event_files(logdir: str) -> list[str]:
  return sorted(gfile().glob(os.path.join(logdir, "events.out.tfevents.*")))


def drop_events_after(logdir: str, last_step: int) -> int:
  """Rewrites the event files in `logdir` without summaries of step > last_step.

  Each affected file is rewritten to a temporary name and renamed over the original.
  Returns the number of events dropped.
  """
  tf = tensorflow()
  dropped = 0
  for path in event_files(logdir):
    keep, drop = [], 0
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      if event.HasField("summary") and event.step > last_step:
        drop += 1
      else:
        keep.append(record.numpy())
    if drop:
      tmp = path + ".tmp"
      with tf.io.TFRecordWriter(tmp) as writer:
        for record in keep:
          writer.write(record)
      gfile().rename(tmp, path, overwrite=True)
      dropped += drop
  return dropped


def read_scalars(logdir: str) -> dict[str, dict[int, list[float]]]:
  """{tag: {step: [values]}} of the scalars in `logdir`'s event files.

  Values are lists so that a duplicated step stays visible. The analysis library
  (analysis/) reads whole sweeps; this is the small reader for one run.
  """
  tf = tensorflow()
  out: dict[str, dict[int, list[float]]] = {}
  for path in event_files(logdir):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          out.setdefault(value.tag, {}).setdefault(event.step, []).append(
              float(tf.make_ndarray(value.tensor)))
  return out


def read_texts(logdir: str) -> dict[str, str]:
  """{tag: text} of the text summaries in `logdir` (the last one written per tag)."""
  tf = tensorflow()
  out: dict[str, str] = {}
  for path in event_files(logdir):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "text":
          out[value.tag] = tf.make_ndarray(value.tensor).item().decode("utf-8")
  return out

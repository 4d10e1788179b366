"""TensorFlow, imported once and kept off accelerators.

TensorFlow is only here for tf.summary (TensorBoard event files) and tf.io.gfile
(local and gs:// paths). JAX owns the GPU/TPU: if TensorFlow saw the GPU it would
reserve most of its memory at start-up.
"""
import functools
import os


@functools.lru_cache(maxsize=None)
def tensorflow():
  """Returns the `tensorflow` module with every GPU hidden from it."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:
    # Devices were already initialised by someone else; nothing left to hide.
    pass
  return tf


def gfile():
  """tf.io.gfile: open/glob/exists/rename for local and gs:// paths."""
  return tensorflow().io.gfile

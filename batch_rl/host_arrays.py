"""Host arrays that the CPU backend can alias: allocation on a 64-byte boundary."""
import numpy as np


def aligned_empty(shape: tuple[int, ...], dtype, alignment: int = 64) -> np.ndarray:
  """np.empty whose data starts on an `alignment`-byte boundary.

  jax.device_put on the CPU backend aliases an aligned numpy array instead of copying
  it, so loaded data is held once, not twice (benchmarks/memory.py measures the peak).
  """
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(nbytes + alignment, np.uint8)
  start = (-raw.ctypes.data) % alignment
  return raw[start:start + nbytes].view(dtype).reshape(shape)

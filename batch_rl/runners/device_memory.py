"""Whether a compiled program fits the device's memory, checked before it first runs."""
import os
from typing import Optional, Sequence

import jax

from batch_rl.validation import ConfigError

GB = 1024**3


def device_limit_bytes(device: Optional[jax.Device] = None) -> Optional[int]:
  """The memory one device can hold: the accelerator's limit, or the host's physical
  memory on CPU; None where neither is known."""
  device = device or jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def program_bytes(compiled) -> int:
  """What running `compiled` holds at its peak: arguments, outputs not aliased to
  them, and XLA's temporaries (its memory_analysis; 0 where the backend has none)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return 0
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def check_fits(compiled: Sequence, binding: str, what: str) -> int:
  """The largest of the programs' needs; ConfigError naming `binding` if it exceeds
  the device's memory."""
  need = max((program_bytes(c) for c in compiled), default=0)
  limit = device_limit_bytes()
  if limit is not None and need > limit:
    raise ConfigError(
        f"{what} needs about {need / GB:.1f} GB of device memory (XLA's estimate of the "
        f"compiled training step: arguments, outputs and temporaries), but the device "
        f"has {limit / GB:.1f} GB. Lower `{binding}` (or the batch or network size).")
  return need

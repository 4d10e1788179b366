"""Graceful stops: SIGTERM and SIGUSR2 end a run at the next safe point, checkpointed.

SLURM sends SIGTERM before it kills a preempted or requeued job, and submitit asks for
SIGUSR2 before the time limit. Either signal only sets a flag here; the runner looks
at it after every jitted call, writes a checkpoint holding its position inside the
iteration (`checkpointing.save_partial`) and raises `Preempted`, which `train.py` turns
into exit status 3. Rerunning the same command continues from that position and logs
exactly what an uninterrupted run logs.
"""
import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class Preempted(Exception):
  """The run stopped on a signal after checkpointing its position; rerun to continue."""


# The signal received before a runner's GracefulStop was entered, if any.
_pending: Optional[str] = None


def _stop_before_training(signum, frame) -> None:
  global _pending
  del frame
  _pending = signal.Signals(signum).name
  raise Preempted(f"Stopped on {signal.Signals(signum).name} before training started; "
                  "there was nothing new to checkpoint. Rerun the same command to "
                  "continue.")


def stop_until_training() -> None:
  """Until a runner's GracefulStop takes over, SIGTERM/SIGUSR2 end the process at once
  (raising Preempted in the main thread): before the first jitted call nothing is lost.
  train.py calls this first, so a signal during its start-up also exits 3. Should a
  library swallow the exception (an import guarded by `except Exception`), the signal
  stays pending and the runner stops at its first safe point instead."""
  if threading.current_thread() is threading.main_thread():
    for sig in SIGNALS:
      signal.signal(sig, _stop_before_training)


class GracefulStop:
  """Context manager: while active, SIGTERM/SIGUSR2 set `requested` (the signal's name).

  Outside the main thread (where Python cannot install handlers, e.g. a notebook's
  worker thread) it installs nothing and `requested` stays None.
  """

  def __init__(self):
    self.requested: Optional[str] = None
    self._previous: dict = {}

  def _handle(self, signum, frame) -> None:
    del frame
    self.requested = signal.Signals(signum).name

  def __enter__(self) -> "GracefulStop":
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    if _pending:
      self.requested = _pending
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def preempted(self, where: str, checkpoint: str) -> Preempted:
    """The exception to raise once the position `where` is checkpointed in `checkpoint`."""
    return Preempted(f"Stopped on {self.requested} {where}; the position was checkpointed "
                     f"in {checkpoint}. Rerun the same command to continue from there.")

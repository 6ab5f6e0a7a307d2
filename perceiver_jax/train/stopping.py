"""SIGTERM or SIGINT as a stop request (preemption, Ctrl-C).

The handler sets a flag the loop feeds into the next step, whose collectives
take its maximum, so all processes stop at the same step with a checkpoint.
A second SIGINT raises KeyboardInterrupt.
"""

import signal
import threading
import types
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
  """Context manager that records SIGTERM/SIGINT instead of dying.

  Attributes:
    signal_name: the first signal received ('SIGTERM', 'SIGINT'), or None.
  """

  def __init__(self):
    self.signal_name: Optional[str] = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _handle(self, signum: int, frame: Optional[types.FrameType]) -> None:
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      # A second Ctrl-C: the user does not want to wait for the checkpoint.
      raise KeyboardInterrupt
    if self.signal_name is None:
      self.signal_name = signal.Signals(signum).name

  def __enter__(self) -> 'StopSignals':
    # Python delivers signals to the main thread only; elsewhere (a run
    # started from a worker thread) the default behaviour stays.
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

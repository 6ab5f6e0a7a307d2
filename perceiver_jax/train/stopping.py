"""Stopping a run cleanly on SIGTERM or SIGINT (preemption, Ctrl-C).

`StopSignals` turns the first SIGTERM or SIGINT into a request that the
training loop passes into the next step it dispatches and reads back when
that step is done (one or two steps after the signal): it then writes a
checkpoint at once, without evaluating, and returns. A second SIGINT interrupts at once (KeyboardInterrupt)
for someone who really wants out. The handlers only set a flag, so they are
safe wherever the signal lands (inside XLA, a save or data loading).

In a multi-process run each process feeds its flag into the next training
step, whose collectives take the maximum over all devices (see
`loop.train_step_fn`): every process then sees the same request at the same
step and they stop together, at no extra synchronisation cost.
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

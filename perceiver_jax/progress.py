"""Progress of a long loop, e.g. `decoding clips: 1,200/20,000 (6.0%), 41.3/s,
ETA 7m35s`: redrawn in place on a terminal, a plain line every
`PLAIN_INTERVAL_S` elsewhere (logs stay readable), and a final summary line.
"""

import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TextIO, TypeVar

TERMINAL_INTERVAL_S = 0.25
PLAIN_INTERVAL_S = 30.0

T = TypeVar('T')


def format_duration(seconds: float) -> str:
  """'7s', '7m35s', '2h05m' (rounded down to what is shown)."""
  seconds = int(max(seconds, 0))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def format_line(label: str, done: int, total: Optional[int],
                elapsed_s: float, unit: str = '') -> str:
  """The progress line of `done` items after `elapsed_s` seconds."""
  rate = done / elapsed_s if elapsed_s > 0 else 0.0
  count = f'{done:,}' if total is None else f'{done:,}/{total:,}'
  parts = [f'{label}: {count}{" " + unit if unit else ""}']
  if total:
    parts[0] += f' ({100 * done / total:.1f}%)'
  parts.append(f'{rate:.1f}/s' if rate < 100 else f'{rate:,.0f}/s')
  if total and rate > 0 and done < total:
    parts.append(f'ETA {format_duration((total - done) / rate)}')
  return ', '.join(parts)


class Progress:
  """Counts items and reports to `stream` (default stderr)."""

  def __init__(self, label: str, total: Optional[int] = None, *,
               unit: str = '', stream: Optional[TextIO] = None,
               interval_s: Optional[float] = None,
               clock: Callable[[], float] = time.monotonic):
    self.label, self.total, self.unit = label, total, unit
    self.stream = stream or sys.stderr
    isatty = getattr(self.stream, 'isatty', None)
    self.terminal = bool(isatty and isatty())
    self.interval_s = interval_s if interval_s is not None else (
        TERMINAL_INTERVAL_S if self.terminal else PLAIN_INTERVAL_S)
    self.clock = clock
    self.start = clock()
    self.done = 0
    self._last_report = self.start
    self._width = 0
    self._closed = False

  def line(self) -> str:
    return format_line(self.label, self.done, self.total,
                       self.clock() - self.start, self.unit)

  def _write(self, text: str, final: bool) -> None:
    if self.terminal:
      # Redraw in place, blanking what a longer previous line left.
      padded = text.ljust(self._width)
      self._width = len(text)
      self.stream.write('\r' + padded + ('\n' if final else ''))
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def update(self, count: int = 1) -> None:
    """Adds `count` items; reports if the interval has passed."""
    self.done += count
    now = self.clock()
    if now - self._last_report >= self.interval_s:
      self._last_report = now
      self._write(self.line(), final=False)

  def close(self) -> None:
    """Reports the final count, time taken and mean rate (once)."""
    if self._closed:
      return
    self._closed = True
    elapsed = self.clock() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    self._write(f'{self.label}: {self.done:,}'
                f'{" " + self.unit if self.unit else ""} in '
                f'{format_duration(elapsed)} ({rate:.1f}/s)', final=True)

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def track(items: Iterable[T], label: str, total: Optional[int] = None,
          **kwargs) -> Iterator[T]:
  """Yields `items`, counting each as it is handed out, with a `Progress`."""
  if total is None and hasattr(items, '__len__'):
    total = len(items)  # pytype: disable=wrong-arg-types
  with Progress(label, total, **kwargs) as progress:
    for item in items:
      progress.update()
      yield item

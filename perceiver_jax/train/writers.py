"""Where a run reports: console, `metrics.jsonl` and TensorBoard events.

Only process 0 writes; other processes get writers that do nothing.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Optional

import numpy as np

METRICS_FILE = 'metrics.jsonl'


def console(message: str) -> None:
  """One line for the person watching the run."""
  print(message, flush=True)


def warn(message: str) -> None:
  """One `warning: ...` line on stderr, for what the user should know."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _plain(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray)):
    return value.item() if np.ndim(value) == 0 else np.asarray(value).tolist()
  return value


class MetricWriter:
  """Appends metrics to `metrics.jsonl` and TensorBoard event files."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._jsonl = self._summary = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, METRICS_FILE), 'a')
    # TensorFlow is imported only here, and kept off any GPU. It only writes
    # summaries: its oneDNN kernels would never run, and their start-up
    # notice (two lines on stderr) would only hide ours.
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
    self._tf = tf
    self._summary = tf.summary.create_file_writer(
        os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: Mapping[str, Any],
            prefix: Optional[str] = None) -> None:
    """Records `metrics` at `step`; names get `prefix/` when given."""
    if self._jsonl is None:
      return
    named = {(f'{prefix}/{k}' if prefix else k): _plain(v)
             for k, v in metrics.items()}
    record = {'step': int(step), 'time': time.time(), **named}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    with self._summary.as_default(step=int(step)):
      for name, value in named.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
          self._tf.summary.scalar(name, value)
    self._summary.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._summary.close()
      self._jsonl = self._summary = None


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Every record of `workdir/metrics.jsonl`, in order; FileNotFoundError
  if there is none.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {workdir} a run '
                            'directory made by experiments.train?')
  records = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}, line {number}, is not readable JSON '
                         f'({e}).') from None
  return records


def write_json(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump({k: _plain(v) for k, v in payload.items()}, f, indent=2,
              sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def build_directory(directory: str, build: Callable[[str], None]) -> None:
  """Runs `build(scratch)` beside `directory` and moves the result into
  place only if it returned, so a failure leaves `directory` as it was.
  ValueError if `directory` exists and is not empty.
  """
  directory = os.path.abspath(directory)
  if os.path.isdir(directory) and os.listdir(directory):
    raise ValueError(f'{directory} exists and is not empty.')
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  # Beside it: the same file system, so the move is a rename.
  scratch = tempfile.mkdtemp(
      prefix=f'.{os.path.basename(directory)}-building-', dir=parent)
  try:
    build(scratch)
    if os.path.isdir(directory):
      os.rmdir(directory)
    os.replace(scratch, directory)
  except BaseException:
    shutil.rmtree(scratch, ignore_errors=True)
    raise


def read_json(file: str) -> dict[str, Any]:
  """A JSON object from `file`; OSError or ValueError naming the file."""
  try:
    with open(file, encoding='utf-8') as f:
      payload = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{file} is not readable JSON ({e}); it may be '
                     'truncated or edited by hand.') from None
  if not isinstance(payload, dict):
    raise ValueError(f'{file} holds a JSON {type(payload).__name__}, not '
                     'the object expected.')
  return payload


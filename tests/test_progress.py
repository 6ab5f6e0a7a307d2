"""Tests of perceiver_jax.progress."""

import io
import re
import subprocess
import sys

from tests.helpers import command_utils
from perceiver_jax import progress


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_format_line_counts_rate_and_eta():
  # 250 of 1,000 in 10 s: 25/s, 750 left -> 30 s.
  assert progress.format_line('decoding', 250, 1000, 10.0, 'clips') == (
      'decoding: 250/1,000 clips (25.0%), 25.0/s, ETA 30s')
  # 1,200 of 20,000 in 30 s: 40/s, 18,800 left -> 470 s = 7m50s.
  assert progress.format_line('reading', 1200, 20000, 30.0) == (
      'reading: 1,200/20,000 (6.0%), 40.0/s, ETA 7m50s')
  # Unknown total: no percentage, no ETA; fast rates without decimals.
  assert progress.format_line('rows', 5000, None, 2.0) == 'rows: 5,000, 2,500/s'
  assert progress.format_duration(7325) == '2h02m'


def test_plain_stream_gets_occasional_whole_lines():
  clock, out = _Clock(), io.StringIO()
  with progress.Progress('files', 10, stream=out, interval_s=5.0,
                         clock=clock) as p:
    for _ in range(10):
      clock.now += 1.0
      p.update()
  # Reported at 5 s and 10 s (every 5 s), then the final line.
  assert out.getvalue().splitlines() == [
      'files: 5/10 (50.0%), 1.0/s, ETA 5s',
      'files: 10/10 (100.0%), 1.0/s',
      'files: 10 in 10s (1.0/s)']
  assert '\r' not in out.getvalue()


def test_terminal_redraws_in_place():
  clock, out = _Clock(), _Terminal()
  items = list(progress.track(range(4), 'steps', stream=out, clock=clock,
                              interval_s=0.0))
  assert items == [0, 1, 2, 3]
  text = out.getvalue()
  assert text.startswith('\rsteps: 1/4 (25.0%)')
  # Stopping after the last item (as zip does) still counts it.
  out = io.StringIO()
  assert list(zip(range(3), progress.track(range(3), 'n', stream=out))) == [
      (0, 0), (1, 1), (2, 2)]
  assert out.getvalue().startswith('n: 3 in 0s')
  assert text.count('\r') == 5 and text.endswith('\n')
  assert text.count('\n') == 1
  assert progress.Progress('x', stream=_Terminal()).interval_s == (
      progress.TERMINAL_INTERVAL_S)
  assert progress.Progress('x', stream=io.StringIO()).interval_s == (
      progress.PLAIN_INTERVAL_S)


def test_dataset_builders_report_progress(tmp_path):
  """Both prepare commands count their work on stderr (not a terminal)."""
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.data import modelnet40
  from perceiver_jax.data.builders import audioset_fake
  # pylint: enable=g-import-not-at-top
  modelnet40.write_mock_layout(str(tmp_path / 'modelnet'),
                               train_per_class=2, test_per_class=1)
  audioset_fake.write_fake_audioset(str(tmp_path / 'audioset'),
                                    audioset_fake.default_clips())
  env = command_utils.one_device_env()
  commands = {
      'modelnet40': ['perceiver_jax.data.modelnet40',
                     f'--manual_dir={tmp_path}/modelnet',
                     f'--data_dir={tmp_path}/tfds_m', '--num_workers=1'],
      'audioset': ['perceiver_jax.data.builders.build_audioset',
                   f'--manual_dir={tmp_path}/audioset',
                   f'--data_dir={tmp_path}/tfds_a'],
  }
  processes = {
      name: subprocess.Popen([sys.executable, '-m', *args],
                             cwd=command_utils.REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
      for name, args in commands.items()}
  outputs = {name: p.communicate(timeout=300)
             for name, p in processes.items()}
  for name, process in processes.items():
    assert process.returncode == 0, (name, outputs[name][1][-3000:])
  # 4 mock classes: 8 training and 4 test meshes.
  err = outputs['modelnet40'][1]
  assert re.search(r'^ModelNet40 official/train: 8 meshes in \d+s \(',
                   err, re.M), err[-2000:]
  assert re.search(r'^ModelNet40 official/test: 4 meshes in ', err, re.M)
  # The default fake AudioSet: 4 + 2 + 3 rows over the three splits.
  err = outputs['audioset'][1]
  for split, rows in (('balanced_train', 4), ('unbalanced_train', 2),
                      ('eval', 3)):
    assert re.search(rf'^AudioSet audio/{split}: {rows} rows in ', err,
                     re.M), err[-2000:]
  assert '\r' not in err  # TFDS's own bars are off.

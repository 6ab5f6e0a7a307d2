"""perceiver_jax/train/finetune.py: `config.init_from` from an imported
transformers checkpoint onto a folder dataset of another class count, the
refusal of one that does not fit, linear probes and resumption."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import imagenet
from perceiver_jax.interop import workdirs
from perceiver_jax.train import finetune
from perceiver_jax.train import loop
from tests.helpers import image_folders
from tests.helpers import transformers_fixtures as fixtures


def _import(root, kind: str, seed: int) -> str:
  model = fixtures.randomize(
      fixtures.CLASSIFIERS[kind](fixtures.small_config()), seed=seed)
  fixtures.save(model, root / f'{kind}_source')
  workdirs.import_checkpoint(str(root / f'{kind}_source'),
                             str(root / kind), imagenet.get_config(''))
  return str(root / kind)


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  """An imported Fourier-features run (7 classes, 32x32) and the
  parameters of its checkpoint, read back by numpy from orbax's files."""
  root = tmp_path_factory.mktemp('finetune')
  run = _import(root, 'fourier', seed=5)
  folder = image_folders.write_folder(root / 'data')  # 2 classes.
  state = _imported_params(run)
  return run, folder, state


def _imported_params(run: str) -> dict:
  # Through the generic orbax reader, not the code under test.
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  item = os.path.join(run, 'checkpoints', '0', 'default')
  return ocp.StandardCheckpointer().restore(item)['params']


def _config(folder: str, init_from: str, **finetune_fields):
  config = image_folders.folder_config(folder, 'runlocal,finetune')
  config.init_from = init_from
  config.finetune.update(finetune_fields)
  config.train.update(num_steps=8, log_every_steps=1, eval_every_steps=8,
                      checkpoint_every_steps=4)
  config.optimizer.learning_rate = 1e-3
  return config


def _flat(params) -> dict[str, np.ndarray]:
  return {f'{m}/{n}': np.asarray(v) for m, values in params.items()
          for n, v in values.items()}


def _train(config, workdir, monkeypatch, **kwargs):
  """`loop.train_and_evaluate`, and the states `finetune` started from."""
  starts = []
  original = finetune.initial_state
  monkeypatch.setattr(finetune, 'initial_state', lambda plan, fresh: (
      starts.append(original(plan, fresh)) or starts[-1]))
  return loop.train_and_evaluate(config, workdir, **kwargs), starts


def test_finetunes_an_imported_checkpoint_on_other_classes(
    imported, tmp_path, monkeypatch):
  run, folder, theirs = imported
  # A step directory, at another image size than the checkpoint's 32x32.
  workdir = str(tmp_path / 'run')
  result, starts = _train(
      _config(folder, os.path.join(run, 'checkpoints', '0')), workdir,
      monkeypatch)
  assert result['step'] == 8 and len(starts) == 1
  start, theirs = _flat(starts[0].params), _flat(theirs)
  head = {n for n in start if n.startswith('classification_decoder/')}
  assert head and all(finetune.is_head(n.rsplit('/', 1)[0]) for n in head)
  assert set(start) == set(theirs)
  for name in sorted(set(start) - head):
    np.testing.assert_array_equal(start[name], theirs[name], err_msg=name)
  # The head is re-initialised whole: its 7 logits are now 2.
  assert start['classification_decoder/logits/w'].shape[-1] == 2
  assert theirs['classification_decoder/logits/w'].shape[-1] == 7
  assert not np.array_equal(start['classification_decoder/query'],
                            theirs['classification_decoder/query'])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    losses = [m['train/loss'] for m in map(json.loads, f) if 'train/loss' in m]
  assert len(losses) == 8
  assert np.mean(losses[-3:]) < np.mean(losses[:3])
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  assert saved['model']['head'] == 'perceiver_io'
  assert saved['model']['input']['index_dims'] == [16, 16]

  # Resuming reads the run's own checkpoint, never init_from again.
  config = _config(folder, os.path.join(run, 'checkpoints', '0'))
  config.train.num_steps = 10
  moved = str(tmp_path / 'moved')
  shutil.move(run, moved)
  try:
    result = loop.train_and_evaluate(config, workdir)
  finally:
    shutil.move(moved, run)
  assert result['step'] == 10 and len(starts) == 1


def test_a_misfit_is_refused_in_one_line_before_writing(imported, tmp_path):
  root = tmp_path
  learned = _import(root, 'learned', seed=6)
  folder = imported[1]
  workdir = tmp_path / 'run'
  with pytest.raises(finetune.FinetuneError) as error:
    loop.train_and_evaluate(_config(folder, learned), str(workdir))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'config.init_from={learned} does not fit')
  assert '(1024, ' in message and '(256, ' in message
  assert '--config.data.image_shape="(32, 32)"' in message
  assert not workdir.exists()
  with pytest.raises(finetune.FinetuneError, match='holds no run'):
    loop.train_and_evaluate(_config(folder, str(root / 'nowhere')),
                            str(workdir))
  assert not workdir.exists()


def test_freeze_encoder_trains_the_head_only(imported, tmp_path,
                                             monkeypatch):
  run, folder, theirs = imported
  result, starts = _train(_config(folder, run, freeze_encoder=True),
                          str(tmp_path / 'run'), monkeypatch,
                          return_state=True)
  final, start = _flat(result['state'].params), _flat(starts[0].params)
  changed = {n for n in final if not np.array_equal(final[n], start[n])}
  head = {n for n in final if finetune.is_head(n.rsplit('/', 1)[0])}
  assert changed and changed <= head
  for name in set(final) - head:
    np.testing.assert_array_equal(final[name], _flat(theirs)[name])

"""perceiver_jax/interop/workdirs.py (experiments.import_checkpoint and
export_checkpoint): a transformers checkpoint becomes a
workdir that our training code restores; bad checkpoints are refused."""

import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import imagenet
from perceiver_jax.interop import workdirs
from perceiver_jax.model import factory
from perceiver_jax.train import checkpoint as checkpoint_lib
from perceiver_jax.train import loop
from perceiver_jax.train import optim
from perceiver_jax.train import run_config
from perceiver_jax.train import state as state_lib
from tests.helpers import command_utils
from tests.helpers import transformers_fixtures as fixtures


@pytest.fixture(scope='module')
def learned_checkpoint(tmp_path_factory):
  model = fixtures.randomize(
      fixtures.CLASSIFIERS['learned'](fixtures.small_config()), seed=11)
  return model, fixtures.save(model, tmp_path_factory.mktemp('learned'))


def _copy(source, tmp_path):
  target = tmp_path / 'checkpoint'
  shutil.copytree(source, target)
  return target


def test_import_writes_a_workdir_that_restores_to_their_logits(
    learned_checkpoint, tmp_path):
  model, source = learned_checkpoint
  workdir = tmp_path / 'workdir'
  summary = workdirs.import_checkpoint(str(source), str(workdir),
                             imagenet.get_config(''))
  total = sum(p.numel() for p in model.parameters())
  assert f'transformers {total:,} values' in summary
  assert f'perceiver_jax {total:,} parameters' in summary
  config = run_config.read(str(workdir))
  assert config.model.head == 'perceiver_io'
  assert config.model.input.type == 'conv1x1_learned'
  assert config.data.num_classes == fixtures.NUM_LABELS
  assert config.data.eval_preprocessing == 'transformers'
  assert tuple(config.data.image_shape) == (32, 32)  # Learned: its config.
  assert config.data.eval_crop_fraction == 224 / 256
  forward = factory.transform_classifier(config.model, fixtures.NUM_LABELS)
  checkpointer = checkpoint_lib.Checkpointer(
      str(workdir / 'checkpoints'), read_only=True)
  assert checkpointer.latest_step() == 0
  images = fixtures.processed_images()
  # Restored the way `experiments.evaluate` restores: into a fresh state.
  example = {'image': np.zeros((1, 32, 32, 3), np.float32)}
  optimizer = optim.make_optimizer(config.optimizer, lambda step: 0.0)
  target = jax.tree.map(np.asarray, state_lib.initial_state(
      forward, optimizer, example, config.seed))
  params = checkpointer.restore(target, 0).params
  checkpointer.close()
  ours = forward.apply(params, None,
                       {'image': jnp.asarray(images.transpose(0, 2, 3, 1))},
                       is_training=False)
  with torch.no_grad():
    theirs = model(inputs=torch.from_numpy(images)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)


def _refused(source, tmp_path, *needles):
  workdir = tmp_path / 'workdir'
  with pytest.raises(workdirs.ImportFailure) as info:
    workdirs.import_checkpoint(str(source), str(workdir),
                             imagenet.get_config(''))
  message = str(info.value)
  assert '\n' not in message
  for needle in needles:
    assert needle in message, message
  assert not workdir.exists()
  return message


def test_truncated_safetensors_is_refused(learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  weights = source / 'model.safetensors'
  weights.write_bytes(weights.read_bytes()[:5000])
  _refused(source, tmp_path, 'cannot read', 'model.safetensors')


def test_other_architecture_is_refused(learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  config = json.loads((source / 'config.json').read_text())
  config.update(model_type='bert', architectures=['BertModel'])
  (source / 'config.json').write_text(json.dumps(config))
  _refused(source, tmp_path, "model_type 'bert'",
           'PerceiverForImageClassificationFourier')


def test_unsupported_perceiver_architecture_lists_supported(
    learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  config = json.loads((source / 'config.json').read_text())
  config['architectures'] = ['PerceiverForOpticalFlow']
  (source / 'config.json').write_text(json.dumps(config))
  _refused(source, tmp_path, 'PerceiverForOpticalFlow',
           'PerceiverForImageClassificationConvProcessing')


def test_shape_mismatch_is_refused(learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  config = json.loads((source / 'config.json').read_text())
  config['d_latents'] = 32  # The weights were saved for 64.
  config['num_self_attention_heads'] = 4
  (source / 'config.json').write_text(json.dumps(config))
  _refused(source, tmp_path, 'has shape', 'needs')


def test_pickle_only_checkpoint_is_refused(learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  os.remove(source / 'model.safetensors')
  (source / 'pytorch_model.bin').write_bytes(b'not loaded')
  _refused(source, tmp_path, 'pickle', 'save_pretrained', 'safetensors',
           'PerceiverForImageClassificationLearned.from_pretrained')


def test_export_of_an_imported_workdir_loads_in_transformers(
    learned_checkpoint, tmp_path):
  """Import, export: transformers loads the export (no missing or
  unexpected weight) and gives the original model's logits."""
  import transformers  # pylint: disable=g-import-not-at-top
  model, source = learned_checkpoint
  workdir = tmp_path / 'workdir'
  workdirs.import_checkpoint(str(source), str(workdir),
                             imagenet.get_config(''))
  target = tmp_path / 'exported'
  summary = workdirs.export_checkpoint(str(workdir), str(target))
  assert 'PerceiverForImageClassificationLearned: step 0' in summary
  loaded, info = transformers.PerceiverForImageClassificationLearned.from_pretrained(
      target, output_loading_info=True)
  assert info['missing_keys'] == set() or not info['missing_keys']
  assert not info['unexpected_keys']
  images = fixtures.processed_images()
  with torch.no_grad():
    theirs = loaded.eval()(inputs=torch.from_numpy(images)).logits.numpy()
    original = model(inputs=torch.from_numpy(images)).logits.numpy()
  np.testing.assert_allclose(theirs, original, atol=1e-5, rtol=0)


def test_export_refuses_the_papers_model(tmp_path):
  workdir = tmp_path / 'workdir'
  workdir.mkdir()
  run_config.write(str(workdir), imagenet.get_config(''))
  target = tmp_path / 'exported'
  with pytest.raises(workdirs.ExportFailure) as info:
    workdirs.export_checkpoint(str(workdir), str(target))
  assert "head 'mean_linear'" in str(info.value)
  assert not target.exists()


@pytest.mark.parametrize('field,value,needle', [
    ('num_cross_attends', 2, 'num_cross_attends=2'),
    ('share_weights', False, 'share_weights=False'),
])
def test_export_refuses_what_transformers_cannot_express(field, value,
                                                         needle):
  from perceiver_jax.interop import transformers_format as tf_format  # pylint: disable=g-import-not-at-top
  model = tf_format.model_config(
      json.loads((fixtures.small_config().to_json_string())) | {
          'architectures': ['PerceiverForImageClassificationFourier']},
      image_size=(32, 32))
  assert tf_format.transformers_config(model, 7)['d_latents'] == 64
  model['encoder'][field] = value
  with pytest.raises(tf_format.CheckpointError, match=needle):
    tf_format.transformers_config(model, 7)


def test_evaluate_reads_an_imported_workdir(learned_checkpoint, tmp_path):
  """`experiments.evaluate`'s path (`loop.evaluate_checkpoint`) on the
  imported workdir, over TFDS's mock ImageNet with transformers'
  preprocessing: the imported checkpoint is read unchanged."""
  workdir = tmp_path / 'workdir'
  workdir_config = imagenet.get_config('mock')
  workdir_config.evaluator.batch_size = 8
  workdir_config.data.mock_num_examples = 8
  workdirs.import_checkpoint(str(learned_checkpoint[1]), str(workdir),
                             workdir_config)
  metrics = loop.evaluate_checkpoint(run_config.read(str(workdir)),
                                     str(workdir / 'checkpoints'))
  assert metrics['step'] == 0
  assert 0.0 <= metrics['top1'] <= 1.0, metrics


def test_attention_maps_of_an_imported_fourier_workdir(tmp_path):
  """`experiments.attention_maps`' path on an imported Fourier classifier
  (a 'grid' input): one map per image, read unchanged from the workdir."""
  from perceiver_jax import pictures  # pylint: disable=g-import-not-at-top
  model = fixtures.randomize(
      fixtures.CLASSIFIERS['fourier'](fixtures.small_config()), seed=5)
  source = fixtures.save(model, tmp_path / 'fourier')
  (source / 'preprocessor_config.json').write_text(json.dumps(
      {'size': {'height': 32, 'width': 32},
       'crop_size': {'height': 36, 'width': 36}}))
  workdir = tmp_path / 'workdir'
  base = imagenet.get_config('mock')
  base.evaluator.batch_size = 8
  base.data.mock_num_examples = 8
  workdirs.import_checkpoint(str(source), str(workdir), base)
  config = run_config.read(str(workdir))
  assert tuple(config.data.image_shape) == (32, 32)
  assert config.data.eval_crop_fraction == 32 / 36
  paths = pictures.draw_attention_maps(str(workdir), str(tmp_path / 'maps'),
                                       num_images=1, num_latents=2)
  assert len(paths) == 1 and os.path.getsize(paths[0]) > 1000


def test_commands_print_counts_and_one_line_errors(learned_checkpoint,
                                                   tmp_path):
  """As a user runs them: the import prints both parameter counts; a
  refused checkpoint or export is one `error:` line with exit status 2."""
  model, source = learned_checkpoint
  workdir = tmp_path / 'workdir'
  done = command_utils.run_module(
      'experiments.import_checkpoint', f'--from={source}',
      f'--workdir={workdir}', f'--data_dir={tmp_path / "tfds"}')
  assert done.returncode == 0, done.stderr
  total = sum(p.numel() for p in model.parameters())
  assert f'transformers {total:,} values' in done.stdout
  assert f'perceiver_jax {total:,} parameters' in done.stdout
  assert run_config.read(str(workdir)).data.data_dir == str(tmp_path / 'tfds')
  again = command_utils.run_module(
      'experiments.import_checkpoint', f'--from={source}',
      f'--workdir={workdir}')
  assert again.returncode == 2
  assert again.stderr.strip().splitlines() == [
      f'error: --workdir {workdir} exists and is not empty.']
  exported = command_utils.run_module(
      'experiments.export_checkpoint', f'--workdir={source}',
      f'--to={tmp_path / "out"}')
  assert exported.returncode == 2
  assert len(exported.stderr.strip().splitlines()) == 1
  assert exported.stderr.startswith('error: ')
  assert 'not a perceiver_jax run config' in exported.stderr
  assert not (tmp_path / 'out').exists()


def test_export_refuses_a_damaged_newest_checkpoint(learned_checkpoint,
                                                    tmp_path):
  """Like evaluate: no silent fallback to an older step."""
  workdir = tmp_path / 'workdir'
  workdirs.import_checkpoint(str(learned_checkpoint[1]), str(workdir),
                             imagenet.get_config(''))
  checkpoints = workdir / 'checkpoints'
  shutil.copytree(checkpoints / '0', checkpoints / '1')
  arrays = glob.glob(f'{checkpoints}/1/default/d/*')
  damaged = max(arrays, key=os.path.getsize)
  with open(damaged, 'r+b') as f:
    f.truncate(os.path.getsize(damaged) // 2)
  target = tmp_path / 'exported'
  with pytest.raises(workdirs.ExportFailure,
                     match=f'{checkpoints}/1 is damaged.*--step=0'):
    workdirs.export_checkpoint(str(workdir), str(target))
  assert not target.exists()
  assert 'step 0' in workdirs.export_checkpoint(str(workdir), str(target),
                                                step=0)


def test_malformed_config_json_is_refused(learned_checkpoint, tmp_path):
  source = _copy(learned_checkpoint[1], tmp_path)
  settings = json.loads((source / 'config.json').read_text())
  del settings['num_blocks']
  (source / 'config.json').write_text(json.dumps(settings))
  _refused(source, tmp_path, "config.json has no 'num_blocks' field")
  (source / 'config.json').write_text('[1, 2]')
  _refused(source, tmp_path, 'holds a JSON list')

"""Top-5 of image files (perceiver_jax.train.prediction) on an imported
model, against transformers' own top-1, and through experiments.predict."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
from sklearn import datasets
import torch

from configs import imagenet
from perceiver_jax.interop import workdirs
from perceiver_jax.train import prediction
from tests.helpers import command_utils
from tests.helpers import transformers_fixtures as fixtures


@pytest.fixture(scope='module')
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp('predict')
  config = fixtures.small_config(
      id2label={i: f'class {i}' for i in range(fixtures.NUM_LABELS)})
  model = fixtures.randomize(fixtures.CLASSIFIERS['learned'](config), seed=3)
  fixtures.save(model, root / 'source')
  workdirs.import_checkpoint(str(root / 'source'), str(root / 'run'),
                             imagenet.get_config(''))
  photos = root / 'photos'
  photos.mkdir()
  for i, photo in enumerate(datasets.load_sample_images().images):
    Image.fromarray(photo).save(photos / f'{i}.{"jpg" if i else "png"}',
                                quality=95)
  (photos / 'broken.jpg').write_bytes(b'not an image')
  return model, root


def test_top1_is_transformers_top1(imported):
  model, root = imported
  files = [str(root / 'photos' / n) for n in ('0.png', '1.jpg')]
  images = [np.asarray(Image.open(f).convert('RGB')) for f in files]
  pixels = fixtures.image_processor()(images, return_tensors='pt')
  with torch.no_grad():
    theirs = model(pixel_values=pixels['pixel_values']).logits.numpy()
  results = dict(prediction.predict(str(root / 'run'), files))
  for file, logits in zip(files, theirs):
    top = results[file]
    assert len(top) == 5
    assert top[0][0] == f'class {int(np.argmax(logits))}'
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    # Their processor's pixels differ from ours by resampling round-off.
    np.testing.assert_allclose([p for _, p in top],
                               np.sort(probs)[::-1][:5], atol=5e-3)


def test_command_json_and_an_unreadable_file(imported):
  _, root = imported
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.predict', f'--workdir={root}/run',
       '--json', str(root / 'photos')], cwd=command_utils.REPO,
      env=command_utils.one_device_env(), capture_output=True, text=True,
      timeout=240)
  assert result.returncode == 1
  lines = [json.loads(l) for l in result.stdout.splitlines()]
  assert [l['file'] for l in lines] == [
      str(root / 'photos' / n) for n in ('0.png', '1.jpg')]
  assert all(len(l['top']) == 5 for l in lines)
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'broken.jpg' in errors[0]

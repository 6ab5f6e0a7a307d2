"""AudioSet training end to end on the generated mock AudioSet.

Every variant but 'mel' trains 2 steps of its `runlocal,mock` config
in-process and evaluates 2 clips (32 windows); 'mel' runs as the documented
commands (`experiments.train` for 4 steps, then `experiments.evaluate`).
"""

import json
import math

import numpy as np
import pytest

from tests.helpers import command_utils
from configs import audioset as audioset_config
from perceiver_jax.data import audioset
from perceiver_jax.model import factory
from perceiver_jax.model import schedule
from perceiver_jax.train import loop

def _smoke_config(variant):
  config = audioset_config.get_config(f'variant={variant},runlocal,mock')
  config.train.update(num_steps=2, log_every_steps=2, eval_every_steps=2,
                      checkpoint_every_steps=2)
  return config


# 'mel' runs below as the documented commands instead (each run here is
# dominated by compiling its model: 20-60 s on a loaded 2-core machine).
@pytest.mark.parametrize(
    'variant', [v for v in audioset_config.VARIANTS if v != 'mel'])
def test_runlocal_mock_trains_and_evaluates(variant, tmp_path):
  config = _smoke_config(variant)
  metrics = loop.train_and_evaluate(config, str(tmp_path))
  assert metrics['step'] == 2
  assert metrics['num_skipped'] == 0
  # runlocal evaluates the first 2 of the mock's 3 evaluation clips.
  assert metrics['num_examples'] == 2
  assert metrics['num_windows'] == 2 * audioset.WINDOWS_PER_CLIP
  assert 0.0 <= metrics['map'] <= 1.0
  # The mock's first 2 evaluation clips are labelled 0 and 42.
  assert metrics['num_classes_without_positives'] == 525
  assert np.isfinite(metrics['loss']) and metrics['loss'] > 0
  assert (tmp_path / 'checkpoints' / '2').is_dir()


def test_mel_commands_train_and_evaluate(tmp_path):
  workdir = tmp_path / 'run'
  train = command_utils.run_module(
      'experiments.train',
      '--config=configs/audioset.py:variant=mel,runlocal,mock',
      f'--workdir={workdir}', timeout=400)
  assert train.returncode == 0, train.stderr[-3000:]
  assert 'step 4/4' in train.stdout
  assert 'eval eval at step 4: map ' in train.stdout
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  final_eval = [r for r in records if 'eval/map' in r][-1]
  assert final_eval['step'] == 4
  assert final_eval['eval/num_examples'] == 2

  evaluate = command_utils.run_module(
      'experiments.evaluate', f'--workdir={workdir}', timeout=400)
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  result = json.loads(evaluate.stdout.strip().splitlines()[-1])
  assert result['step'] == 4
  assert result['split'] == 'eval'
  assert result['num_examples'] == 2
  assert result['num_windows'] == 32
  assert result['map'] == pytest.approx(final_eval['eval/map'], abs=1e-6)
  assert result['loss'] == pytest.approx(final_eval['eval/loss'], rel=1e-5)
  assert (workdir / 'evaluations' / 'eval-step4.json').exists()


def test_mock_epochs_are_the_mock_clips():
  config = audioset_config.get_config('variant=raw,mock')
  assert audioset.num_examples('train', config.data) == (
      config.data.num_train_examples)


def _schedule_kinds(model):
  steps = schedule.schedule(factory.encoder_config(model))
  return [s.kind for s in steps], {s.weight_set for s in steps
                                   if s.kind == 'cross_attend'}


def test_paper_model_and_recipe():
  config = audioset_config.get_config()
  assert config.variant == 'raw'
  model = config.model
  kinds, cross_sets = _schedule_kinds(model)
  # 2 cross-attends, each followed by a latent Transformer of 8 layers.
  assert kinds == ['cross_attend', 'latent_transformer'] * 2
  assert model.encoder.num_self_attends_per_block == 8
  assert cross_sets == {0, 1} and not model.encoder.share_weights
  assert (model.encoder.num_latents,
          model.encoder.num_latent_channels) == (512, 512)
  assert config.loss.type == 'sigmoid_xent'
  assert config.evaluator.type == 'multilabel_map'
  assert config.evaluator.metric == 'map'
  assert config.evaluator.windows_per_clip == audioset.WINDOWS_PER_CLIP
  assert config.train.num_epochs == 100
  assert config.data.num_classes == audioset.NUM_CLASSES
  # The model's inputs match the loader's windows.
  assert model.input.num_samples == audioset.WINDOW_SAMPLES
  assert audioset_config.get_config('variant=mel').model.input.index_dims == (
      audioset.MEL_SHAPE)
  steps = loop.run_length(config).total_steps
  assert steps == math.ceil(100 * 1_700_000 / 1024)


def test_variants_read_the_right_data_and_inputs():
  expected = {
      'raw': ('audio', 'raw', 'raw_audio'),
      'mel': ('audio', 'mel', 'mel'),
      'video': ('audio_video', 'video', 'video'),
      'raw_video': ('audio_video', 'raw_video', 'audio_video'),
      'mel_video': ('audio_video', 'mel_video', 'audio_video'),
      'mel_video_tuned': ('audio_video', 'mel_video', 'audio_video'),
  }
  for variant, (builder, modality, input_type) in expected.items():
    config = audioset_config.get_config(f'variant={variant}')
    assert (config.data.builder_config, config.data.modality,
            config.model.input.type) == (builder, modality, input_type)
  mel_video = audioset_config.get_config('variant=mel_video')
  tuned = audioset_config.get_config('variant=mel_video_tuned')
  assert mel_video.data.spec_augment and not tuned.data.spec_augment
  assert mel_video.model.input.audio_dropout == 0.0
  assert tuned.model.input.audio_dropout == 0.1
  assert tuned.model.input.video_dropout == 0.3
  assert tuned.model.input.audio.type == 'mel'
  raw_video = audioset_config.get_config('variant=raw_video')
  assert raw_video.model.input.audio.type == 'raw_audio'
  # The video grid follows an override of the frame size.
  video = audioset_config.get_config('variant=video')
  assert tuple(video.model.input.index_dims) == (32, 224, 224)
  video.data.video_size = (64, 48)
  assert tuple(video.model.input.index_dims) == (32, 64, 48)
  with pytest.raises(ValueError, match="'melvideo'"):
    audioset_config.get_config('variant=melvideo')

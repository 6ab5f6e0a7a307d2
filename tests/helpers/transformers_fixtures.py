"""Small randomly initialised transformers Perceivers, saved as checkpoints.

Shared by tests/interop/, tests/train/test_finetune.py and
tests/experiments/test_predict.py. Every parameter and BatchNorm
statistic is drawn at random (not left at transformers' initial ones and
zeros), so that a tensor mapped to the wrong place changes the outputs.
"""

import json
import pathlib

import numpy as np
import torch
import transformers
from sklearn import datasets

IMAGE_SIZE = 32
NUM_LABELS = 7
CLASSIFIERS = {
    'fourier': transformers.PerceiverForImageClassificationFourier,
    'learned': transformers.PerceiverForImageClassificationLearned,
    'conv': transformers.PerceiverForImageClassificationConvProcessing,
}


def small_config(**overrides) -> transformers.PerceiverConfig:
  """64 latents of 64 channels, 2 blocks of 2 self-attends, 32x32 images."""
  values = dict(num_latents=64, d_latents=64, d_model=24, num_blocks=2,
                num_self_attends_per_block=2, num_self_attention_heads=4,
                num_cross_attention_heads=1, image_size=IMAGE_SIZE,
                num_labels=NUM_LABELS, hidden_act='gelu',
                attention_probs_dropout_prob=0.0)
  values.update(overrides)
  return transformers.PerceiverConfig(**values)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Draws every parameter and BatchNorm statistic at random, in place.

  Weight matrices and kernels get variance-scaling draws (std
  1/sqrt(fan-in), as a trained network's scale), LayerNorm and BatchNorm
  scales 1 +- 0.2, everything else (biases, latents, queries, positions,
  running means) std 0.2, running variances in [0.5, inf).
  """
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      if not tensor.is_floating_point():
        continue
      noise = torch.randn(tensor.shape, generator=generator)
      if name.endswith('running_var'):
        tensor.copy_(0.5 + noise.abs())
      elif name.endswith('.weight') and tensor.ndim >= 2:
        fan_in = tensor[0].numel()
        tensor.copy_(noise / fan_in ** 0.5)
      elif name.endswith('.weight'):  # LayerNorm, BatchNorm scales.
        tensor.copy_(1.0 + 0.2 * noise)
      else:
        tensor.copy_(0.2 * noise)
  return model.eval()


def save(model: torch.nn.Module, directory: pathlib.Path) -> pathlib.Path:
  """`save_pretrained` (safetensors) into `directory`."""
  model.save_pretrained(directory)
  return directory


def image_processor() -> transformers.PerceiverImageProcessorPil:
  """transformers' Perceiver image processor, resizing to 32x32 (its
  centre crop keeps the fraction 224/256 of the shorter side)."""
  return transformers.PerceiverImageProcessorPil(
      size={'height': IMAGE_SIZE, 'width': IMAGE_SIZE},
      crop_size={'height': 256 * IMAGE_SIZE // 224,
                 'width': 256 * IMAGE_SIZE // 224})


def processed_images() -> np.ndarray:
  """sklearn's two sample photos after `image_processor`, `[2, 3, H, W]`."""
  photos = datasets.load_sample_images().images
  out = image_processor()(photos, return_tensors='np')
  return np.asarray(out['pixel_values'], np.float32)


def read_config(directory: pathlib.Path) -> dict:
  return json.loads((directory / 'config.json').read_text())

r"""Our train step beside the PyTorch Perceivers, on one configuration.

  pip install -r requirements-peers.txt   # optional: torch and the peers
  python -m experiments.compare_peers [--batch_size=8] [--image_size=64] \
      [--steps=5] [--warmup=2]

The configuration (CPU by default): 64x64 RGB images with 64 Fourier bands
per axis (261 channels per pixel), 256 latents of width 256, 2 blocks of
2 self-attends (8 heads), 1 cross-attend head, widening factor 1, 1000
classes, batch 8; Adam, softmax cross-entropy. Each implementation gets as
close to it as it allows:

- ours: `configs/imagenet.py` cut down to the above, two interleaved
  cross-attends with the paper's weight sharing.
- perceiver-pytorch (lucidrains): `Perceiver(depth=2, self_per_cross_attn=2,
  weight_tie_layers=True)`: also a cross-attend per block with shared
  weights after the first; its MLPs are GEGLU with a fixed 4x widening, so
  it has more parameters.
- transformers' `PerceiverForImageClassificationFourier`: one cross-attend
  at the start only (its latent Transformer repeats `num_blocks` times),
  which its config cannot change. So ours runs twice: with the two
  cross-attends above, and with one (`num_cross_attends=1`: transformers'
  architecture up to its classification head, a one-query cross-attend
  where ours averages the latents).

For each: parameters, nominal forward FLOPs per example (ours: XLA's count,
as `experiments.model_summary`; PyTorch: `torch.utils.flop_counter`, which
counts matmuls only), seconds per train step (mean over `--steps` after
`--warmup`) and our speed-up. A peer that is not installed is reported as
such (`"status": "not installed"`) and skipped; the script never needs
one. One JSON line per implementation, then a summary line.
"""

import argparse
import functools
import importlib.util
import json
import os
import time
from typing import Any, Optional, Sequence

NUM_CLASSES = 1000


def our_config(image_size: int, batch_size: int,
               num_cross_attends: int = 2):
  """The comparison configuration in our config layout."""
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  config.data.image_shape = (image_size, image_size)
  config.model.update(num_blocks=2, num_self_attends_per_block=2,
                      num_cross_attends=num_cross_attends, num_latents=256,
                      num_latent_channels=256, num_self_heads=8)
  config.train.batch_size = batch_size
  config.optimizer.name = 'adam'
  config.optimizer.weight_decay = 0.0
  config.optimizer.clip_global_norm = None
  config.loss.label_smoothing = 0.0
  return config


def measure_ours(image_size: int, batch_size: int, steps: int,
                 warmup: int, num_cross_attends: int = 2) -> dict[str, Any]:
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  config = our_config(image_size, batch_size, num_cross_attends)
  result = benchmark.benchmark_train(config, steps=steps, warmup=warmup)
  name = 'perceiver_jax (ours)' if num_cross_attends == 2 else (
      f'perceiver_jax (ours), {num_cross_attends} cross-attend')
  return dict(name=name, status='ok', 
              params=result['params'],
              forward_flops_per_example=result[
                  'nominal_flops_per_example'] // 3,
              step_seconds=result['step_seconds'],
              step_seconds_min=result['step_seconds_min'],
              compile_seconds=result['compile_seconds'],
              device=result['device_kind'])


def _installed(*modules: str) -> Optional[str]:
  """The first of `modules` that cannot be imported, or None."""
  for module in modules:
    if importlib.util.find_spec(module) is None:
      return module
  return None


def _torch_train_step_time(model, images, labels, steps: int,
                           warmup: int) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    logits = model(images)
    if hasattr(logits, 'logits'):
      logits = logits.logits
    loss = loss_fn(logits, labels)
    loss.backward()
    optimizer.step()

  model.train()
  for _ in range(warmup):
    step()
  start = time.perf_counter()
  for _ in range(steps):
    step()
  return (time.perf_counter() - start) / steps


def _torch_forward_flops(model, images) -> Optional[int]:
  try:
    from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  # Not under torch.no_grad(): torch 2.13's FlopCounterMode tracks modules
  # with backward hooks, which fail on tensors that need no gradient.
  with FlopCounterMode(display=False) as counter:
    model(images[:1])
  return int(counter.get_total_flops())


def measure_lucidrains(image_size: int, batch_size: int, steps: int,
                       warmup: int) -> dict[str, Any]:
  name = 'perceiver-pytorch (lucidrains)'
  missing = _installed('torch', 'perceiver_pytorch')
  if missing:
    return dict(name=name, status='not installed', missing=missing)
  import torch  # pylint: disable=g-import-not-at-top
  from perceiver_pytorch import Perceiver  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  channels = 3 + 2 * (2 * 64 + 1)
  model = Perceiver(
      input_channels=3, input_axis=2, num_freq_bands=64,
      max_freq=float(image_size), depth=2, num_latents=256, latent_dim=256,
      cross_heads=1, latent_heads=8, cross_dim_head=channels,
      latent_dim_head=32, num_classes=NUM_CLASSES, attn_dropout=0.0,
      ff_dropout=0.0, weight_tie_layers=True, fourier_encode_data=True,
      self_per_cross_attn=2)
  images = torch.rand(batch_size, image_size, image_size, 3)
  labels = torch.randint(0, NUM_CLASSES, (batch_size,))
  return dict(
      name=name, status='ok',
      params=sum(p.numel() for p in model.parameters()),
      forward_flops_per_example=_torch_forward_flops(model, images),
      step_seconds=_torch_train_step_time(model, images, labels, steps,
                                          warmup),
      device='cpu', torch_threads=torch.get_num_threads())


def measure_transformers(image_size: int, batch_size: int, steps: int,
                         warmup: int) -> dict[str, Any]:
  name = 'transformers PerceiverForImageClassificationFourier'
  missing = _installed('torch', 'transformers')
  if missing:
    return dict(name=name, status='not installed', missing=missing)
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  config = transformers.PerceiverConfig(
      num_latents=256, d_latents=256, d_model=3 + 2 * 2 * 64 + 2,
      num_blocks=2, num_self_attends_per_block=2,
      num_self_attention_heads=8, num_cross_attention_heads=1,
      cross_attention_widening_factor=1, self_attention_widening_factor=1,
      attention_probs_dropout_prob=0.0, num_labels=NUM_CLASSES,
      image_size=image_size)
  model = transformers.PerceiverForImageClassificationFourier(config)
  # Channels first, as its image preprocessor expects.
  images = torch.rand(batch_size, 3, image_size, image_size)
  labels = torch.randint(0, NUM_CLASSES, (batch_size,))

  class Wrapped(torch.nn.Module):

    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, x):
      return self.inner(inputs=x).logits

  wrapped = Wrapped(model)
  return dict(
      name=name, status='ok',
      params=sum(p.numel() for p in model.parameters()),
      forward_flops_per_example=_torch_forward_flops(wrapped, images),
      step_seconds=_torch_train_step_time(wrapped, images, labels, steps,
                                          warmup),
      device='cpu', torch_threads=torch.get_num_threads())


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  args = parser.parse_args(argv)
  common = dict(image_size=args.image_size, batch_size=args.batch_size,
                steps=args.steps, warmup=args.warmup)
  results = []
  measures = (measure_ours, measure_lucidrains, measure_transformers,
              functools.partial(measure_ours, num_cross_attends=1))
  for measure in measures:
    result = measure(**common)
    result.update(batch_size=args.batch_size, image_size=args.image_size)
    results.append(result)
    print(json.dumps(result), flush=True)
  ours = results[0]['step_seconds']
  peers = [r for r in results[1:3] if r['status'] == 'ok']
  summary = dict(
      summary=True, load_average_1m=round(os.getloadavg()[0], 2),
      speedup_vs={r['name']: r['step_seconds'] / ours for r in peers},
      not_installed=[r['name'] for r in results if r['status'] != 'ok'])
  if peers:
    summary['speedup_vs_fastest_peer'] = min(
        r['step_seconds'] for r in peers) / ours
  if results[2]['status'] == 'ok':
    # The same architecture as transformers' (one cross-attend).
    summary['speedup_vs_transformers_one_cross_attend'] = (
        results[2]['step_seconds'] / results[3]['step_seconds'])
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  main()

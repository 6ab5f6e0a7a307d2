r"""Our train step beside the PyTorch Perceivers, on one configuration.

  pip install -r requirements-peers.txt   # optional: torch and the peers
  python -m experiments.compare_peers [--batch_size=8] [--image_size=64] \
      [--rounds=3] [--steps=3] [--warmup=2] [--precision=bfloat16] \
      [--peer_precision=bfloat16] [--cpu_devices=2]

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
counts matmuls only) and seconds per train step. All four are built and
warmed up first (`--warmup` steps each), then timed in `--rounds` rounds,
each round running `--steps` steps of every implementation in turn, so that
a change in the machine's load touches all of them alike: `step_seconds` is
the median of an implementation's round means, `step_seconds_min` the
least, `round_seconds` all of them; for transformers' architecture also
`..._by_round`, the median of the per-round ratios. A peer that is not
installed is reported as such (`"status": "not installed"`) and skipped;
the script never needs one. One JSON line per implementation, then a
summary line with our speed-ups (from the medians, and from the minima).

Precision and devices: everything runs in float32 on one JAX device by
default. `--precision=bfloat16` runs ours in bfloat16 compute
(`config.model.encoder.precision`), `--peer_precision=bfloat16` runs the
peers' forward under `torch.autocast` (bfloat16 on CPU); compare like with
like. `--cpu_devices=N` splits the CPU into N JAX devices, over which our
step runs data-parallel (batch / N each); PyTorch uses its own threads
(`torch_threads` in its report) either way.

`--released=fourier` (or `learned`, `conv`) instead times the inference
forward pass of one of DeepMind's released Perceiver IO classifiers' shapes
(`deepmind/vision-perceiver-*`, full size, from their published config
values, random weights: `interop.transformers_format.RELEASED_CONFIGS`):
transformers' class against ours (`configs/imagenet.py`'s
`variant=perceiver_io_*`) on the same weights, mapped as
`experiments.import_checkpoint` maps them, at `--image_size` (default 224
then) and `--batch_size`; the logits' largest difference is reported.
`--tiny` shrinks both alike (16 latents of 32 channels, 2 blocks of one
self-attend, 32x32 images) to try the script out.
"""

import argparse
import functools
import importlib.util
import json
import os
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from perceiver_jax import host_memory
from perceiver_jax import cli

NUM_CLASSES = 1000


def our_config(image_size: int, batch_size: int,
               num_cross_attends: int = 2, precision: str = 'float32'):
  """The comparison configuration in our config layout."""
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config()
  config.data.image_shape = (image_size, image_size)
  config.model.encoder.update(
      num_blocks=2, num_self_attends_per_block=2,
      num_cross_attends=num_cross_attends, num_latents=256,
      num_latent_channels=256, num_self_heads=8, precision=precision)
  config.train.batch_size = batch_size
  config.optimizer.name = 'adam'
  config.optimizer.weight_decay = 0.0
  config.optimizer.clip_global_norm = None
  config.loss.label_smoothing = 0.0
  return config


class Contender(NamedTuple):
  """An implementation ready to time: its report and one train step.

  Attributes:
    fields: what the report says of it (name, status, params, FLOPs...).
    step: runs one training step and waits for it; None if not installed.
  """
  fields: dict[str, Any]
  step: Optional[Callable[[], None]]


def prepare_ours(image_size: int, batch_size: int,
                 num_cross_attends: int = 2, precision: str = 'float32',
                 fast_compile: bool = False) -> Contender:
  """Our compiled train step on `our_config`; `step` carries the state.

  `fast_compile`: XLA:CPU's reduced optimisation options
  (`benchmark.FAST_COMPILE_OPTIONS`): a quicker compile, a slower step.
  """
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  config = our_config(image_size, batch_size, num_cross_attends, precision)
  prepared = benchmark.prepare_train_step(
      config, compiler_options=(benchmark.FAST_COMPILE_OPTIONS
                                if fast_compile else None))
  _, forward_flops = benchmark.nominal_flops_per_example(config)
  args = list(prepared.args)

  def step():
    state, metrics = prepared.compiled(*args)
    jax.block_until_ready((state, metrics))
    args[0] = state

  name = 'perceiver_jax (ours)' if num_cross_attends == 2 else (
      f'perceiver_jax (ours), {num_cross_attends} cross-attend')
  return Contender(dict(
      name=name, status='ok', params=prepared.fields['params'],
      forward_flops_per_example=forward_flops,
      compile_seconds=prepared.fields['compile_seconds'],
      precision=precision, device=jax.local_devices()[0].device_kind,
      devices=jax.local_device_count()), step)


def _installed(*modules: str) -> Optional[str]:
  """The first of `modules` that cannot be imported, or None."""
  for module in modules:
    if importlib.util.find_spec(module) is None:
      return module
  return None


def _torch_train_step(model, images, labels,
                      precision: str) -> Callable[[], None]:
  """One Adam step of `model` on (images, labels), softmax cross-entropy;
  'bfloat16': the forward under `torch.autocast` (CPU, bfloat16), PyTorch's
  own mixed precision (float32 parameters, optimizer and loss)."""
  import torch  # pylint: disable=g-import-not-at-top
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss()
  model.train()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16,
                        enabled=precision == 'bfloat16'):
      logits = model(images)
      if hasattr(logits, 'logits'):
        logits = logits.logits
    loss = loss_fn(logits.float(), labels)
    loss.backward()
    optimizer.step()

  return step


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


def _torch_contender(name: str, model, images, precision: str) -> Contender:
  import torch  # pylint: disable=g-import-not-at-top
  labels = torch.randint(0, NUM_CLASSES, (images.shape[0],))
  return Contender(dict(
      name=name, status='ok',
      params=sum(p.numel() for p in model.parameters()),
      forward_flops_per_example=_torch_forward_flops(model, images),
      precision=precision, device='cpu',
      torch_threads=torch.get_num_threads()),
      _torch_train_step(model, images, labels, precision))


def prepare_lucidrains(image_size: int, batch_size: int,
                       precision: str = 'float32') -> Contender:
  name = 'perceiver-pytorch (lucidrains)'
  missing = _installed('torch', 'perceiver_pytorch')
  if missing:
    return Contender(dict(name=name, status='not installed',
                          missing=missing), None)
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
  return _torch_contender(name, model, images, precision)


def prepare_transformers(image_size: int, batch_size: int,
                         precision: str = 'float32') -> Contender:
  name = 'transformers PerceiverForImageClassificationFourier'
  missing = _installed('torch', 'transformers')
  if missing:
    return Contender(dict(name=name, status='not installed',
                          missing=missing), None)
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

  class Wrapped(torch.nn.Module):

    def __init__(self, inner):
      super().__init__()
      self.inner = inner

    def forward(self, x):
      return self.inner(inputs=x).logits

  # Channels first, as its image preprocessor expects.
  images = torch.rand(batch_size, 3, image_size, image_size)
  return _torch_contender(name, Wrapped(model), images, precision)


def prepare_released_forward(kind: str, image_size: int, batch_size: int,
                             tiny: bool = False) -> list[Contender]:
  """Transformers' and our forward pass of a released classifier's shape.

  Both get the same random weights (transformers' initialisation, mapped to
  ours); each contender's `step` runs one inference forward on the same
  images. Returns [ours, transformers] (transformers 'not installed' when
  absent; ours then uses its own initialisation).
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from perceiver_jax.interop import transformers_format as tf_format
  from perceiver_jax.model import factory
  # pylint: enable=g-import-not-at-top
  hf_config = dict(tf_format.RELEASED_CONFIGS[
      f'deepmind/vision-perceiver-{kind}'])
  if tiny:
    hf_config.update(num_latents=16, d_latents=32, num_blocks=2,
                     num_self_attends_per_block=1, num_self_attention_heads=2)
  hf_config['image_size'] = image_size
  model_config = tf_format.model_config(hf_config,
                                        image_size=(image_size, image_size))
  forward = factory.transform_classifier(model_config,
                                         hf_config['num_labels'])
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch_size, 3, image_size, image_size)).astype(
      np.float32)  # Channels first, as transformers' processor gives them.
  ours_batch = {'image': jnp.asarray(images.transpose(0, 2, 3, 1))}
  name = f'transformers {hf_config["architectures"][0]} (forward)'
  missing = _installed('torch', 'transformers')
  theirs = None
  if missing:
    params = forward.init(jax.random.key(0), ours_batch, is_training=False)
    peer = Contender(dict(name=name, status='not installed',
                          missing=missing), None)
  else:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    model = getattr(transformers, hf_config['architectures'][0])(
        transformers.PerceiverConfig(**{
            k: v for k, v in hf_config.items()
            if k not in ('model_type', 'architectures')})).eval()
    expected = jax.eval_shape(forward.init, jax.random.key(0), ours_batch,
                              is_training=False)
    params = tf_format.to_params(
        {k: v.numpy() for k, v in model.state_dict().items()}, hf_config,
        expected)
    inputs = torch.from_numpy(images)

    def their_step():
      with torch.no_grad():
        return model(inputs=inputs).logits

    theirs = their_step().numpy()
    peer = Contender(dict(
        name=name, status='ok',
        params=sum(p.numel() for p in model.parameters()), device='cpu',
        torch_threads=torch.get_num_threads()), their_step)
  apply = jax.jit(functools.partial(forward.apply, is_training=False))
  params = jax.device_put(params)
  ours = np.asarray(apply(params, None, ours_batch))

  def our_step():
    jax.block_until_ready(apply(params, None, ours_batch))

  fields = dict(name=f'perceiver_jax (ours) {kind} (forward)', status='ok',
                params=int(sum(np.size(v) for v in jax.tree.leaves(params))),
                device=jax.local_devices()[0].device_kind)
  if theirs is not None:
    fields['max_abs_logit_difference'] = float(np.max(np.abs(ours - theirs)))
  return [Contender(fields, our_step), peer]


def time_in_rounds(contenders: Sequence[Contender], *, rounds: int,
                   steps: int, warmup: int) -> list[list[float]]:
  """Per contender, its mean seconds per step in each round.

  Every installed contender first runs `warmup` steps; then each round
  times `steps` steps of each contender in turn, round r starting with
  contender r (mod their number), so that none always follows the same
  one. Not installed: [].
  """
  for contender in contenders:
    for _ in range(warmup if contender.step else 0):
      contender.step()
  seconds = [[] for _ in contenders]
  for r in range(rounds):
    for i in range(len(contenders)):
      index = (r + i) % len(contenders)
      if contenders[index].step is None:
        continue
      start = time.perf_counter()
      for _ in range(steps):
        contenders[index].step()
      seconds[index].append((time.perf_counter() - start) / steps)
  return seconds


def main(argv: Optional[Sequence[str]] = None) -> None:
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  parser = cli.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=None,
                      help='default 64; with --released 224 (32 if --tiny)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--released', choices=('fourier', 'learned', 'conv'),
                      help='time the inference forward of this released '
                      'classifier shape, ours against transformers\'')
  parser.add_argument('--tiny', action='store_true',
                      help='with --released: a tiny version, to try it out')
  parser.add_argument('--precision', choices=('float32', 'bfloat16'),
                      default='float32',
                      help='our compute precision (config.model.encoder.'
                      'precision)')
  parser.add_argument('--peer_precision', choices=('float32', 'bfloat16'),
                      default='float32',
                      help='bfloat16: the peers under torch.autocast')
  parser.add_argument('--cpu_devices', type=int, default=None,
                      help='split the CPU into this many JAX devices: our '
                      'step runs data-parallel over them')
  parser.add_argument('--fast_compile', action='store_true',
                      help='compile ours with reduced XLA:CPU optimisations '
                      '(quicker to start, slower steps: not for timings)')
  args = parser.parse_args(argv)
  if args.image_size is None:
    args.image_size = (64 if not args.released else 32 if args.tiny
                       else 224)
  for flag in ('batch_size', 'image_size', 'rounds', 'steps'):
    if getattr(args, flag) < 1:
      parser.error(f'--{flag} must be at least 1')
  if args.warmup < 0:
    parser.error('--warmup must be at least 0')
  if args.released and (args.precision != 'float32' or
                        args.peer_precision != 'float32' or
                        args.cpu_devices is not None):
    parser.error('--released times the float32 forward on one device; '
                 'leave out --precision, --peer_precision and --cpu_devices')
  if args.cpu_devices is not None:
    if args.cpu_devices < 1:
      parser.error('--cpu_devices must be at least 1')
    from perceiver_jax.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.use_cpu_devices(args.cpu_devices)
  if args.released:
    released_main(args)
    return
  common = dict(image_size=args.image_size, batch_size=args.batch_size)
  ours = functools.partial(prepare_ours, **common, precision=args.precision,
                           fast_compile=args.fast_compile)
  contenders = [ours(),
                prepare_lucidrains(**common, precision=args.peer_precision),
                prepare_transformers(**common, precision=args.peer_precision),
                ours(num_cross_attends=1)]
  seconds = time_in_rounds(contenders, rounds=args.rounds, steps=args.steps,
                           warmup=args.warmup)
  results = []
  for contender, own in zip(contenders, seconds):
    result = dict(contender.fields, batch_size=args.batch_size,
                  image_size=args.image_size)
    if own:
      result.update(step_seconds=float(np.median(own)),
                    step_seconds_min=min(own), round_seconds=own,
                    rounds=args.rounds, steps=args.steps)
    results.append(result)
    print(json.dumps(result), flush=True)
  ours, peers = results[0], [r for r in results[1:3] if r['status'] == 'ok']
  try:
    load = round(os.getloadavg()[0], 2)
  except OSError:  # Not available on every platform.
    load = None
  summary = dict(
      summary=True, load_average_1m=load, precision=args.precision,
      peer_precision=args.peer_precision, devices=ours.get('devices'),
      speedup_vs={r['name']: r['step_seconds'] / ours['step_seconds']
                  for r in peers},
      speedup_vs_by_min={
          r['name']: r['step_seconds_min'] / ours['step_seconds_min']
          for r in peers},
      not_installed=[r['name'] for r in results if r['status'] != 'ok'])
  if peers:
    summary['speedup_vs_fastest_peer'] = min(
        r['step_seconds'] for r in peers) / ours['step_seconds']
  if results[2]['status'] == 'ok':
    # The same architecture as transformers' (one cross-attend).
    summary['speedup_vs_transformers_one_cross_attend'] = (
        results[2]['step_seconds'] / results[3]['step_seconds'])
    summary['speedup_vs_transformers_one_cross_attend_by_min'] = (
        results[2]['step_seconds_min'] / results[3]['step_seconds_min'])
    summary['speedup_vs_transformers_one_cross_attend_by_round'] = (
        paired_speedup(results[2]['round_seconds'],
                       results[3]['round_seconds']))
  print(json.dumps(summary), flush=True)


def released_main(args: argparse.Namespace) -> None:
  """`--released`: our forward against transformers' (see the docstring)."""
  contenders = prepare_released_forward(args.released, args.image_size,
                                        args.batch_size, tiny=args.tiny)
  seconds = time_in_rounds(contenders, rounds=args.rounds, steps=args.steps,
                           warmup=args.warmup)
  results = []
  for contender, own in zip(contenders, seconds):
    result = dict(contender.fields, batch_size=args.batch_size,
                  image_size=args.image_size, tiny=args.tiny)
    if own:
      result.update(forward_seconds=float(np.median(own)),
                    forward_seconds_min=min(own), round_seconds=own,
                    images_per_second=args.batch_size / float(np.median(own)),
                    rounds=args.rounds, steps=args.steps)
    results.append(result)
    print(json.dumps(result), flush=True)
  ours, theirs = results
  summary = dict(summary=True, released=args.released)
  if theirs['status'] == 'ok':
    summary.update(
        speedup_vs_transformers=(theirs['forward_seconds'] /
                                 ours['forward_seconds']),
        speedup_vs_transformers_by_min=(theirs['forward_seconds_min'] /
                                        ours['forward_seconds_min']),
        speedup_vs_transformers_by_round=paired_speedup(
            theirs['round_seconds'], ours['round_seconds']))
  else:
    summary['not_installed'] = [theirs['name']]
  print(json.dumps(summary), flush=True)


def paired_speedup(peer_rounds: Sequence[float],
                   our_rounds: Sequence[float]) -> float:
  """The median over rounds of the peer's time over ours in that round:
  a load change during the run moves both sides of a round's ratio."""
  return float(np.median([peer / ours for peer, ours in
                          zip(peer_rounds, our_rounds, strict=True)]))


if __name__ == '__main__':
  cli.guard(main)

r"""Our train step beside the PyTorch Perceivers, on one configuration.

  pip install -r requirements-peers.txt   # optional: torch and the peers
  python -m experiments.compare_peers [--batch_size=8] [--image_size=64] \
      [--rounds=3] [--steps=3] [--warmup=2] [--precision=bfloat16] \
      [--peer_precision=bfloat16] [--cpu_devices=2]

Times the matched configuration (`perceiver_jax.benchmarking.peers`) in
interleaved rounds, ours with two cross-attends and with one (transformers'
architecture); prints one JSON line per implementation, then a summary of
our speed-ups and our fraction of the machine's dense-matmul rate.
`--released=fourier|learned|conv` times a released classifier's inference
forward instead, ours against transformers' on the same weights. See
docs/performance.md.
"""

import argparse
import json
from typing import Any, Optional, Sequence

import numpy as np

from perceiver_jax import cli
from perceiver_jax import host_memory


def our_config(image_size: int, batch_size: int,
               num_cross_attends: int = 2, precision: str = 'float32'):
  """The comparison configuration in our config layout."""
  # pylint: disable=g-import-not-at-top
  from configs import imagenet
  from perceiver_jax.benchmarking import peers
  # pylint: enable=g-import-not-at-top
  config = imagenet.get_config()
  config.data.image_shape = (image_size, image_size)
  config.model.encoder.update(
      num_blocks=2, num_self_attends_per_block=2,
      num_cross_attends=num_cross_attends,
      num_latents=peers.LATENTS['num_latents'],
      num_latent_channels=peers.LATENTS['width'], num_self_heads=8,
      precision=precision)
  config.train.batch_size = batch_size
  config.optimizer.update(name='adam', weight_decay=0.0,
                          clip_global_norm=None)
  config.loss.label_smoothing = 0.0
  return config


def _timed(contenders, args, extra: dict[str, Any],
           seconds_name: str, rates, precision: str) -> list[dict[str, Any]]:
  """Times `contenders` in rounds; prints and returns their JSON lines."""
  from perceiver_jax.benchmarking import machine  # pylint: disable=g-import-not-at-top
  from perceiver_jax.benchmarking import peers  # pylint: disable=g-import-not-at-top
  seconds = machine.time_in_rounds(
      [c.step for c in contenders], rounds=args.rounds, calls=args.steps,
      warmup=args.warmup)
  results = []
  for contender, own in zip(contenders, seconds):
    result = dict(contender.fields, batch_size=args.batch_size,
                  image_size=args.image_size, **extra)
    if own:
      median = float(np.median(own))
      result.update({seconds_name: median, f'{seconds_name}_min': min(own)},
                    round_seconds=own, rounds=args.rounds, steps=args.steps)
      if seconds_name == 'forward_seconds':
        result['images_per_second'] = args.batch_size / median
      result.update(peers.efficiency(contender.fields, args.batch_size,
                                     median, rates, precision))
    results.append(result)
    print(json.dumps(result), flush=True)
  return results


def _speedups(name: str, peer: dict[str, Any], ours: dict[str, Any],
              key: str) -> dict[str, float]:
  from perceiver_jax.benchmarking import machine  # pylint: disable=g-import-not-at-top
  return {name: peer[key] / ours[key],
          f'{name}_by_min': peer[f'{key}_min'] / ours[f'{key}_min'],
          f'{name}_by_round': machine.paired_speedup(
              peer['round_seconds'], ours['round_seconds'])}


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
  for flag, least in (('batch_size', 1), ('image_size', 1), ('rounds', 1),
                      ('steps', 1), ('warmup', 0), ('cpu_devices', 1)):
    if getattr(args, flag) is not None and getattr(args, flag) < least:
      parser.error(f'--{flag} must be at least {least}')
  if args.released and (args.precision != 'float32' or
                        args.peer_precision != 'float32' or
                        args.cpu_devices is not None):
    parser.error('--released times the float32 forward on one device; '
                 'leave out --precision, --peer_precision and --cpu_devices')
  if args.cpu_devices is not None:
    from perceiver_jax.train import parallel  # pylint: disable=g-import-not-at-top
    parallel.use_cpu_devices(args.cpu_devices)
  # pylint: disable=g-import-not-at-top
  from perceiver_jax.benchmarking import machine
  from perceiver_jax.benchmarking import peers
  # pylint: enable=g-import-not-at-top
  rates = machine.matmul_rates()
  summary = dict(summary=True, load_average_1m=machine.load_average(),
                 device_kind=machine.environment()['device_kind'],
                 matmul_flops_per_sec=rates)
  if args.released:
    released(args, rates, summary)
    return
  common = dict(image_size=args.image_size, batch_size=args.batch_size)
  contenders = [
      peers.prepare_ours(our_config(**common, precision=args.precision),
                         'perceiver_jax (ours)',
                         fast_compile=args.fast_compile),
      peers.prepare_lucidrains(**common, precision=args.peer_precision),
      peers.prepare_transformers(**common, precision=args.peer_precision),
      peers.prepare_ours(
          our_config(**common, num_cross_attends=1,
                     precision=args.precision),
          'perceiver_jax (ours), 1 cross-attend',
          fast_compile=args.fast_compile)]
  results = _timed(contenders, args, {}, 'step_seconds', rates,
                   args.precision)
  ours, peer_results = results[0], [r for r in results[1:3]
                                    if r['status'] == 'ok']
  summary.update(
      precision=args.precision, peer_precision=args.peer_precision,
      devices=ours.get('devices'), machine_fraction=ours['machine_fraction'],
      speedup_vs={r['name']: r['step_seconds'] / ours['step_seconds']
                  for r in peer_results},
      speedup_vs_by_min={
          r['name']: r['step_seconds_min'] / ours['step_seconds_min']
          for r in peer_results},
      not_installed=[r['name'] for r in results if r['status'] != 'ok'])
  if peer_results:
    summary['speedup_vs_fastest_peer'] = min(
        r['step_seconds'] for r in peer_results) / ours['step_seconds']
  if results[2]['status'] == 'ok':  # Against the same architecture.
    summary.update(_speedups('speedup_vs_transformers_one_cross_attend',
                             results[2], results[3], 'step_seconds'))
  print(json.dumps(summary), flush=True)


def released(args: argparse.Namespace, rates: dict[str, float],
             summary: dict[str, Any]) -> None:
  """`--released`: our forward against transformers' (see the docstring)."""
  from perceiver_jax.benchmarking import peers  # pylint: disable=g-import-not-at-top
  contenders = peers.prepare_released_forward(
      args.released, args.image_size, args.batch_size, tiny=args.tiny)
  ours, theirs = _timed(contenders, args, dict(tiny=args.tiny),
                        'forward_seconds', rates, 'float32')
  summary.update(released=args.released,
                 machine_fraction=ours.get('machine_fraction'))
  if theirs['status'] == 'ok':
    summary.update(_speedups('speedup_vs_transformers', theirs, ours,
                             'forward_seconds'))
  else:
    summary['not_installed'] = [theirs['name']]
  print(json.dumps(summary), flush=True)


if __name__ == '__main__':
  cli.guard(main)

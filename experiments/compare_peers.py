r"""Our train step beside the PyTorch Perceivers, on one configuration.

  pip install -r requirements-peers.txt   # optional: torch and the peers
  python -m experiments.compare_peers [--precision=bfloat16] [--cpu_devices=2]

Times the matched configuration (`perceiver_jax.benchmarking.peers`) in
interleaved rounds, ours with two cross-attends and with one (transformers'
architecture); prints one JSON line per implementation, then a summary of
our speed-ups and our fraction of the machine's dense-matmul rate.
`--released=fourier|learned|conv` times a released classifier's inference
forward instead, ours against transformers' on the same weights. See
docs/performance.md.
"""

import functools
import json
from typing import Optional, Sequence

from configs import imagenet
from perceiver_jax import cli
from perceiver_jax import host_memory


def our_config(image_size: int, batch_size: int,
               num_cross_attends: int = 2, precision: str = 'float32'):
  """The comparison configuration in our config layout."""
  from perceiver_jax.benchmarking import peers  # pylint: disable=g-import-not-at-top
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
  timed = functools.partial(peers.time_contenders, rounds=args.rounds,
                            calls=args.steps, warmup=args.warmup, rates=rates)
  fields = dict(batch_size=args.batch_size, image_size=args.image_size)
  if args.released:  # Our forward against transformers'.
    results = timed(peers.prepare_released_forward(
        args.released, args.image_size, args.batch_size, tiny=args.tiny),
                    dict(fields, tiny=args.tiny),
                    seconds_name='forward_seconds', precision='float32')
    ours, theirs = results
    summary.update(released=args.released,
                   machine_fraction=ours.get('machine_fraction'))
    if theirs['status'] == 'ok':
      summary.update(peers.speedups('speedup_vs_transformers', theirs, ours,
                                    'forward_seconds'))
    else:
      summary['not_installed'] = [theirs['name']]
  else:
    results = timed([
        peers.prepare_ours(our_config(**fields, precision=args.precision),
                           'perceiver_jax (ours)',
                           fast_compile=args.fast_compile),
        peers.prepare_lucidrains(**fields, precision=args.peer_precision),
        peers.prepare_transformers(**fields, precision=args.peer_precision),
        peers.prepare_ours(
            our_config(**fields, num_cross_attends=1,
                       precision=args.precision),
            'perceiver_jax (ours), 1 cross-attend',
            fast_compile=args.fast_compile)], fields,
                    seconds_name='step_seconds', precision=args.precision)
    ours = results[0]
    peer_results = [r for r in results[1:3] if r['status'] == 'ok']
    summary.update(
        precision=args.precision, peer_precision=args.peer_precision,
        devices=ours.get('devices'),
        machine_fraction=ours['machine_fraction'],
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
      summary.update(peers.speedups(
          'speedup_vs_transformers_one_cross_attend', results[2], results[3],
          'step_seconds'))
  for line in (*results, summary):
    print(json.dumps(line), flush=True)


if __name__ == '__main__':
  cli.guard(main)

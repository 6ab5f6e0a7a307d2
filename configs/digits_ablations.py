r"""The paper's design questions in miniature, on the digits data.

Each study is the digits default run with the study's model and a
`get_hyper` that sweeps it (`study=...`, default 'permutation'; `seeds=1|2|3`,
default 2); each point runs as long as the digits default:

  python -m experiments.sweep \
      --config=configs/digits_ablations.py:study=permutation \
      --workdir=runs/ablations/permutation
  python -m experiments.sweep --summarize runs/ablations/permutation

- 'permutation' (Table 2): raw against permuted pixels, for the Perceiver
  (positions attached before the permutation) and a small ConvNet.
- 'sharing' (Table 7): weight sharing on and off, 4 blocks.
- 'cross_attends': 1, 2 or 4 interleaved cross-attends, or 4 at the start.
"""

import ml_collections

from configs import common
from configs import digits

STUDIES = ('permutation', 'sharing', 'cross_attends')
_OPTIONS = {'study': STUDIES, 'seeds': ('1', '2', '3')}


def _args(arg: str) -> dict[str, str]:
  args = common.parse_arg(arg, flags=('runlocal',), options=_OPTIONS)
  args.setdefault('study', 'permutation')
  args.setdefault('seeds', '2')
  return args


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  """The base run of a study: `arg` is 'study=...[,seeds=N][,runlocal]'."""
  args = _args(arg)
  config = digits.get_config('runlocal' if args['runlocal'] else '')
  config.model.architecture = 'perceiver'  # Or 'convnet'.
  config.model.convnet = ml_collections.ConfigDict(dict(
      channels=(32, 64, 128)))
  if args['study'] in ('sharing', 'cross_attends'):
    config.model.encoder.update(num_blocks=4, num_self_attends_per_block=1,
                                num_cross_attends=4)
  if not args['runlocal']:
    # One checkpoint per point is enough: a study compares final results.
    config.checkpoint.keep = 1
  return config


def get_hyper(h, arg: str = ''):
  """The study's points (see module docstring)."""
  args = _args(arg)
  seeds = h.sweep('config.seed', range(int(args['seeds'])))
  if args['study'] == 'permutation':
    return h.product([
        h.sweep('config.model.architecture', ['perceiver', 'convnet']),
        h.sweep('config.model.input.permutation_seed', [None, 0]),
        seeds,
    ])
  if args['study'] == 'sharing':
    return h.product([
        h.sweep('config.model.encoder.share_weights', [True, False]),
        seeds,
    ])
  return h.product([
      h.zip([
          h.sweep('config.model.encoder.num_cross_attends', [1, 2, 4, 4]),
          h.sweep('config.model.encoder.cross_attend_placement',
                  ['interleaved', 'interleaved', 'interleaved', 'start']),
      ]),
      seeds,
  ])

r"""The paper's design questions in miniature, on the digits data.

Each study is the digits default run (`configs/digits.py`: 1,500 steps of
64 examples, AdamW with weight decay 0.05, label smoothing 0.1) with the
study's model, and a `get_hyper` that sweeps it; run one with

  python -m experiments.sweep \
      --config=configs/digits_ablations.py:study=permutation \
      --workdir=runs/ablations/permutation
  python -m experiments.sweep --summarize runs/ablations/permutation

Studies (`study=...`, default 'permutation'; `seeds=1|2|3`, default 2):

- 'permutation' (Table 2): raw versus permuted pixels (one fixed
  permutation, `model.input.permutation_seed=0`) for the Perceiver and for
  a small ConvNet baseline (`model.architecture='convnet'`). The
  Perceiver's Fourier features are attached before the permutation, so it
  sees the same set of inputs; the ConvNet sees a scrambled image.
- 'sharing' (Table 7): weight sharing on and off in a 4-block model with 4
  interleaved cross-attends (one self-attend per block).
- 'cross_attends': 1, 2 or 4 cross-attends interleaved, or 4 at the start,
  in the same 4-block model.
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

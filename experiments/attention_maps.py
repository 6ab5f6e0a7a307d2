r"""Draws cross-attention maps of a trained Perceiver over input images.

  python -m experiments.attention_maps --workdir=DIR [--num_images=4] \
      [--num_latents=4] [--step=N] [--out=DIR/attention_maps]

For the first `num_images` evaluation images, writes `OUT/image_<i>.png`:
one row per cross-attend, the image and then a few latents' attention over
the pixel grid (heads averaged; permuted runs are mapped back to the grid).
"""

import os

from absl import flags
from absl import logging

from perceiver_jax import host_memory
from perceiver_jax import cli
from perceiver_jax.train import evaluation

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_OUT = flags.DEFINE_string('out', None,
                           'Output directory (default WORKDIR/attention_maps).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 4, 'Evaluation images.')
_NUM_LATENTS = flags.DEFINE_integer('num_latents', 4,
                                    'Latents per cross-attend.')
_STEP = flags.DEFINE_integer('step', None,
                             'Checkpoint step (default: the newest).')


def main(argv):
  host_memory.keep_freed_memory()  # Process-wide, before JAX allocates.
  cli.no_arguments(argv)
  evaluation.check_workdir(_WORKDIR.value, None)
  if _STEP.value is not None and not os.path.isdir(os.path.join(
      _WORKDIR.value, 'checkpoints', str(_STEP.value))):
    raise cli.UsageError(f'--step={_STEP.value}: no such checkpoint in '
                         f'{_WORKDIR.value}/checkpoints; leave --step out '
                         'for the newest.')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # pylint: disable=g-import-not-at-top
  from perceiver_jax import pictures
  from perceiver_jax.train import launch
  # pylint: enable=g-import-not-at-top
  launch.enable_compilation_cache()
  out = _OUT.value or os.path.join(_WORKDIR.value, 'attention_maps')
  for path in pictures.draw_attention_maps(
      _WORKDIR.value, out, num_images=_NUM_IMAGES.value,
      num_latents=_NUM_LATENTS.value, step=_STEP.value):
    print(path)


if __name__ == '__main__':
  cli.run(main)

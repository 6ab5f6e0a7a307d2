r"""Imports a transformers Perceiver checkpoint as a perceiver_jax workdir.

  python -m experiments.import_checkpoint --from=DIR --workdir=WORKDIR

DIR holds `config.json` and `model.safetensors` of one of
`interop.transformers_format.ARCHITECTURES` (the three ImageNet
classifiers). WORKDIR (new or empty) gets what a training run leaves:
`config.json` (configs/imagenet.py with the checkpoint's model) and an orbax
checkpoint of step 0, which `experiments.evaluate` and
`experiments.attention_maps` read unchanged. Evaluation uses transformers'
image preprocessing, sized by DIR's `preprocessor_config.json`. A bad
checkpoint is refused with one `error:` line and nothing is written.
"""

from absl import flags

from perceiver_jax import cli
from perceiver_jax.interop import workdirs

_FROM = flags.DEFINE_string('from', None, 'The transformers checkpoint '
                            'directory.', required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'The workdir to create.',
                               required=True)
_CONFIG = flags.DEFINE_string('config_arg', '', 'The argument string of '
                              'configs/imagenet.py (data settings).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'The TFDS data directory '
                                'holding the prepared ImageNet, written to '
                                'config.data.data_dir (default: '
                                '$TFDS_DATA_DIR at evaluation).')


def main(argv):
  cli.no_arguments(argv)
  from configs import imagenet  # pylint: disable=g-import-not-at-top
  config = imagenet.get_config(_CONFIG.value)
  if _DATA_DIR.value is not None:
    config.data.data_dir = _DATA_DIR.value
  print(workdirs.import_checkpoint(_FROM.value, _WORKDIR.value, config))


if __name__ == '__main__':
  cli.run(main)

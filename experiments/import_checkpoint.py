r"""Imports a transformers Perceiver checkpoint as a perceiver_jax workdir.

  python -m experiments.import_checkpoint --from=DIR --workdir=WORKDIR

DIR is a transformers checkpoint directory (`config.json` and
`model.safetensors`, e.g. `deepmind/vision-perceiver-fourier` downloaded with
huggingface_hub). WORKDIR (new or empty) receives what a training run would
leave there: `config.json` (configs/imagenet.py with `config.model` replaced
by the checkpoint's architecture) and an orbax checkpoint of step 0 under
`checkpoints/`, so that `experiments.evaluate --workdir=WORKDIR` and
`experiments.attention_maps` read it unchanged (`--data_dir`: where the
prepared ImageNet is, else $TFDS_DATA_DIR then). The image size and centre
crop come from DIR's `preprocessor_config.json` when present (default 224
and 224/256), and evaluation uses transformers' image preprocessing
(`config.data.eval_preprocessing='transformers'`).

Supported: `perceiver_jax.interop.transformers_format.ARCHITECTURES` (the
three ImageNet classifiers). A bad checkpoint (unreadable or truncated
weights, another architecture, a tensor with no place or a shape that does
not fit, pickle-only weights) is refused with one `error:` line, exit
status 2, and nothing is written.
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

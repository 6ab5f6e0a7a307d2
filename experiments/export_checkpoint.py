r"""Exports a run's checkpoint in transformers' Perceiver format.

  python -m experiments.export_checkpoint --workdir=WORKDIR --to=DIR

Reads WORKDIR's `config.json` and newest checkpoint (or `--step`) and writes
DIR (new or empty): `config.json` and `model.safetensors` that
`transformers.PerceiverForImageClassification{Fourier,Learned,
ConvProcessing}.from_pretrained(DIR)` loads with no missing or unexpected
weight. Only Perceiver IO-shaped models export: one cross-attend, shared
self-attends, `config.model.head='perceiver_io'`, and an input that one of
those classes reads (`interop.transformers_format.transformers_config`);
anything else is refused with one `error:` line naming the setting, exit
status 2, and nothing written.
"""

from absl import flags

from perceiver_jax import cli
from perceiver_jax.interop import workdirs

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory.',
                               required=True)
_TO = flags.DEFINE_string('to', None, 'The transformers checkpoint '
                          'directory to write.', required=True)
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step (default: '
                             'the newest).')


def main(argv):
  cli.no_arguments(argv)
  print(workdirs.export_checkpoint(_WORKDIR.value, _TO.value, _STEP.value))


if __name__ == '__main__':
  cli.run(main)

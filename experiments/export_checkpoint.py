r"""Exports a run's checkpoint in transformers' Perceiver format.

  python -m experiments.export_checkpoint --workdir=WORKDIR --to=DIR

Writes WORKDIR's newest checkpoint (or `--step`) to DIR (new or empty) as
`config.json` and `model.safetensors` that
`transformers.PerceiverForImageClassification*.from_pretrained(DIR)` loads
whole. Only Perceiver IO-shaped models export (one cross-attend, shared
self-attends, `head='perceiver_io'`, an input transformers reads); anything
else is refused with one `error:` line naming the setting.
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

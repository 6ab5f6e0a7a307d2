r"""Parameters per module and forward FLOPs of a config's classifier.

  python -m experiments.model_summary --config=configs/imagenet.py
  python -m experiments.model_summary --config=configs/imagenet.py \
      --config.model.encoder.share_weights=False

Prints parameters by weight set, the schedule and the nominal forward
FLOPs per example (`perceiver_jax.benchmarking.summary`), then one JSON line:
`{"params": ..., "flops_per_example": ..., ...}`. Runs in seconds on a CPU.
"""

import json
from typing import Any

from absl import flags
import ml_collections

from perceiver_jax import cli
from perceiver_jax.benchmarking import summary


def report(config: ml_collections.ConfigDict, *,
           detail: bool = False) -> dict[str, Any]:
  """Prints the table (every parameter too if `detail`), then the JSON
  line, and returns the JSON line's contents."""
  counted = summary.summarize(config)
  print(summary.format_table(counted))
  if detail:
    print()
    for name, shape in counted['param_list']:
      print(f'{name}  {list(shape)}')
  result = {k: counted[k] for k in (
      'params', 'flops_per_example', 'flops_per_example_with_kv_reuse')}
  print(json.dumps(result), flush=True)
  return result


def main(argv: list[str]) -> None:
  cli.no_arguments(argv)
  report(flags.FLAGS.config, detail=flags.FLAGS.detail)


if __name__ == '__main__':
  cli.define_config_flag('configs/digits.py', 'The experiment config file.')
  flags.DEFINE_bool('detail', False,
                    'Also list every parameter array with its shape.')
  cli.run(main)

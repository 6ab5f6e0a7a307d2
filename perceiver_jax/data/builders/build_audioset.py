r"""Command line: prepares the `audioset` TFDS dataset and prints its report.

  python -m perceiver_jax.data.builders.build_audioset \
      --manual_dir=/data/audioset_raw --data_dir=/data/tfds \
      --config=audio_video --num_workers=16

Prints each split's counts and the path of `build_report.json`. (Run as
`__main__`, the builder module would register the dataset twice.)
"""

import logging
import os
from typing import Optional, Sequence

from perceiver_jax import cli
from perceiver_jax.data.builders import audioset


def main(argv: Optional[Sequence[str]] = None) -> None:
  """Parses flags, builds the dataset and prints the report summary."""
  parser = cli.ArgumentParser(
      description='Prepare AudioSet (TFDS) from its CSVs and your clips.')
  parser.add_argument('--manual_dir', required=True,
                      help='Folder with the four CSVs and clips/.')
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data dir (default: ~/tensorflow_datasets).')
  parser.add_argument('--config', default='audio',
                      choices=[c.name for c in
                               audioset.Audioset.BUILDER_CONFIGS])
  parser.add_argument('--num_workers', type=int, default=1,
                      help='Threads decoding clips.')
  args = parser.parse_args(argv)
  if not os.path.isdir(os.path.expanduser(args.manual_dir)):
    raise cli.UsageError(
        f'--manual_dir={args.manual_dir} is not a directory; give the folder '
        "holding AudioSet's four CSVs and clips/ (see docs/audioset.md).")
  logging.basicConfig(level=logging.INFO)
  # The builder counts the rows with an ETA; TFDS's bars would share its line.
  audioset.tfds.disable_progress_bar()
  builder = audioset.build(args.manual_dir, args.data_dir, args.config,
                           args.num_workers)
  report = audioset.read_report(builder)
  for split, counts in report['splits'].items():
    print(f'{split}: {counts["num_written"]} of {counts["num_rows"]} rows '
          f'written, {counts["num_missing"]} missing, {counts["num_failed"]} '
          f'failed, {counts["num_duplicates"]} duplicates')
  report_path = os.path.join(os.fspath(builder.data_dir),
                             audioset.REPORT_FILE)
  print(f'Report: {report_path}')


if __name__ == '__main__':
  cli.guard(main)

"""Preparing a TFDS dataset so that a failed build leaves nothing behind.

TFDS writes a skeleton into the data dir (`<name>/.config/metadata.json`,
`downloads/`, an `.incomplete` folder) before it reads the first input file,
and leaves it there when the build fails; a later run may take it for a
prepared dataset. `prepare` instead builds into a temporary data dir next to
the real one and moves the finished dataset folder into place only when the
build succeeded and wrote at least one example. On any failure the data dir
is as it was (absent if it was absent), and the error propagates unchanged:
each builder names the file it failed on (the tar, the zip, the CSV).
"""

import os
import shutil
import tempfile
from typing import Callable, Optional

import tensorflow_datasets as tfds


class EmptyBuildError(ValueError):
  """The build would hold no example at all."""


def _existing_ancestor(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.isdir(path):
    path = os.path.dirname(path)
  return path


def prepare(make_builder: Callable[[Optional[str]], tfds.core.DatasetBuilder],
            data_dir: Optional[str],
            manual_dir: str) -> tfds.core.DatasetBuilder:
  """Builds `make_builder(data_dir)`'s dataset, all or nothing.

  Args:
    make_builder: the builder for a data dir (constructing one writes
      nothing).
    data_dir: the TFDS data dir (None: TFDS's default).
    manual_dir: the folder the build reads.

  Returns:
    The builder of the prepared dataset in `data_dir`.

  Raises:
    EmptyBuildError: the build wrote no example.
    Exception: whatever the build raised; `data_dir` is untouched.
  """
  final = make_builder(data_dir)
  # What `is_prepared()` asks, without its warning about a missing folder.
  if os.path.exists(os.path.join(os.fspath(final.data_dir),
                                 'dataset_info.json')):
    return final
  root = os.fspath(final._data_dir_root)  # pylint: disable=protected-access
  # The dataset folder below the root: <name>/<config>/<version>.
  relative = os.path.relpath(os.fspath(final.data_dir), root)
  # Next to the data dir (same file system, so the move is a rename), in
  # its nearest existing ancestor: a data dir that did not exist stays so.
  scratch = tempfile.mkdtemp(prefix=f'.{final.name}-building-',
                             dir=_existing_ancestor(os.path.dirname(root)))
  try:
    builder = make_builder(scratch)
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except AssertionError as e:
      # TFDS's way of refusing a split that got no example (every file of
      # it skipped): a user's problem, not a bug.
      if 'No examples were yielded' not in str(e):
        raise
      raise EmptyBuildError(
          f'{manual_dir} holds no readable example for a split ({e}); nothing '
          f'was written to {root}.') from None
    total = sum(split.num_examples for split in builder.info.splits.values())
    if not total:
      raise EmptyBuildError(
          f'{manual_dir} holds no readable example: nothing was written to '
          f'{root}.')
    target = os.path.join(root, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(os.path.join(scratch, relative), target)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return make_builder(data_dir)

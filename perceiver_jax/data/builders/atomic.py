"""Preparing a TFDS dataset so that a failed build leaves nothing behind.

TFDS leaves a skeleton in the data dir when a build fails, which a later
run may take for a prepared dataset. `prepare` builds into a temporary data
dir beside it and moves the dataset in only once it holds examples.
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
  """Builds `make_builder(data_dir)`'s dataset, all or nothing; returns it.

  Raises EmptyBuildError when no example was written, else the build's own
  error, with `data_dir` untouched.
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

"""ImageNet (ILSVRC-2012) from TFDS `imagenet2012`, for the data API.

Batches: 'image' float32 `[*batch_dims, H, W, 3]` (normalised), 'label'
int32 `[*batch_dims]` (float32 `[..., num_classes]` under MixUp/CutMix) and
'mask'. Training: Inception crop, resize, flip, RandAugment, MixUp/CutMix;
evaluation: central crop (or transformers' preprocessing, for imported
checkpoints). `config.mock` reads TFDS's mock data. TFDS cannot download
ImageNet; prepare it once from the manual download with

  python -m perceiver_jax.data.imagenet --manual_dir=DIR [--data_dir=DIR]
"""

import contextlib
import dataclasses
import functools
import os
import tarfile
from typing import Any, Callable, Iterator, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax import checks
from perceiver_jax import cli
from perceiver_jax import progress
from perceiver_jax.data import augment
from perceiver_jax.data import in_memory
from perceiver_jax.data import pipeline
from perceiver_jax.data import transformers_preprocessing
from perceiver_jax.data.builders import atomic

TFDS_NAME = 'imagenet2012'
TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
DEFAULT_MOCK_EXAMPLES = 20
# Files per epoch read at once in training (an epoch's file order is
# shuffled, and the examples of these files are interleaved).
_TRAIN_CYCLE_LENGTH = 16

PREPARE_INSTRUCTIONS = """\
TFDS cannot download ImageNet; prepare it once from the official files:
  1. Register at https://image-net.org/download-images and download
     ILSVRC2012_img_train.tar (about 138 GB) and ILSVRC2012_img_val.tar
     (about 6.3 GB).
  2. Put both tar files, unextracted, in one folder, e.g. ~/imagenet_manual.
  3. Build the TFDS dataset (needs about 150 GB more disk, a few hours):
       python -m perceiver_jax.data.imagenet --manual_dir=~/imagenet_manual \\
           --data_dir={data_dir}
     (or, with apache-beam installed, `tfds build imagenet2012
     --manual_dir=~/imagenet_manual --data_dir={data_dir}`).
Then pass --config.data.data_dir={data_dir} or set TFDS_DATA_DIR. To try the
pipeline without ImageNet, use TFDS mock data:
  --config=configs/imagenet.py:runlocal,mock"""


class DatasetNotPreparedError(FileNotFoundError):
  """ImageNet is not prepared for TFDS in the data directory."""


def data_dir_of(config: ml_collections.ConfigDict) -> Optional[str]:
  """`config.data_dir`, else `$TFDS_DATA_DIR`, else None (TFDS default)."""
  data_dir = config.get('data_dir') or os.environ.get('TFDS_DATA_DIR')
  return os.path.expanduser(data_dir) if data_dir else None


def _prepared_builder(config: ml_collections.ConfigDict
                      ) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir_of(config))
  if not builder.is_prepared():
    root = os.path.dirname(os.path.dirname(builder.data_dir))
    raise DatasetNotPreparedError(
        f'ImageNet (TFDS {TFDS_NAME!r} version {builder.version}) is not '
        f'prepared in {root} (no {builder.data_dir}).\n'
        + PREPARE_INSTRUCTIONS.format(data_dir=root))
  return builder


def _mock_examples(config: ml_collections.ConfigDict) -> int:
  num = int(config.get('mock_num_examples', DEFAULT_MOCK_EXAMPLES))
  if num < 1:
    raise ValueError(f'mock_num_examples must be positive, got {num}.')
  return num


def _split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f'Unknown ImageNet split {split!r}; prepared splits: '
                     f'{sorted(builder.info.splits)}.') from e


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Examples in `split` (all hosts); `mock_num_examples` in mock mode."""
  if config.get('mock', False):
    return _mock_examples(config)
  return _split_size(_prepared_builder(config), split)


def _select(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  return {'image': example['image'], 'label': example['label']}


@dataclasses.dataclass
class Source:
  """One host's records of a split: seeded epochs, an ordered pass, counts."""
  make_epoch: pipeline.MakeEpoch
  ordered: tf.data.Dataset
  num_examples: int
  total_examples: int

  @classmethod
  def from_records(cls, records: tf.data.Dataset, total_examples: int, *,
                   process_index: int = 0, process_count: int = 1
                   ) -> 'Source':
    """A source over the finite records of a whole split; this host keeps every
    `process_count`-th record.
    """
    records = records.shard(process_count, process_index).map(_select)
    return cls(lambda epoch_seed: records, records,
               len(range(total_examples)[in_memory.host_shard(
                   total_examples, process_index, process_count)]),
               total_examples)


def tfds_source(builder: tfds.core.DatasetBuilder, split: str,
                 process_index: int, process_count: int) -> Source:
  """Reads this host's slice of a prepared split straight from its files."""
  total = _split_size(builder, split)
  split_info = builder.info.splits[
      pipeline.host_split(split, process_index, process_count)]
  instructions = split_info.file_instructions
  files = tf.data.Dataset.from_tensor_slices((
      [os.fspath(i.filename) for i in instructions],
      np.array([i.skip for i in instructions], np.int64),
      np.array([-1 if i.take is None else i.take for i in instructions],
               np.int64)))
  features = builder.info.features
  decoders = {'image': tfds.decode.SkipDecoding()}

  def read(filename, skip, take):
    return tf.data.TFRecordDataset(filename).skip(skip).take(take)

  def parse(serialized):
    return _select(features.deserialize_example(serialized,
                                                 decoders=decoders))

  def make_epoch(epoch_seed: tf.Tensor) -> tf.data.Dataset:
    shuffled = files.shuffle(len(instructions), seed=epoch_seed,
                             reshuffle_each_iteration=False)
    records = shuffled.interleave(
        read, cycle_length=min(_TRAIN_CYCLE_LENGTH, len(instructions)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)

  ordered = files.flat_map(read).map(parse,
                                     num_parallel_calls=tf.data.AUTOTUNE)
  return Source(make_epoch, ordered, split_info.num_examples, total)


def dataset_source(make_builder: Callable[[], tfds.core.DatasetBuilder],
                   split: str, total_examples: int, *, mock: bool,
                   process_index: int, process_count: int) -> Source:
  """A source over `as_dataset(split)` with undecoded images; with `mock`,
  TFDS mock data of `total_examples` (mock data ignores split slices)."""
  # Mocked only while the dataset is built, so that loaders do not interfere.
  with (tfds.testing.mock_data(num_examples=total_examples) if mock
        else contextlib.nullcontext()):
    records = make_builder().as_dataset(
        split=split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()})
  return Source.from_records(records, total_examples,
                             process_index=process_index,
                             process_count=process_count)


def _source(split: str, config: ml_collections.ConfigDict,
            process_index: int, process_count: int) -> Source:
  """The prepared split, or TFDS mock data sharded by example."""
  if config.get('mock', False):
    return dataset_source(lambda: tfds.builder(TFDS_NAME), split,
                          _mock_examples(config), mock=True,
                          process_index=process_index,
                          process_count=process_count)
  return tfds_source(_prepared_builder(config), split, process_index,
                      process_count)


def _image_shape(config: ml_collections.ConfigDict) -> tuple[int, int]:
  shape = tuple(int(n) for n in config.image_shape)
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f'config.image_shape must be (height, width), got '
                     f'{config.image_shape!r}.')
  return shape


@functools.lru_cache(maxsize=8)
def _traced_train_augment(
    image_shape: tuple[int, int], layers: int, magnitude: float
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """`augment.train_augment` traced once per process (it takes seconds)."""
  return tf.function(
      lambda image, seed: augment.train_augment(
          image, seed, randaugment_layers=layers,
          randaugment_magnitude=magnitude),
      input_signature=(tf.TensorSpec([*image_shape, 3], tf.uint8),
                       tf.TensorSpec([2], tf.int64)))


def training_batches(source: Source, config: ml_collections.ConfigDict, *,
                     batch_dims: Sequence[int], seed: int, start_step: int,
                     process_index: int) -> pipeline.BatchIterator:
  """Training batches from a source (see `load`)."""
  image_shape = _image_shape(config)
  layers = int(config.randaugment_layers)
  magnitude = float(config.randaugment_magnitude)
  # Checks the RandAugment settings now rather than inside tf.data.
  if layers < 0 or not 0 <= magnitude <= 10:
    raise ValueError(f'randaugment_layers must be >= 0 and '
                     f'randaugment_magnitude in [0, 10], got {layers} and '
                     f'{magnitude}.')

  def decode(record, seed_):
    return {'image': augment.train_crop(record['image'], seed_,
                                        image_shape=image_shape),
            'label': tf.cast(record['label'], tf.int32)}

  augment_image = _traced_train_augment(image_shape, layers, magnitude)

  def augment_fn(features, seed_):
    return {'image': augment_image(features['image'], seed_),
            'label': features['label']}

  return source_training_batches(
      source, config, decode_fn=decode, augment_fn=augment_fn,
      batch_dims=batch_dims, seed=seed, start_step=start_step,
      process_index=process_index)


def source_training_batches(source: Source, config: ml_collections.ConfigDict,
                            **kwargs: Any) -> pipeline.BatchIterator:
  """`pipeline.training_batches` over a source with `config`'s MixUp/CutMix,
  shuffle buffer and threads; `kwargs` go to it."""
  mixup_alpha = float(config.mixup_alpha or 0.0)
  cutmix_alpha = float(config.cutmix_alpha or 0.0)
  batch_fn = None
  if mixup_alpha > 0 or cutmix_alpha > 0:
    def batch_fn(batch, seed):
      images, labels = augment.mix_batch(
          batch['image'], batch['label'], seed,
          num_classes=int(config.num_classes), mixup_alpha=mixup_alpha,
          cutmix_alpha=cutmix_alpha)
      return {'image': images, 'label': labels}

  return pipeline.training_batches(
      source.make_epoch, num_examples=source.num_examples, batch_fn=batch_fn,
      shuffle_buffer=int(config.shuffle_buffer),
      threadpool_size=int(config.get('threadpool_size', 0)), **kwargs)


# `config.data.eval_preprocessing` -> the evaluation image function: ours, or
# transformers' Perceiver image processor's (for imported checkpoints).
EVAL_PREPROCESSING = {
    'paper': augment.eval_image,
    'transformers': transformers_preprocessing.eval_image,
}


def evaluation_batches(
    source: Source, config: ml_collections.ConfigDict, *,
    batch_dims: Sequence[int], process_count: int,
    image_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
    skip_errors: bool = False) -> pipeline.BatchIterator:
  """Evaluation batches from a source (see `load`).

  `image_fn(encoded)` is by default `config.eval_preprocessing`'s ImageNet
  image; `skip_errors` drops the records it fails on.
  """
  if image_fn is None:
    crop_fraction = float(config.eval_crop_fraction)
    if not 0.0 < crop_fraction <= 1.0:
      raise ValueError(f'eval_crop_fraction must be in (0, 1], got '
                       f'{crop_fraction}.')
    image_fn = functools.partial(
        EVAL_PREPROCESSING[checks.one_of(
            config.get('eval_preprocessing', 'paper'),
            'config.data.eval_preprocessing', tuple(EVAL_PREPROCESSING))],
        image_shape=_image_shape(config), crop_fraction=crop_fraction)

  def preprocess(record):
    return {'image': image_fn(record['image']),
            'label': tf.cast(record['label'], tf.int32)}

  num_batches = in_memory.num_eval_batches(
      source.total_examples, pipeline.batch_size_of(batch_dims),
      process_count)
  return pipeline.evaluation_batches(
      source.ordered, batch_dims=batch_dims, preprocess_fn=preprocess,
      num_batches=num_batches, skip_errors=skip_errors,
      threadpool_size=int(config.get('threadpool_size', 0)))


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: ml_collections.ConfigDict, seed: int = 0,
         start_step: int = 0, process_index: Optional[int] = None,
         process_count: Optional[int] = None
         ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of ImageNet `split` for this host (a `pipeline.BatchIterator`).

  Every host yields as many evaluation batches. Raises
  DatasetNotPreparedError, saying how to prepare it, when it is not built.
  """
  pipeline.hide_gpus_from_tf()
  process_index, process_count = pipeline.process_info(process_index,
                                                       process_count)
  pipeline.batch_size_of(batch_dims)
  source = _source(split, config, process_index, process_count)
  if is_training:
    return training_batches(source, config, batch_dims=batch_dims, seed=seed,
                            start_step=start_step,
                            process_index=process_index)
  return evaluation_batches(source, config, batch_dims=batch_dims,
                            process_count=process_count)


def _check_tar(path: str) -> int:
  """The member count of the tar `path`, reading headers through to its end.

  Raises ValueError, naming it, if the archive is truncated or not a tar.
  """
  try:
    with tarfile.open(path, 'r:') as archive:
      members = archive.getmembers()
  except (tarfile.TarError, EOFError, OSError) as e:
    reason = ' '.join(str(e).split())
    raise ValueError(f'{path} is not a readable tar archive '
                     f'({type(e).__name__}: {reason}).') from None
  # tarfile takes a file cut inside a member's data for a shorter archive.
  size = os.path.getsize(path)
  for member in members:
    if member.offset_data + member.size > size:
      raise ValueError(
          f'{path} is not a readable tar archive (truncated: its member '
          f'{member.name} ends at byte {member.offset_data + member.size}, '
          f'the file has {size} bytes).')
  return len(members)


def prepare(manual_dir: str, data_dir: Optional[str] = None) -> str:
  """Builds TFDS imagenet2012 from the tars in `manual_dir`; returns its path.

  All or nothing (`builders.atomic.prepare`): the tars are checked first and
  a failed build leaves `data_dir` as it was.
  """
  manual_dir = os.path.expanduser(manual_dir)
  present = [os.path.join(manual_dir, f) for f in TARS
             if os.path.exists(os.path.join(manual_dir, f))]
  if not present:
    raise FileNotFoundError(
        f'Neither {TARS[0]} nor {TARS[1]} is in {manual_dir}.\n'
        + PREPARE_INSTRUCTIONS.format(data_dir=data_dir or 'DATA_DIR'))
  for path in present:
    if not _check_tar(path):
      raise atomic.EmptyBuildError(f'{path} holds no file; nothing was '
                                   'written.')
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  builder = atomic.prepare(_tracked_builder, data_dir, manual_dir)
  return os.fspath(builder.data_dir)


# Images per split of ILSVRC-2012 (the expected totals of the progress).
SPLIT_SIZES = {'train': 1_281_167, 'validation': 50_000, 'test': 100_000}


def _tracked_builder(data_dir: Optional[str]) -> tfds.core.DatasetBuilder:
  """The builder, counting what `_generate_examples` yields (rate, ETA)."""
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  generate = builder._generate_examples  # pylint: disable=protected-access

  def tracked(**kwargs):
    split = ('test' if not kwargs.get('labels_exist', True) else
             'validation' if kwargs.get('validation_labels') else 'train')
    yield from progress.track(generate(**kwargs), f'ImageNet {split}',
                              total=SPLIT_SIZES[split], unit='images')

  builder._generate_examples = tracked  # pylint: disable=protected-access
  return builder


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = cli.ArgumentParser(
      description='Prepare TFDS imagenet2012 from the manual download.')
  parser.add_argument('--manual_dir', required=True,
                      help='folder with ILSVRC2012_img_{train,val}.tar')
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data dir (default: $TFDS_DATA_DIR or '
                      '~/tensorflow_datasets)')
  args = parser.parse_args(argv)
  manual_dir = os.path.expanduser(args.manual_dir)
  if not any(os.path.isfile(os.path.join(manual_dir, t)) for t in TARS):
    raise cli.UsageError(
        f'--manual_dir={args.manual_dir} holds neither {TARS[0]} nor '
        f'{TARS[1]}; download them from https://image-net.org into one '
        'folder and give that folder (python -m perceiver_jax.data.imagenet '
        '--help).')
  pipeline.hide_gpus_from_tf()
  # Ours counts the examples with an ETA; TFDS's bars would share its line.
  tfds.disable_progress_bar()
  print(f'Prepared {prepare(args.manual_dir, args.data_dir)}')


if __name__ == '__main__':
  cli.guard(main)

"""Image classification on any TFDS image dataset or a folder of images.

`config.dataset` names a TFDS dataset with an 'image' and a ClassLabel
'label' feature ('cifar10', 'oxford_flowers102', ...), or is 'folder':
`config.folder/<split>/<class>/<files>` (TFDS's ImageFolder layout), PNG or
JPEG (anything `tf.io.decode_image` reads), any size, grey or RGB, classes
named by the sorted subfolders of the training split.

Batches: 'image' float32 [*batch_dims, H, W, channels] (H, W =
`config.image_shape`), 'label' int32 [*batch_dims] (float32 soft labels
[..., num_classes] under MixUp/CutMix), 'mask' float32 [*batch_dims].

Training: Inception crop and flip (`random_crop`, `flip`), then the
ImageNet pipeline's RandAugment and MixUp/CutMix, off by default.
Evaluation: the central `eval_crop_fraction` crop, resized. Undecodable
images are skipped and counted in `num_skipped`.
"""

import functools
import os
from typing import Iterator, Optional, Sequence

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from perceiver_jax.data import augment
from perceiver_jax.data import imagenet
from perceiver_jax.data import in_memory
from perceiver_jax.data import pipeline
from perceiver_jax.data import transformers_preprocessing

FOLDER = 'folder'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.gif', '.bmp')
NORMALIZATIONS = ('imagenet', 'unit')


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not prepared, or a folder is not in the layout."""


# ImageFolder layout.


def _subfolders(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if os.path.isdir(os.path.join(path, d)))


@functools.lru_cache(maxsize=16)
def _scan_split(folder: str, split: str) -> tuple[tuple[str, ...],
                                                   tuple[str, ...],
                                                   tuple[int, ...]]:
  """(class names, files, labels) of `folder/split`, sorted."""
  top = os.path.expanduser(folder)
  root = os.path.join(top, split)
  if not os.path.isdir(root):
    held = (f'it holds {_subfolders(top)}' if os.path.isdir(top)
            else 'it does not exist')
    raise DatasetNotPreparedError(
        f'config.data.folder={folder} has no {split!r} split folder '
        f'({held}); expected DIR/<split>/<class>/<image files>.')
  classes = _subfolders(root)
  files, labels = [], []
  for label, name in enumerate(classes):
    found = sorted(f for f in os.listdir(os.path.join(root, name))
                   if f.lower().endswith(IMAGE_SUFFIXES))
    if not found:
      raise DatasetNotPreparedError(
          f'class folder {os.path.join(root, name)!r} holds no image '
          f'({", ".join(IMAGE_SUFFIXES)} files).')
    files += [os.path.join(root, name, f) for f in found]
    labels += [label] * len(found)
  if not files:
    raise DatasetNotPreparedError(
        f'{root} holds no class folder of images; expected '
        f'{root}/<class>/<image files>.')
  return tuple(classes), tuple(files), tuple(labels)


def _folder_split(config: ml_collections.ConfigDict, split: str):
  """Files and labels of a folder split, labelled by the training classes."""
  train_classes = _scan_split(config.folder, config.train_split)[0]
  classes, files, labels = _scan_split(config.folder, split)
  unknown = sorted(set(classes) - set(train_classes))
  if unknown:
    raise ValueError(f'split {split!r} of {config.folder} has classes the '
                     f'{config.train_split!r} split lacks: {unknown}.')
  index = {name: i for i, name in enumerate(train_classes)}
  return files, [index[classes[label]] for label in labels]


# TFDS datasets.


def _builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  try:
    builder = tfds.builder(config.dataset,
                           data_dir=imagenet.data_dir_of(config))
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f'config.data.dataset={config.dataset!r} is neither '
                     f'{FOLDER!r} nor a TFDS dataset name.') from None
  features = dict(getattr(builder.info.features, 'items', dict)())
  if not (isinstance(features.get('image'), tfds.features.Image)
          and isinstance(features.get('label'), tfds.features.ClassLabel)):
    raise ValueError(f'TFDS {config.dataset!r} is not an image '
                     'classification dataset (no Image "image" and '
                     'ClassLabel "label" features).')
  if not config.get('mock') and not builder.is_prepared():
    root = os.path.dirname(os.path.dirname(builder.data_dir))
    raise DatasetNotPreparedError(
        f'TFDS {config.dataset!r} is not prepared in {root}; run `tfds '
        f'build {config.dataset} --data_dir={root}` once (or pass '
        '--config.data.data_dir=DIR where it is prepared).')
  return builder


def num_examples(split: str, config: ml_collections.ConfigDict) -> int:
  """Examples in `split` ('train' means `config.train_split`)."""
  split = config.train_split if split == 'train' else split
  if config.dataset == FOLDER:
    return len(_folder_split(config, split)[0])
  if config.get('mock'):
    return int(config.mock_num_examples)
  builder = _builder(config)
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise ValueError(f'Unknown split {split!r} of TFDS {config.dataset!r}; '
                     f'prepared splits: {sorted(builder.info.splits)}.'
                     ) from e


def _first_image_shape(files: list[str]) -> tuple[int, ...]:
  """The shape of the first file that decodes (undecodable ones are
  skipped in training too)."""
  for file in files:
    try:
      with open(file, 'rb') as f:
        return tuple(tf.io.decode_image(f.read(),
                                        expand_animations=False).shape)
    except (OSError, tf.errors.OpError):
      continue
  raise ValueError(f'No image of the training split decodes (first: '
                   f'{files[0]}).')


def complete_config(config: ml_collections.ConfigDict) -> None:
  """Fills `config.data`'s data-decided fields left at None or empty, at
  launch so that overrides reach them: num_classes, label_names,
  image_shape (the TFDS feature's or the first training image's) and
  num_train_examples."""
  data = config.data
  if data.dataset == FOLDER:
    if not data.folder:
      raise ValueError('dataset=folder needs --config.data.folder=DIR '
                       '(DIR/<split>/<class>/<image files>).')
    names, files, _ = _scan_split(data.folder, data.train_split)
    shape = None if data.image_shape else _first_image_shape(files)
  else:
    builder = _builder(data)
    names = builder.info.features['label'].names
    shape = builder.info.features['image'].shape
  if not data.label_names:
    data.label_names = tuple(names)
  if data.num_classes is None:
    data.num_classes = len(names)
  if not data.image_shape:
    if shape is None or None in shape[:2]:
      raise ValueError(f'TFDS {data.dataset!r} has images of varied sizes; '
                       'set --config.data.image_shape=(H,W).')
    data.image_shape = tuple(int(n) for n in shape[:2])
  if data.num_train_examples is None:
    data.num_train_examples = num_examples('train', data)


# Records and preprocessing.


def _source(split: str, config: ml_collections.ConfigDict,
            process_index: int, process_count: int) -> imagenet.Source:
  if config.dataset != FOLDER:
    return imagenet.dataset_source(
        lambda: _builder(config), split, num_examples(split, config),
        mock=bool(config.get('mock')), process_index=process_index,
        process_count=process_count)
  files, labels = _folder_split(config, split)
  records = tf.data.Dataset.from_tensor_slices(
      (list(files), np.asarray(labels, np.int64))).map(
          lambda path, label: {'image': tf.io.read_file(path), 'label': label})
  return imagenet.Source.from_records(records, len(files),
                                      process_index=process_index,
                                      process_count=process_count)


def _decode(image_bytes: tf.Tensor, channels: int) -> tf.Tensor:
  """Any encoded image -> uint8 [h, w, channels] (grey <-> RGB converted)."""
  image = tf.io.decode_image(image_bytes, channels=channels,
                             expand_animations=False)
  image.set_shape([None, None, channels])
  return image


def _crop(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  """The `[y, x, h, w]` window of a decoded `[height, width, C]` image."""
  top, left, height, width = tf.unstack(window)
  return image[top:top + height, left:left + width]


def _normalize(image: tf.Tensor, config: ml_collections.ConfigDict
               ) -> tf.Tensor:
  if config.normalization == 'imagenet':
    return augment.normalize(image)
  return tf.cast(image, tf.float32) / 255.0


def _check(config: ml_collections.ConfigDict) -> tuple[int, int]:
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f'config.data.normalization must be one of '
                     f'{NORMALIZATIONS}, got {config.normalization!r}.')
  if config.channels not in (1, 3):
    raise ValueError(f'config.data.channels must be 1 or 3, got '
                     f'{config.channels!r}.')
  needs_rgb = (config.normalization == 'imagenet'
               or config.randaugment_layers > 0
               or config.eval_preprocessing == 'transformers')
  if config.channels != 3 and needs_rgb:
    raise ValueError('config.data.channels=1 needs normalization="unit", '
                     'no RandAugment and eval_preprocessing="paper".')
  return imagenet._image_shape(config)  # pylint: disable=protected-access


def _training_batches(source: imagenet.Source,
                      config: ml_collections.ConfigDict, **kwargs
                      ) -> pipeline.BatchIterator:
  image_shape = _check(config)
  channels = int(config.channels)
  layers = int(config.randaugment_layers)

  def decode(record, seed):
    image = _decode(record['image'], channels)
    if config.random_crop:
      # `augment`'s Inception crop, of an image in any format.
      image = _crop(image, augment.random_crop_window(tf.shape(image), seed))
    return {'image': augment.resize(image, image_shape),
            'label': tf.cast(record['label'], tf.int32)}

  def augment_fn(features, seed):
    flip_seed, ra_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    image = features['image']
    if config.flip:
      image = augment.random_flip(image, flip_seed)
    if layers:
      image = augment.rand_augment(
          image, ra_seed, num_layers=layers,
          magnitude=float(config.randaugment_magnitude))
    return {'image': _normalize(image, config), 'label': features['label']}

  return imagenet.source_training_batches(
      source, config, decode_fn=decode, augment_fn=augment_fn, **kwargs)


def eval_image(image_bytes: tf.Tensor, config: ml_collections.ConfigDict
               ) -> tf.Tensor:
  """The evaluation preprocessing: encoded image -> float32 [H, W, C]."""
  image_shape = _check(config)
  fraction = float(config.eval_crop_fraction)
  if config.eval_preprocessing == 'transformers':
    return transformers_preprocessing.eval_image(
        image_bytes, image_shape=image_shape, crop_fraction=fraction)
  image = _decode(image_bytes, int(config.channels))
  crop = _crop(image, augment.center_crop_window(tf.shape(image), image_shape,
                                                 fraction))
  return _normalize(augment.resize(crop, image_shape), config)


def _in_memory_batches(split: str, config: ml_collections.ConfigDict, *,
                       batch_dims: Sequence[int], **kwargs
                       ) -> Iterator[dict[str, np.ndarray]]:
  """A small folder decoded once and shuffled as configs/digits.py's data.

  Examples are ordered by file name, then class, and drawn by
  `in_memory.replicated_train_batches`; so a folder whose files are named
  by their index in an array dataset trains on that dataset's batches.
  Augmentation: flip only.
  """
  if config.dataset != FOLDER or config.random_crop or (
      config.randaugment_layers or config.mixup_alpha or config.cutmix_alpha):
    raise ValueError('config.data.in_memory=True needs dataset=folder and '
                     'random_crop=False, no RandAugment, MixUp or CutMix.')
  files, labels = _folder_split(config, split)
  order = sorted(range(len(files)),
                 key=lambda i: (os.path.basename(files[i]), labels[i]))
  images, kept = [], []
  for i in order:
    try:
      images.append(eval_image(tf.io.read_file(files[i]), config).numpy())
      kept.append(labels[i])
    except tf.errors.OpError:
      pass  # Counted below.
  flip = None
  if config.flip:
    def flip(batch, rng):
      flipped = rng.random(len(batch['image'])) < 0.5
      batch['image'] = np.where(flipped[:, None, None, None],
                                batch['image'][:, :, ::-1], batch['image'])
      return batch
  batches = _Counted(in_memory.replicated_train_batches(
      {'image': np.stack(images), 'label': np.asarray(kept, np.int32)},
      batch_dims=batch_dims, augment=flip, **kwargs), 0, split)
  batches.num_skipped = len(files) - len(kept)
  if batches.num_skipped:
    logging.warning('Skipped %d undecodable images.', batches.num_skipped)
  return batches


def load(split: str, *, is_training: bool, batch_dims: Sequence[int],
         config: ml_collections.ConfigDict, seed: int = 0,
         start_step: int = 0, process_index: Optional[int] = None,
         process_count: Optional[int] = None
         ) -> Iterator[dict[str, np.ndarray]]:
  """Batches of `split` for this host: an endless augmented stream, or one
  ordered pass.

  `split` is 'train' (`config.train_split`), a TFDS split ('test',
  'train[90%:]') or a folder's subfolder; `config` is `config.data`,
  completed (`complete_config`); the host defaults from JAX.
  """
  pipeline.hide_gpus_from_tf()
  process_index, process_count = pipeline.process_info(process_index,
                                                       process_count)
  split = config.train_split if split == 'train' else split
  if is_training and config.get('in_memory'):
    return _in_memory_batches(split, config, batch_dims=batch_dims,
                              seed=seed, start_step=start_step,
                              process_index=process_index,
                              process_count=process_count)
  source = _source(split, config, process_index, process_count)
  if is_training:
    return _training_batches(source, config, batch_dims=batch_dims,
                             seed=seed, start_step=start_step,
                             process_index=process_index)
  _check(config)
  # A folder's undecodable files are dropped and counted by `_Counted`; a
  # TFDS dataset's images were checked when built.
  batches = imagenet.evaluation_batches(
      source, config, batch_dims=batch_dims, process_count=process_count,
      image_fn=functools.partial(eval_image, config=config),
      skip_errors=config.dataset == FOLDER)
  return _Counted(batches, source.num_examples, split)


class _Counted:
  """Batches and `num_skipped`, this host's undecodable examples.

  An evaluation pass of `num_examples` knows it once it has ended.
  """

  def __init__(self, batches: Iterator[dict[str, np.ndarray]],
               num_examples: int, split: str):
    self._batches = batches
    self._left = num_examples
    self._split = split
    self.num_skipped = 0

  def __iter__(self) -> '_Counted':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    try:
      batch = next(self._batches)
    except StopIteration:
      if self._left > 0 and not self.num_skipped:
        self.num_skipped = self._left
        logging.warning('Skipped %d undecodable images of split %r.',
                        self.num_skipped, self._split)
      raise
    self._left -= int(np.sum(batch['mask']))
    return batch

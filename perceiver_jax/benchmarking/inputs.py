"""Input-pipeline throughput: images per second and per CPU-second.

The per-core figure divides images by the CPU time the process used while
producing them (all of tf.data's threads), so it holds whatever the number
of cores or the load.
"""

import io
import time
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np

from perceiver_jax.train import tasks


def measure_input_throughput(load_fn: Callable[..., Iterator[Any]], *,
                             num_batches: int, warmup_batches: int = 2,
                             **load_kwargs: Any) -> dict[str, float]:
  """Images, seconds, cpu_seconds, images per second and per CPU-second,
  and cores_used of `num_batches` batches of `load_fn(**load_kwargs)` (each
  an 'image' `[*batch_dims, H, W, C]`) after `warmup_batches`."""
  if num_batches < 1 or warmup_batches < 0:
    raise ValueError(f'num_batches must be >= 1 and warmup_batches >= 0, '
                     f'got {num_batches} and {warmup_batches}.')
  iterator = load_fn(**load_kwargs)
  for _ in range(warmup_batches):
    next(iterator)
  images = 0
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    images += int(np.prod(next(iterator)['image'].shape[:-3]))
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  return dict(images=images, seconds=seconds, cpu_seconds=cpu_seconds,
              images_per_second=images / seconds,
              images_per_cpu_second=images / max(cpu_seconds, 1e-9),
              cores_used=cpu_seconds / seconds)


def photo_jpegs(num: int, seed: int = 0) -> list[bytes]:
  """`num` JPEGs (quality 90) of scikit-learn's two 427x640 photographs,
  odd ones mirrored at random; larger than ImageNet's average image, so
  decoding errs on the slow side."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  photos = datasets.load_sample_images().images
  rng = np.random.default_rng(seed)
  out = []
  for i in range(num):
    photo = photos[i % len(photos)]
    if rng.random() < 0.5:
      photo = photo[:, ::-1]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(photo)).save(buffer, format='JPEG',
                                                      quality=90)
    out.append(buffer.getvalue())
  return out


def benchmark_input(config: ml_collections.ConfigDict, *, num_batches: int,
                    warmup: int, photos: bool = False) -> dict[str, Any]:
  """Throughput of `config`'s training loader at `config.train.batch_size`.

  `photos`: ImageNet's training augmentation (`config.data`) over 64
  `photo_jpegs` instead of the task's records (no dataset needed).
  """
  batch_dims = (config.train.batch_size,)
  if not photos:
    task = tasks.get_task(config.task)
    result = measure_input_throughput(
        task.data.load, num_batches=num_batches, warmup_batches=warmup,
        split=task.train_split, is_training=True, batch_dims=batch_dims,
        config=config.data, seed=config.seed)
    return dict(result, task=config.task)
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from perceiver_jax.data import imagenet
  from perceiver_jax.data import pipeline
  # pylint: enable=g-import-not-at-top
  pipeline.hide_gpus_from_tf()
  jpegs = photo_jpegs(64)
  data = config.data.copy_and_resolve_references()
  with data.unlocked():
    data.shuffle_buffer = len(jpegs)  # Not the config's: few records here.
  records = tf.data.Dataset.from_tensor_slices(
      {'image': jpegs, 'label': np.arange(len(jpegs)) % data.num_classes})
  result = measure_input_throughput(
      imagenet.training_batches, num_batches=num_batches,
      warmup_batches=warmup,
      source=imagenet.Source.from_records(records, len(jpegs)),
      config=data, batch_dims=batch_dims, seed=0, start_step=0,
      process_index=0)
  return dict(result, task='photos', image_size=tuple(data.image_shape)[0],
              threads=data.threadpool_size,
              randaugment_layers=data.randaugment_layers,
              mixing=bool(data.mixup_alpha or data.cutmix_alpha),
              mean_jpeg_bytes=float(np.mean([len(j) for j in jpegs])))

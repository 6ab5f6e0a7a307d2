"""Measures input-pipeline throughput (images per second, per CPU core).

`measure_input_throughput(load_fn, num_batches=..., **load_kwargs)` times
any loader; the per-core figure divides images by the CPU time the process
used while producing them (all of tf.data's threads included), so it does
not depend on how many cores the machine has or how busy it is.

Command line (ImageNet's full training augmentation on real photographs,
scikit-learn's two 427x640 samples re-encoded as JPEG, about the size and
file size of an average ImageNet image; prints one JSON line):

  python -m perceiver_jax.data.throughput --image_size=224 --threads=1
"""

import io
import json
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from perceiver_jax import cli


def measure_input_throughput(load_fn: Callable[..., Iterator[Any]], *,
                             num_batches: int, warmup_batches: int = 2,
                             **load_kwargs: Any) -> dict[str, float]:
  """Times `num_batches` batches of `load_fn(**load_kwargs)`.

  Args:
    load_fn: returns an iterator of dicts holding an 'image' array whose
      leading dims are the batch dims (`[*batch_dims, H, W, C]`).
    num_batches: batches to time.
    warmup_batches: batches drawn (and not timed) first, so that tracing
      and filling buffers are not counted.
    **load_kwargs: passed to `load_fn`.

  Returns:
    {'images', 'seconds', 'cpu_seconds', 'images_per_second',
     'images_per_cpu_second', 'cores_used'}: `images_per_cpu_second` is the
    throughput per fully used core; `cores_used` = cpu_seconds / seconds.
  """
  if num_batches < 1 or warmup_batches < 0:
    raise ValueError(f'num_batches must be >= 1 and warmup_batches >= 0, '
                     f'got {num_batches} and {warmup_batches}.')
  iterator = load_fn(**load_kwargs)
  for _ in range(warmup_batches):
    next(iterator)
  images = 0
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    batch = next(iterator)
    image = batch['image']
    images += int(np.prod(image.shape[:-3]))
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - cpu_start
  return {
      'images': images,
      'seconds': seconds,
      'cpu_seconds': cpu_seconds,
      'images_per_second': images / seconds,
      'images_per_cpu_second': images / max(cpu_seconds, 1e-9),
      'cores_used': cpu_seconds / seconds,
  }


def photo_jpegs(num: int, seed: int = 0) -> list[bytes]:
  """`num` JPEGs (quality 90) of scikit-learn's two sample photographs.

  Odd ones are mirrored so that consecutive files differ; all are 427x640,
  somewhat larger than ImageNet's average image (about 400x350), so the
  measured decoding cost errs on the slow side.
  """
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


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = cli.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--num_batches', type=int, default=10)
  parser.add_argument('--warmup_batches', type=int, default=2)
  parser.add_argument('--threads', type=int, default=1,
                      help='tf.data threads (0: all cores)')
  parser.add_argument('--randaugment_layers', type=int, default=4)
  parser.add_argument('--no_mixing', action='store_true',
                      help='switch MixUp and CutMix off')
  args = parser.parse_args(argv)

  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from configs import imagenet as imagenet_config
  from perceiver_jax.data import imagenet
  from perceiver_jax.data import pipeline
  # pylint: enable=g-import-not-at-top
  pipeline.hide_gpus_from_tf()
  config = imagenet_config.get_config().data
  config.image_shape = (args.image_size, args.image_size)
  config.threadpool_size = args.threads
  config.randaugment_layers = args.randaugment_layers
  config.shuffle_buffer = 64
  if args.no_mixing:
    config.mixup_alpha = config.cutmix_alpha = 0.0
  jpegs = photo_jpegs(64)
  records = tf.data.Dataset.from_tensor_slices(
      {'image': jpegs, 'label': np.arange(len(jpegs)) % 1000})
  source = imagenet.Source.from_records(records, len(jpegs))
  result = measure_input_throughput(
      imagenet.training_batches, num_batches=args.num_batches,
      warmup_batches=args.warmup_batches, source=source, config=config,
      batch_dims=(args.batch_size,), seed=0, start_step=0, process_index=0)
  result.update(image_size=args.image_size, threads=args.threads,
                batch_size=args.batch_size,
                randaugment_layers=args.randaugment_layers,
                mixing=not args.no_mixing,
                mean_jpeg_bytes=float(np.mean([len(j) for j in jpegs])))
  print(json.dumps(result))


if __name__ == '__main__':
  cli.guard(main)

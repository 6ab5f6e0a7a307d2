"""Real JPEGs for data tests, from scikit-learn's two sample photographs.

`sample_jpegs(n)` gives n distinct JPEG files (crops of the 427x640 photos
at different places and sizes, encoded by PIL), and
`write_manual_download(folder, ...)` packs such files the way ImageNet's
official archives are laid out, so the real TFDS preparation can run on them.
"""

import functools
import io
import os
import tarfile

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

# Synsets of the first classes in TFDS's imagenet2012 label list.
SYNSETS = ('n01440764', 'n01443537', 'n01484850')


@functools.lru_cache()
def photos() -> tuple[np.ndarray, ...]:
  """The two uint8 [427, 640, 3] sample photographs."""
  return tuple(load_sample_images().images)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def sample_images(num: int, seed: int = 0) -> list[np.ndarray]:
  """`num` distinct crops of the photos, 150-400 pixels a side."""
  rng = np.random.default_rng(seed)
  images = []
  for i in range(num):
    photo = photos()[i % 2]
    height = int(rng.integers(150, 400))
    width = int(rng.integers(150, 400))
    top = int(rng.integers(0, photo.shape[0] - height + 1))
    left = int(rng.integers(0, photo.shape[1] - width + 1))
    images.append(photo[top:top + height, left:left + width])
  return images


def sample_jpegs(num: int, seed: int = 0) -> list[bytes]:
  return [encode_jpeg(image) for image in sample_images(num, seed)]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_manual_download(folder: str, *, train_per_class: int,
                          num_classes: int, num_val: int) -> None:
  """Writes ILSVRC2012_img_{train,val}.tar in the official layout.

  The train archive holds one `<synset>.tar` per class with
  `<synset>_<i>.JPEG` files; the val archive holds
  `ILSVRC2012_val_<8 digits>.JPEG` files (TFDS labels them from its list).
  """
  os.makedirs(folder, exist_ok=True)
  jpegs = sample_jpegs(train_per_class * num_classes + num_val, seed=1)
  with tarfile.open(os.path.join(folder, 'ILSVRC2012_img_train.tar'),
                    'w') as train:
    for c, synset in enumerate(SYNSETS[:num_classes]):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as class_tar:
        for i in range(train_per_class):
          _add(class_tar, f'{synset}_{i}.JPEG',
               jpegs[c * train_per_class + i])
      _add(train, f'{synset}.tar', inner.getvalue())
  with tarfile.open(os.path.join(folder, 'ILSVRC2012_img_val.tar'),
                    'w') as val:
    for i in range(num_val):
      _add(val, f'ILSVRC2012_val_{i + 1:08d}.JPEG',
           jpegs[train_per_class * num_classes + i])

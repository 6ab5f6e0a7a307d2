"""Folders of images in the TFDS ImageFolder layout, written by tests."""

import os

import numpy as np
from PIL import Image

from configs import images as images_config

CLASSES = ('cat', 'red fox')  # Sorted; one name with a space.


def write_folder(root, *, per_class: int = 4, corrupt: bool = True) -> str:
  """DIR/{train,test}/<class>/ of PNGs and JPEGs of varied sizes.

  Class 0 is dark, class 1 bright; train/cat/0 is grey, and
  train/cat/broken.png is not an image.
  """
  rng = np.random.default_rng(0)
  for split in ('train', 'test'):
    for label, name in enumerate(CLASSES):
      folder = os.path.join(root, split, name)
      os.makedirs(folder)
      for i in range(per_class):
        size = (12 + 5 * i, 20 + 3 * (i % 3))
        base = 40 + 160 * label
        pixels = np.clip(rng.normal(base, 20, (*size, 3)), 0, 255)
        image = Image.fromarray(pixels.astype(np.uint8))
        if split == 'train' and label == 0 and i == 0:
          image = image.convert('L')
        image.save(os.path.join(folder, f'{i}.{"png" if i % 2 else "jpg"}'))
  if corrupt:
    with open(os.path.join(root, 'train', 'cat', 'broken.png'), 'wb') as f:
      f.write(b'\x89PNG not really')
  return str(root)


def folder_config(folder: str, arg: str = 'runlocal'):
  config = images_config.get_config('dataset=folder,' + arg)
  config.data.folder = folder
  config.data.image_shape = (16, 16)
  return config

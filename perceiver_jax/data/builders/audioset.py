r"""TFDS builder `audioset`: AudioSet prepared from its CSVs and your clips.

AudioSet ships no media, so this reads the official CSVs and a `clips/`
folder of downloaded clips in any container FFmpeg reads (layout in
docs/audioset.md). A row matches a file `<YTID>.*` or `<YTID>_<start>.*`;
the latter, and files of at most 10.5 s, hold the segment itself, longer
ones are whole videos the segment is cut from. Audio is stored as 48 kHz
mono int16, frames (config `audio_video`) as 25 fps JPEGs with the shorter
side `frame_min_side`, both at their real length. Rows whose clip is
missing or undecodable are skipped and listed in `build_report.json`.
Build with `python -m perceiver_jax.data.builders.build_audioset`.
"""

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import os
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import av
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from perceiver_jax import checks
from perceiver_jax import progress
from perceiver_jax.data.builders import atomic

SAMPLE_RATE = 48_000
FPS = 25
CLIP_SECONDS = 10.0
NUM_CLASSES = 527
# Files longer than this are whole videos; shorter ones are the segment.
FULL_VIDEO_MIN_SECONDS = 10.5
SEGMENT_FILES = {
    'balanced_train': 'balanced_train_segments.csv',
    'unbalanced_train': 'unbalanced_train_segments.csv',
    'eval': 'eval_segments.csv',
}
CLASS_INDEX_FILE = 'class_labels_indices.csv'
CLIPS_DIR = 'clips'
REPORT_FILE = 'build_report.json'


class Segment(NamedTuple):
  """One row of a segments CSV."""
  ytid: str
  start_seconds: float
  end_seconds: float
  labels: tuple[int, ...]


class ClipError(Exception):
  """A clip that cannot be used (the build skips and reports it)."""


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
  """Turns any parse error of the CSV `path` into one naming it."""
  try:
    yield
  except (ValueError, IndexError, csv.Error) as e:
    if str(e).startswith(path):
      raise
    raise ValueError(f'{path}: malformed CSV ({type(e).__name__}: {e}).'
                     ) from None


def read_class_index(path: str) -> dict[str, int]:
  """`{mid: index}` of `class_labels_indices.csv` (indices 0..n-1 in order)."""
  with _naming(path), open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ['index', 'mid']:
      raise ValueError(f'{path}: expected the header "index,mid,'
                       f'display_name", got {header!r}.')
    mid_to_index = {}
    for line, row in enumerate(reader, start=2):
      if not row:
        continue
      index, mid = int(row[0]), row[1].strip()
      if index != len(mid_to_index):
        raise ValueError(f'{path}:{line}: expected class index '
                         f'{len(mid_to_index)}, got {index}.')
      mid_to_index[mid] = index
  return mid_to_index


def read_segments(path: str, mid_to_index: dict[str, int]) -> list[Segment]:
  """The rows of a segments CSV; labels must be in the class index."""
  segments = []
  with _naming(path), open(path, newline='', encoding='utf-8') as f:
    rows = csv.reader((line for line in f if not line.startswith('#')),
                      skipinitialspace=True)
    for row in rows:
      if not row:
        continue
      if len(row) != 4:
        raise ValueError(f'{path}: expected 4 fields (YTID, start_seconds, '
                         f'end_seconds, "labels"), got {row!r}.')
      ytid, start, end, mids = row
      labels = []
      for mid in mids.split(','):
        mid = mid.strip()
        if mid not in mid_to_index:
          raise ValueError(f'{path}: label {mid!r} of {ytid} is not in '
                           f'{CLASS_INDEX_FILE}.')
        labels.append(mid_to_index[mid])
      segments.append(Segment(ytid.strip(), float(start), float(end),
                              tuple(labels)))
  return segments


class ClipIndex:
  """The clip files under a folder, found by YouTube id (and start time)."""

  def __init__(self, root: str):
    self._by_stem: dict[str, list[str]] = collections.defaultdict(list)
    self._by_start: dict[tuple[str, float], list[str]] = (
        collections.defaultdict(list))
    for folder, _, files in os.walk(root):
      for name in files:
        if name.startswith('.'):
          continue
        path = os.path.join(folder, name)
        stem = os.path.splitext(name)[0]
        self._by_stem[stem].append(path)
        # YouTube ids may contain '_': split at the last one only.
        prefix, sep, suffix = stem.rpartition('_')
        if sep and prefix:
          try:
            start = float(suffix)
          except ValueError:
            continue
          if math.isfinite(start):
            self._by_start[(prefix, start)].append(path)

  def __len__(self) -> int:
    return sum(len(p) for p in self._by_stem.values())

  def find(self, ytid: str, start_seconds: float) -> list[tuple[str, bool]]:
    """Candidate `(path, holds_segment_only)` files of a segment,
    `<ytid>_<start>` ones first, each group sorted.
    """
    named = [(p, True) for p in sorted(self._by_start.get(
        (ytid, float(start_seconds)), ()))]
    plain = [(p, False) for p in sorted(self._by_stem.get(ytid, ()))]
    return named + plain


def _origin_seconds(container: Any) -> float:
  start = container.start_time
  return 0.0 if start is None else start / av.time_base


def _segment_start(container: Any, start_seconds: float,
                   segment_only: bool) -> float:
  """Where the segment begins, in the file's own timestamps (seconds)."""
  origin = _origin_seconds(container)
  duration = container.duration  # In 1 / av.time_base; None if unknown.
  if segment_only or (duration is not None and
                      duration / av.time_base <= FULL_VIDEO_MIN_SECONDS):
    return origin
  return origin + start_seconds


def read_audio(path: str, start_seconds: float, segment_only: bool,
               seconds: float = CLIP_SECONDS) -> np.ndarray:
  """A segment's audio as 48 kHz mono int16 `[<= seconds * 48000]`."""
  with av.open(path) as container:
    if not container.streams.audio:
      raise ClipError('no audio stream')
    stream = container.streams.audio[0]
    t0 = _segment_start(container, start_seconds, segment_only)
    if t0 > _origin_seconds(container):
      container.seek(int(t0 * av.time_base))  # To the keyframe before t0.
    resampler = av.AudioResampler(format='s16', layout='mono',
                                  rate=SAMPLE_RATE)
    needed = int(round(seconds * SAMPLE_RATE))
    chunks, have, skip = [], 0, None
    for frame in container.decode(stream):
      if skip is None:
        first = frame.time if frame.time is not None else t0
        skip = int(round((t0 - first) * SAMPLE_RATE))
        if skip < 0:  # The stream starts after t0: leading silence.
          chunks.append(np.zeros(-skip, np.int16))
          have, skip = -skip, 0
      for out in resampler.resample(frame):
        chunk = out.to_ndarray().reshape(-1)
        chunks.append(chunk)
        have += chunk.size
      if have >= skip + needed:
        break
    for out in resampler.resample(None):
      chunks.append(out.to_ndarray().reshape(-1))
  if skip is None:
    raise ClipError('no audio decoded')
  audio = np.concatenate(chunks).astype(np.int16)[skip:skip + needed]
  if audio.size == 0:
    raise ClipError(f'no audio in the segment (start {t0:.3f} s)')
  return audio


def read_video(path: str, start_seconds: float, segment_only: bool, *,
               min_side: int, jpeg_quality: int,
               seconds: float = CLIP_SECONDS) -> list[bytes]:
  """A segment's frames at 25 fps as JPEGs: frame k shows the one shown at
  `t0 + k / 25`.
  """
  with av.open(path) as container:
    if not container.streams.video:
      raise ClipError('no video stream')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    t0 = _segment_start(container, start_seconds, segment_only)
    if t0 > _origin_seconds(container):
      container.seek(int(t0 * av.time_base))
    num_frames = int(round(seconds * FPS))
    encoded: list[bytes] = []
    cache: dict[str, Any] = {'frame': None, 'jpeg': b''}

    def encode(frame) -> bytes:
      if frame is not cache['frame']:  # Repeated frames are encoded once.
        scale = min_side / min(frame.height, frame.width)
        array = frame.to_ndarray(width=max(1, round(frame.width * scale)),
                                 height=max(1, round(frame.height * scale)),
                                 format='rgb24', interpolation='AREA')
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format='JPEG',
                                    quality=jpeg_quality)
        cache.update(frame=frame, jpeg=buffer.getvalue())
      return cache['jpeg']

    # Half a millisecond of slack for timestamps rounded by the container.
    eps = 5e-4
    previous, previous_time = None, None
    for frame in container.decode(stream):
      if frame.time is None:
        raise ClipError('a video frame has no timestamp')
      # Output times before this frame show the previous one (or this one,
      # for times before the first frame).
      while (len(encoded) < num_frames and
             t0 + len(encoded) / FPS < frame.time - eps):
        encoded.append(encode(previous if previous is not None else frame))
      if len(encoded) >= num_frames:
        break
      previous, previous_time = frame, frame.time
    else:
      # The stream ended: the last frame lasts one source frame period.
      if previous is not None:
        rate = stream.average_rate
        period = 1.0 / float(rate) if rate else 1.0 / FPS
        while (len(encoded) < num_frames and
               t0 + len(encoded) / FPS < previous_time + period - eps):
          encoded.append(encode(previous))
  if not encoded:
    raise ClipError(f'no video frames in the segment (start {t0:.3f} s)')
  return encoded


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any],
                 num_workers: int) -> Iterator[Any]:
  """`map(fn, items)` on `num_workers` threads, in order, bounded memory."""
  if num_workers <= 1:
    yield from map(fn, items)
    return
  with concurrent.futures.ThreadPoolExecutor(num_workers) as executor:
    pending = collections.deque()
    for item in items:
      pending.append(executor.submit(fn, item))
      if len(pending) >= 4 * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


@dataclasses.dataclass(eq=False)
class AudiosetConfig(tfds.core.BuilderConfig):
  """A builder config: `with_video`, `frame_min_side`, `jpeg_quality`."""
  with_video: bool = False
  frame_min_side: int = 256
  jpeg_quality: int = 90


class Audioset(tfds.core.GeneratorBasedBuilder):
  """AudioSet segments with 48 kHz mono audio and optional 25 fps frames."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      AudiosetConfig(name='audio', description='Audio only (no frames).'),
      AudiosetConfig(name='audio_video', with_video=True,
                     description='Audio and JPEG frames, shorter side 256.'),
  ]
  DEFAULT_CONFIG_NAME = 'audio'
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the four CSV files of AudioSet (class_labels_indices.csv,
  balanced_train_segments.csv, unbalanced_train_segments.csv,
  eval_segments.csv) from https://research.google.com/audioset/download.html
  into the manual dir, and the clips into `<manual_dir>/clips/` (any
  subfolders), named `<YTID>.<ext>` or `<YTID>_<start_seconds>.<ext>`.
  """

  def __init__(self, *, num_workers: int = 1, **kwargs):
    """Builder; `num_workers` threads decode clips in parallel."""
    self._num_workers = checks.positive_int(num_workers, 'num_workers')
    self._report: dict[str, Any] = {}
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        'ytid': tfds.features.Text(),
        'start_seconds': tfds.features.Scalar(np.float32),
        'labels': tfds.features.Sequence(
            tfds.features.ClassLabel(num_classes=NUM_CLASSES)),
        # Raw bytes (2 per sample): int64 varints, the default, would take
        # up to 10 bytes per negative sample.
        'audio': tfds.features.Tensor(
            shape=(None,), dtype=np.int16,
            encoding=tfds.features.Encoding.BYTES),
    }
    if self.builder_config.with_video:
      features['video'] = tfds.features.Video(
          shape=(None, None, None, 3), encoding_format='jpeg')
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        homepage='https://research.google.com/audioset/',
        description=('AudioSet segments: 48 kHz mono int16 audio'
                     + (', 25 fps JPEG frames (shorter side '
                        f'{self.builder_config.frame_min_side})'
                        if self.builder_config.with_video else '')
                     + ', labels over 527 classes.'))

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    needed = [CLASS_INDEX_FILE, *SEGMENT_FILES.values()]
    missing = [n for n in needed
               if not os.path.isfile(os.path.join(manual_dir, n))]
    if missing:
      raise FileNotFoundError(f'AudioSet manual dir {manual_dir} lacks '
                              f'{missing}.')
    clips_dir = os.path.join(manual_dir, CLIPS_DIR)
    if not os.path.isdir(clips_dir):
      raise FileNotFoundError(f'AudioSet manual dir {manual_dir} has no '
                              f'{CLIPS_DIR}/ folder of clips.')
    mid_to_index = read_class_index(os.path.join(manual_dir,
                                                 CLASS_INDEX_FILE))
    if len(mid_to_index) != NUM_CLASSES:
      raise ValueError(f'{CLASS_INDEX_FILE} lists {len(mid_to_index)} '
                       f'classes; AudioSet has {NUM_CLASSES}.')
    clip_index = ClipIndex(clips_dir)
    logging.info('AudioSet: %d files under %s.', len(clip_index), clips_dir)
    segments = {split: read_segments(os.path.join(manual_dir, file_name),
                                     mid_to_index)
                for split, file_name in SEGMENT_FILES.items()}
    if not any(clip_index.find(segment.ytid, segment.start_seconds)
               for rows in segments.values() for segment in rows):
      # Refused before TFDS writes a split.
      raise atomic.EmptyBuildError(
          f'No file under {clips_dir} ({len(clip_index)} files) is a clip '
          'of a segment the CSVs list; nothing was written.')
    return {split: self._generate_examples(split, rows, clip_index)
            for split, rows in segments.items()}

  def _decode(self, segment: Segment, clip_index: ClipIndex
              ) -> tuple[Segment, Optional[dict[str, Any]], list[dict]]:
    """Decodes one row: (row, example or None, errors per file tried)."""
    config = self.builder_config
    errors = []
    for path, segment_only in clip_index.find(segment.ytid,
                                              segment.start_seconds):
      try:
        example = {
            'ytid': segment.ytid,
            'start_seconds': np.float32(segment.start_seconds),
            'labels': list(segment.labels),
            'audio': read_audio(path, segment.start_seconds, segment_only),
        }
        if config.with_video:
          example['video'] = read_video(
              path, segment.start_seconds, segment_only,
              min_side=config.frame_min_side,
              jpeg_quality=config.jpeg_quality)
        return segment, example, []
      except Exception as e:  # pylint: disable=broad-except
        # Whatever FFmpeg or a broken file raises, the build goes on.
        errors.append({'path': path, 'error': f'{type(e).__name__}: {e}'})
    return segment, None, errors

  def _generate_examples(self, split: str, segments: list[Segment],
                         clip_index: ClipIndex):
    skipped = {'missing': [], 'failed': [], 'duplicates': []}
    row = lambda s, **more: dict(ytid=s.ytid, start_seconds=s.start_seconds,
                                 **more)
    unique = {}
    for segment in segments:
      key = f'{segment.ytid}_{int(round(segment.start_seconds * 1000))}'
      if key in unique:
        skipped['duplicates'].append(row(segment))
      else:
        unique[key] = segment
    written = 0
    results = _ordered_map(
        lambda item: (item[0], *self._decode(item[1], clip_index)),
        unique.items(), self._num_workers)
    for key, segment, example, errors in progress.track(
        results, f'AudioSet {self.builder_config.name}/{split}',
        total=len(unique), unit='rows'):
      if example is not None:
        written += 1
        yield key, example
      elif not errors:
        skipped['missing'].append(row(segment))
      else:
        skipped['failed'].append(row(segment, files=errors))
    counts = {f'num_{kind}': len(rows) for kind, rows in skipped.items()}
    self._report[split] = {'num_rows': len(segments), 'num_written': written,
                           **counts, **skipped}
    # The skipped rows so far, in the dataset folder.
    with open(os.path.join(os.fspath(self.data_dir), REPORT_FILE), 'w') as f:
      json.dump({'config': self.builder_config.name,
                 'version': str(self.version), 'splits': self._report},
                f, indent=1)
    logging.info(
        'AudioSet %s/%s: %d of %d rows written; %d without a file, %d '
        'failed to decode, %d duplicates (listed in %s).',
        self.builder_config.name, split, written, len(segments),
        *counts.values(), REPORT_FILE)


def read_report(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
  """The build report of a prepared dataset."""
  with open(os.path.join(os.fspath(builder.data_dir), REPORT_FILE)) as f:
    return json.load(f)


def build(manual_dir: str, data_dir: Optional[str], config: Any = 'audio',
          num_workers: int = 1) -> tfds.core.DatasetBuilder:
  """Prepares AudioSet from `manual_dir` and returns its builder.

  All or nothing (`atomic.prepare`); the error names the file it failed on.
  """
  if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    # Said here: TFDS's own check of an empty manual dir is an assertion.
    raise FileNotFoundError(
        f'AudioSet manual dir {manual_dir} does not exist or is empty; it '
        f'needs {CLASS_INDEX_FILE}, {", ".join(SEGMENT_FILES.values())} and '
        f'{CLIPS_DIR}/.')
  return atomic.prepare(
      lambda root: Audioset(config=config, data_dir=root,
                            num_workers=num_workers),
      data_dir, manual_dir)

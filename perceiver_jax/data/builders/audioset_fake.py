"""Writes a tiny AudioSet in the official formats, for tests and mock runs.

The four CSVs and clips encoded with PyAV (H.264 + AAC in MP4, VP9 + Opus
in Matroska, WAV), plus a non-media file and a missing clip. Each clip is a
tone of its own frequency over frames of its own colour, so decoding can be
checked by value.
"""

import dataclasses
import fractions
import os
from typing import Optional, Sequence

import av
import numpy as np

from perceiver_jax.data.builders.audioset import CLASS_INDEX_FILE
from perceiver_jax.data.builders.audioset import CLIPS_DIR
from perceiver_jax.data.builders.audioset import NUM_CLASSES
from perceiver_jax.data.builders.audioset import SEGMENT_FILES

# kind -> (extension, container, video codec, audio codec, audio rate).
_FORMATS = {
    'mp4': ('mp4', 'mp4', 'libx264', 'aac', 44_100),
    'mkv': ('mkv', 'matroska', 'libvpx-vp9', 'libopus', 48_000),
    'wav': ('wav', 'wav', None, 'pcm_s16le', 16_000),
    'corrupt': ('mp4',),
}


@dataclasses.dataclass(frozen=True)
class FakeClip:
  """One segment row and its file.

  `kind`: 'mp4', 'mkv', 'wav', 'corrupt' (random bytes) or 'missing'.
  `full_video`: the file holds `start_seconds` of silence and black before
  the segment, like a whole video (the builder takes files over 10.5 s as
  such). `stem_with_start`: name the file `<ytid>_<start>.<ext>`.
  """
  ytid: str
  split: str
  labels: tuple[int, ...]
  kind: str = 'mp4'
  tone_hz: float = 440.0
  color: tuple[int, int, int] = (200, 40, 40)
  seconds: float = 2.0
  start_seconds: float = 30.0
  full_video: bool = False
  stem_with_start: bool = False


def class_mid(index: int) -> str:
  """A made-up but well-formed Freebase id for class `index`."""
  return f'/m/{index:05x}'


def default_clips() -> list[FakeClip]:
  """The mock dataset: a few clips per split, one corrupt, one missing."""
  return [
      FakeClip('aaaaaaaaaa0', 'balanced_train', (0, 137), 'mp4', 300.0,
               (220, 30, 30)),
      FakeClip('-bbbbbbbbb1', 'balanced_train', (72,), 'mkv', 600.0,
               (30, 220, 30), stem_with_start=True),
      FakeClip('cc_cccccccc', 'balanced_train', (526, 1, 300), 'mp4', 900.0,
               (30, 30, 220), full_video=True, start_seconds=9.5),
      FakeClip('dddddddddd3', 'balanced_train', (5,), 'corrupt'),
      FakeClip('eeeeeeeeee4', 'unbalanced_train', (10, 20), 'mp4', 1200.0,
               (200, 200, 30)),
      FakeClip('ffffffffff5', 'unbalanced_train', (3,), 'missing'),
      FakeClip('gggggggggg6', 'eval', (0,), 'mp4', 500.0, (30, 200, 200)),
      FakeClip('hhhhhhhhhh7', 'eval', (137, 526), 'mp4', 700.0,
               (200, 30, 200)),
      FakeClip('iiiiiiiiii8', 'eval', (42,), 'mp4', 1100.0, (128, 128, 128)),
  ]


def write_csvs(root: str, clips: Sequence[FakeClip],
               num_classes: int = NUM_CLASSES) -> None:
  """Writes the class index and the three segment lists into `root`."""
  with open(os.path.join(root, CLASS_INDEX_FILE), 'w') as f:
    f.write('index,mid,display_name\n')
    for i in range(num_classes):
      # Real names contain commas and are quoted then, e.g. "Speech, human".
      f.write(f'{i},{class_mid(i)},"Class {i}, sound"\n')
  for split, file_name in SEGMENT_FILES.items():
    rows = [c for c in clips if c.split == split]
    with open(os.path.join(root, file_name), 'w') as f:
      f.write('# Segments csv created Sun Mar  5 10:54:31 2017\n')
      f.write(f'# num_ytids={len(rows)}, num_segs={len(rows)}, '
              f'num_unique_labels={num_classes}, num_positive_labels='
              f'{sum(len(c.labels) for c in rows)}\n')
      f.write('# YTID, start_seconds, end_seconds, positive_labels\n')
      for c in rows:
        mids = ','.join(class_mid(i) for i in c.labels)
        f.write(f'{c.ytid}, {c.start_seconds:.3f}, '
                f'{c.start_seconds + 10.0:.3f}, "{mids}"\n')


def write_media(path: str, *, tone_hz: float, color: Sequence[int],
                seconds: float, offset: float = 0.0, container_format: str,
                video_codec: Optional[str], audio_codec: str,
                audio_rate: int, size: tuple[int, int] = (48, 64),
                fps: int = 30) -> None:
  """Encodes `offset` s of silence and black, then the tone over `color`."""
  with av.open(path, 'w', format=container_format) as container:
    if video_codec is not None:
      vstream = container.add_stream(video_codec, rate=fps)
      vstream.height, vstream.width = size
      vstream.pix_fmt = 'yuv420p'
    astream = container.add_stream(audio_codec, rate=audio_rate)
    astream.layout = 'stereo'
    if video_codec is not None:
      black = np.zeros((*size, 3), np.uint8)
      colored = np.broadcast_to(np.asarray(color, np.uint8),
                                (*size, 3)).copy()
      for i in range(int(round((offset + seconds) * fps))):
        frame = av.VideoFrame.from_ndarray(
            black if i / fps < offset else colored, format='rgb24')
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        container.mux(vstream.encode(frame))
      container.mux(vstream.encode(None))
    t = np.arange(int(round((offset + seconds) * audio_rate))) / audio_rate
    wave = np.where(t < offset, 0.0, 0.5 * np.sin(2 * np.pi * tone_hz * t))
    samples = np.stack([wave, wave]).astype(np.float32)  # Stereo.
    fmt = 's16' if audio_codec == 'pcm_s16le' else 'fltp'
    # Encoders take fixed-size frames (1024 for AAC); 960 suits Opus too.
    for start in range(0, samples.shape[1], 960):
      part = samples[:, start:start + 960]
      if fmt == 's16':
        data = (part.T.reshape(1, -1) * 32767).astype(np.int16)
      else:
        data = np.ascontiguousarray(part)
      frame = av.AudioFrame.from_ndarray(data, format=fmt, layout='stereo')
      frame.sample_rate = audio_rate
      frame.pts = start
      frame.time_base = fractions.Fraction(1, audio_rate)
      container.mux(astream.encode(frame))
    container.mux(astream.encode(None))


def write_fake_audioset(root: str,
                        clips: Optional[Sequence[FakeClip]] = None,
                        *, size: tuple[int, int] = (48, 64)) -> str:
  """Writes the CSVs into `root` and clips into `root/clips`; returns `root`."""
  clips = default_clips() if clips is None else list(clips)
  os.makedirs(os.path.join(root, CLIPS_DIR), exist_ok=True)
  write_csvs(root, clips)
  rng = np.random.default_rng(0)
  for clip in clips:
    if clip.kind == 'missing':
      continue
    if clip.kind not in _FORMATS:
      raise ValueError(f'Unknown FakeClip kind {clip.kind!r}; choose one of '
                       f'{sorted(_FORMATS) + ["missing"]}.')
    stem = (f'{clip.ytid}_{int(clip.start_seconds)}' if clip.stem_with_start
            else clip.ytid)
    path = os.path.join(root, CLIPS_DIR, f'{stem}.{_FORMATS[clip.kind][0]}')
    if clip.kind == 'corrupt':
      with open(path, 'wb') as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
      continue
    _, container, video, audio, rate = _FORMATS[clip.kind]
    write_media(path, tone_hz=clip.tone_hz, color=clip.color,
                seconds=clip.seconds,
                offset=clip.start_seconds if clip.full_video else 0.0,
                size=size, container_format=container, video_codec=video,
                audio_codec=audio, audio_rate=rate)
  return root

"""The encoder's schedule: the order of its blocks and their weight sets.

docs/paper.md section 2. `runs` groups back-to-back identical blocks (the
headline model: `(C0, L0)` then `(C1, L0)` seven times), which the encoder
can run under `hk.scan`.
"""

import dataclasses

from perceiver_jax.model import encoder_config

CROSS_ATTEND = 'cross_attend'
LATENT_TRANSFORMER = 'latent_transformer'


@dataclasses.dataclass(frozen=True)
class Step:
  """A cross-attend or latent Transformer: its `kind`, `index` among its
  kind, and `weight_set`."""
  kind: str
  index: int
  weight_set: int


def schedule(config: encoder_config.EncoderConfig) -> list[Step]:
  """The cross-attends and latent Transformers in execution order."""
  share = config.share_weights
  crosses = [Step(CROSS_ATTEND, j, min(j, 1) if share else j)
             for j in range(config.num_cross_attends)]
  if config.num_self_attends_per_block == 0:
    return crosses
  latents = [Step(LATENT_TRANSFORMER, b, 0 if share else b)
             for b in range(config.num_blocks)]
  if config.cross_attend_placement == 'start':
    return crosses + latents
  before_block = {(j * config.num_blocks) // config.num_cross_attends: cross
                  for j, cross in enumerate(crosses)}
  steps = []
  for b, latent in enumerate(latents):
    if b in before_block:
      steps.append(before_block[b])
    steps.append(latent)
  return steps


def blocks(steps: list[Step]) -> list[tuple[Step, ...]]:
  """Blocks: cross-attends and the latent Transformer after them; a
  trailing cross-attend is a block of its own."""
  grouped, pending = [], []
  for step in steps:
    pending.append(step)
    if step.kind == LATENT_TRANSFORMER:
      grouped.append(tuple(pending))
      pending = []
  return grouped + [(step,) for step in pending]


def _computation(block: tuple[Step, ...]) -> tuple[tuple[str, int], ...]:
  return tuple((step.kind, step.weight_set) for step in block)


def runs(steps: list[Step]) -> list[tuple[tuple[Step, ...], int]]:
  """`[(block, repeats), ...]`: back-to-back identical blocks merged."""
  merged = []
  for block in blocks(steps):
    if merged and _computation(merged[-1][0]) == _computation(block):
      merged[-1] = (merged[-1][0], merged[-1][1] + 1)
    else:
      merged.append((block, 1))
  return merged

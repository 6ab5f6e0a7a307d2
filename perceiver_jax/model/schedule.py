"""The encoder's schedule: the order of its blocks and their weight sets.

docs/paper.md section 2. A paper block is a cross-attend followed by a
latent Transformer; `num_cross_attends` cross-attends are placed either
interleaved (one before each of some latent Transformers) or all at the
start. With weight sharing the first cross-attend owns its weights, the
later ones share one set, and every latent Transformer shares one set.

The headline model is `(C0, L0)` then `(C1, L0)` seven times: `runs` groups
such back-to-back identical blocks, which the encoder runs under `hk.scan`.
"""

import dataclasses

from perceiver_jax.model import encoder_config

CROSS_ATTEND = 'cross_attend'
LATENT_TRANSFORMER = 'latent_transformer'


@dataclasses.dataclass(frozen=True)
class Step:
  """One step of the schedule: a cross-attend or a latent Transformer.

  Attributes:
    kind: `CROSS_ATTEND` or `LATENT_TRANSFORMER`.
    index: the step's position among steps of its kind (0-based).
    weight_set: which set of weights the step uses.
  """
  kind: str
  index: int
  weight_set: int


def schedule(config: encoder_config.EncoderConfig) -> list[Step]:
  """The cross-attends and latent Transformers in execution order.

  Interleaved, cross-attend j runs before latent Transformer
  `floor(j * num_blocks / num_cross_attends)`; at the start, all of them run
  back to back before the first. With no self-attends (cross-attends only)
  there are `num_cross_attends` steps and no latent Transformer.
  """
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
  """Splits a schedule into blocks: the cross-attends before a latent
  Transformer, then it; a cross-attend with no latent Transformer after
  it is a block of its own."""
  grouped, pending = [], []
  for step in steps:
    pending.append(step)
    if step.kind == LATENT_TRANSFORMER:
      grouped.append(tuple(pending))
      pending = []
  return grouped + [(step,) for step in pending]


def _computation(block: tuple[Step, ...]) -> tuple[tuple[str, int], ...]:
  """Two blocks compute the same function when their steps have the same
  kinds and weight sets."""
  return tuple((step.kind, step.weight_set) for step in block)


def runs(steps: list[Step]) -> list[tuple[tuple[Step, ...], int]]:
  """The schedule's blocks, with back-to-back repeats of the same
  computation merged: `[(block, repeats), ...]` in execution order."""
  merged = []
  for block in blocks(steps):
    if merged and _computation(merged[-1][0]) == _computation(block):
      merged[-1] = (merged[-1][0], merged[-1][1] + 1)
    else:
      merged.append((block, 1))
  return merged

"""Our train step and the PyTorch Perceivers', each ready to time.

A `Contender` holds what the report says of an implementation and a
function running one step of it. The peers (perceiver-pytorch, transformers)
are optional: one that is not installed is reported as such and not run.
"""

import functools
import importlib.util
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax.benchmarking import machine
from perceiver_jax.benchmarking import steps
from perceiver_jax.benchmarking import summary
from perceiver_jax.interop import transformers_format as tf_format
from perceiver_jax.model import factory

NUM_CLASSES = 1000
# The latents: N and their width D (tests shrink them).
LATENTS = dict(num_latents=256, width=256)


class Contender(NamedTuple):
  """An implementation's report `fields` and its `step` (one step, waited
  for; None when not installed)."""
  fields: dict[str, Any]
  step: Optional[Callable[[], None]]


def prepare_ours(config: ml_collections.ConfigDict, name: str, *,
                 fast_compile: bool = False) -> Contender:
  """Our compiled train step on `config`; `step` carries the state."""
  prepared = steps.prepare_train_step(
      config, compiler_options=(machine.FAST_COMPILE_OPTIONS
                                if fast_compile else None))
  _, forward_flops = summary.nominal_flops_per_example(config)
  args = list(prepared.args)

  def step():
    state, metrics = prepared.compiled(*args)
    jax.block_until_ready((state, metrics))
    args[0] = state

  return Contender(dict(
      name=name, status='ok', params=prepared.fields['params'],
      forward_flops_per_example=forward_flops,
      executed_flops_per_example=steps.executed_flops_per_example(
          prepared.compiled, config.train.batch_size,
          jax.local_device_count()),
      compile_seconds=prepared.fields['compile_seconds'],
      precision=config.model.encoder.precision,
      device=jax.local_devices()[0].device_kind,
      devices=jax.local_device_count()), step)


def _missing(name: str, *modules: str) -> Optional[Contender]:
  """A 'not installed' contender if one of `modules` cannot be imported."""
  for module in modules:
    if importlib.util.find_spec(module) is None:
      return Contender(dict(name=name, status='not installed',
                            missing=module), None)
  return None


def _torch_contender(name: str, peer_module: str,
                     build: Callable[[Any], tuple[Any, Any]],
                     precision: str) -> Contender:
  """One Adam step of the (model, images) that `build(torch)` makes, seeded,
  softmax cross-entropy; 'bfloat16': the forward under `torch.autocast`
  (PyTorch's own mixed precision). 'not installed' without the modules."""
  missing = _missing(name, 'torch', peer_module)
  if missing:
    return missing
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model, images = build(torch)
  labels = torch.randint(0, NUM_CLASSES, (images.shape[0],))
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  loss_fn = torch.nn.CrossEntropyLoss()
  model.train()
  # Not under no_grad: FlopCounterMode's backward hooks need gradients.
  with FlopCounterMode(display=False) as counter:
    model(images[:1])

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast('cpu', dtype=torch.bfloat16,
                        enabled=precision == 'bfloat16'):
      logits = model(images)
      logits = getattr(logits, 'logits', logits)  # transformers' output.
    loss_fn(logits.float(), labels).backward()
    optimizer.step()

  return Contender(dict(
      name=name, status='ok',
      params=sum(p.numel() for p in model.parameters()),
      forward_flops_per_example=int(counter.get_total_flops()),
      precision=precision, device='cpu',
      torch_threads=torch.get_num_threads()), step)


def prepare_lucidrains(image_size: int, batch_size: int,
                       precision: str = 'float32') -> Contender:
  """perceiver-pytorch's `Perceiver` in the matched configuration (its MLPs
  are GEGLU with a fixed 4x widening)."""
  def build(torch):
    from perceiver_pytorch import Perceiver  # pylint: disable=g-import-not-at-top
    model = Perceiver(
        input_channels=3, input_axis=2, num_freq_bands=64,
        max_freq=float(image_size), depth=2,
        num_latents=LATENTS['num_latents'], latent_dim=LATENTS['width'],
        cross_heads=1, latent_heads=8, cross_dim_head=3 + 2 * (2 * 64 + 1),
        latent_dim_head=32, num_classes=NUM_CLASSES, attn_dropout=0.0,
        ff_dropout=0.0, weight_tie_layers=True, fourier_encode_data=True,
        self_per_cross_attn=2)
    return model, torch.rand(batch_size, image_size, image_size, 3)

  return _torch_contender('perceiver-pytorch (lucidrains)',
                          'perceiver_pytorch', build, precision)


def prepare_transformers(image_size: int, batch_size: int,
                         precision: str = 'float32') -> Contender:
  """transformers' `PerceiverForImageClassificationFourier` (one
  cross-attend, at the start) in the matched configuration."""
  def build(torch):
    import transformers  # pylint: disable=g-import-not-at-top
    model = transformers.PerceiverForImageClassificationFourier(
        transformers.PerceiverConfig(
            num_latents=LATENTS['num_latents'], d_latents=LATENTS['width'],
            d_model=3 + 2 * 2 * 64 + 2,
            num_blocks=2, num_self_attends_per_block=2,
            num_self_attention_heads=8, num_cross_attention_heads=1,
            cross_attention_widening_factor=1,
            self_attention_widening_factor=1,
            attention_probs_dropout_prob=0.0, num_labels=NUM_CLASSES,
            image_size=image_size))
    # Channels first, as its image preprocessor expects.
    return model, torch.rand(batch_size, 3, image_size, image_size)

  return _torch_contender(
      'transformers PerceiverForImageClassificationFourier', 'transformers',
      build, precision)


def prepare_released_forward(kind: str, image_size: int, batch_size: int,
                             tiny: bool = False) -> list[Contender]:
  """[ours, transformers'] inference forward of a released classifier's
  shape (`RELEASED_CONFIGS`), on the same random weights (transformers'
  initialisation mapped to ours; ours alone when transformers is absent).

  `tiny`: 16 latents of 32 channels, 2 blocks of one self-attend.
  """
  hf_config = dict(tf_format.RELEASED_CONFIGS[
      f'deepmind/vision-perceiver-{kind}'])
  if tiny:
    hf_config.update(num_latents=16, d_latents=32, num_blocks=2,
                     num_self_attends_per_block=1, num_self_attention_heads=2)
  hf_config['image_size'] = image_size
  forward = factory.transform_classifier(
      tf_format.model_config(hf_config, image_size=(image_size, image_size)),
      hf_config['num_labels'])
  images = np.random.default_rng(0).normal(
      size=(batch_size, 3, image_size, image_size)).astype(np.float32)
  batch = {'image': jnp.asarray(images.transpose(0, 2, 3, 1))}
  name = f'transformers {hf_config["architectures"][0]} (forward)'
  peer = _missing(name, 'torch', 'transformers')
  theirs = None
  if peer:
    params = forward.init(jax.random.key(0), batch, is_training=False)
  else:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    model = getattr(transformers, hf_config['architectures'][0])(
        transformers.PerceiverConfig(**{
            k: v for k, v in hf_config.items()
            if k not in ('model_type', 'architectures')})).eval()
    params = tf_format.to_params(
        {k: v.numpy() for k, v in model.state_dict().items()}, hf_config,
        jax.eval_shape(forward.init, jax.random.key(0), batch,
                       is_training=False))
    inputs = torch.from_numpy(images)

    def their_step():
      with torch.no_grad():
        return model(inputs=inputs).logits

    theirs = their_step().numpy()
    peer = Contender(dict(
        name=name, status='ok',
        params=sum(p.numel() for p in model.parameters()), device='cpu',
        torch_threads=torch.get_num_threads()), their_step)
  params = jax.device_put(params)
  compiled = jax.jit(functools.partial(forward.apply, is_training=False)
                     ).lower(params, None, batch).compile()
  ours = np.asarray(compiled(params, None, batch))
  fields = dict(name=f'perceiver_jax (ours) {kind} (forward)', status='ok',
                params=int(sum(np.size(v) for v in jax.tree.leaves(params))),
                executed_flops_per_example=steps.executed_flops_per_example(
                    compiled, batch_size, 1),
                device=jax.local_devices()[0].device_kind)
  if theirs is not None:
    fields['max_abs_logit_difference'] = float(np.max(np.abs(ours - theirs)))
  return [Contender(fields, lambda: jax.block_until_ready(
      compiled(params, None, batch))), peer]


def efficiency(fields: dict[str, Any], batch_size: int,
               seconds: Optional[float], rates: Optional[dict[str, float]],
               precision: str) -> dict[str, Any]:
  """Executed FLOP/s of a timed step of ours and its fraction of the
  machine's matmul rate (empty for the peers, whose executed FLOPs XLA
  does not count)."""
  executed = fields.get('executed_flops_per_example')
  if executed is None or not seconds:
    return {}
  rate = executed * batch_size / seconds
  return dict(executed_flops_per_sec=rate,
              machine_fraction=machine.machine_fraction(rate, rates,
                                                        precision))


def time_contenders(contenders: Sequence[Contender], fields: dict[str, Any],
                    *, rounds: int, calls: int, warmup: int,
                    seconds_name: str, rates: Optional[dict[str, float]],
                    precision: str) -> list[dict[str, Any]]:
  """Each contender's JSON line (with `fields`, which hold `batch_size`):
  median and min of its `machine.time_in_rounds` seconds, its efficiency."""
  seconds = machine.time_in_rounds([c.step for c in contenders],
                                   rounds=rounds, calls=calls, warmup=warmup)
  batch_size = fields['batch_size']
  results = []
  for contender, own in zip(contenders, seconds):
    result = dict(contender.fields, **fields)
    if own:
      median = float(np.median(own))
      result.update({seconds_name: median, f'{seconds_name}_min': min(own)},
                    round_seconds=own, rounds=rounds, steps=calls)
      if seconds_name == 'forward_seconds':
        result['images_per_second'] = batch_size / median
      result.update(efficiency(contender.fields, batch_size, median, rates,
                               precision))
    results.append(result)
  return results


def speedups(name: str, peer: dict[str, Any], ours: dict[str, Any],
             key: str) -> dict[str, float]:
  """The peer's `key` seconds over ours: medians, minima and by round."""
  return {name: peer[key] / ours[key],
          f'{name}_by_min': peer[f'{key}_min'] / ours[f'{key}_min'],
          f'{name}_by_round': machine.paired_speedup(
              peer['round_seconds'], ours['round_seconds'])}

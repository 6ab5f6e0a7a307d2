"""transformers' Perceiver checkpoints <-> perceiver_jax parameters.

A transformers checkpoint directory holds `config.json` (a `PerceiverConfig`
with `architectures`) and `model.safetensors`. `model_config` turns the
config into our `config.model`, `name_map` places every tensor among our
parameters (`_layer`: a `PerceiverLayer` against our cross-attend or
self-attend block), so that the same images give the same logits. Torch
stores Linear weights `[out, in]` and kernels `[out, in, h, w]`; Haiku
`[in, out]` and `[h, w, in, out]`. docs/checkpoints.md has the full map.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from perceiver_jax.model import decoder as decoder_lib
from perceiver_jax.model import encoder_config

# transformers architecture -> our input type (None: the bare encoder).
ARCHITECTURES = {
    'PerceiverForImageClassificationFourier': 'grid',
    'PerceiverForImageClassificationLearned': 'conv1x1_learned',
    'PerceiverForImageClassificationConvProcessing': 'conv_stem',
    'PerceiverModel': None,
}
# transformers' `hidden_act` -> our `mlp_activation`.
_ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh',
                'gelu_pytorch_tanh': 'gelu_tanh'}
# `PerceiverConfig`'s integer fields -> our `EncoderConfig`'s.
_INT_FIELDS = {
    'num_blocks': 'num_blocks',
    'num_self_attends_per_block': 'num_self_attends_per_block',
    'num_latents': 'num_latents', 'd_latents': 'num_latent_channels',
    'num_cross_attention_heads': 'num_cross_heads',
    'num_self_attention_heads': 'num_self_heads',
    'cross_attention_widening_factor': 'cross_attend_widening_factor',
    'self_attention_widening_factor': 'self_attend_widening_factor'}
# Buffers that carry no value we need (a counter of BatchNorm updates).
IGNORED_SUFFIXES = ('num_batches_tracked',)


# The configs of DeepMind's released classifiers as transformers' conversion
# script sets them (the rest are `PerceiverConfig`'s defaults), by hub name:
# models of their shape without the hub.
_RELEASED_COMMON = dict(
    model_type='perceiver', num_latents=512, d_latents=1024, num_blocks=8,
    num_self_attends_per_block=6, num_cross_attention_heads=1,
    num_self_attention_heads=8, qk_channels=None, v_channels=None,
    cross_attention_shape_for_attention='kv',
    self_attention_widening_factor=1, cross_attention_widening_factor=1,
    hidden_act='gelu', use_query_residual=True, num_labels=1000,
    image_size=224)
RELEASED_CONFIGS = {
    f'deepmind/vision-perceiver-{name}': dict(
        _RELEASED_COMMON, d_model=d_model, architectures=[architecture])
    for name, d_model, architecture in (
        ('fourier', 261, 'PerceiverForImageClassificationFourier'),
        ('learned', 512, 'PerceiverForImageClassificationLearned'),
        ('conv', 322, 'PerceiverForImageClassificationConvProcessing'))}


class CheckpointError(ValueError):
  """A checkpoint that cannot become our parameters (or the reverse)."""


@dataclasses.dataclass(frozen=True)
class Tensor:
  """Where one transformers tensor lives among our parameters (`module`,
  `name`), and how its array maps to ours and back."""
  module: str
  name: str
  to_ours: Callable[[np.ndarray], np.ndarray] = np.asarray
  to_theirs: Callable[[np.ndarray], np.ndarray] = np.asarray


# Torch's layouts -> ours, and back (see the module docstring); a 1x1 kernel
# [out, in, 1, 1] is our Linear's [in, out].
_LINEAR = (np.transpose, np.transpose)
_CONV = (lambda x: x.transpose(2, 3, 1, 0), lambda x: x.transpose(3, 2, 0, 1))
_CONV1X1 = (lambda x: x[:, :, 0, 0].T, lambda x: x.T[:, :, None, None])


def _linear(theirs: str, ours: str) -> dict[str, Tensor]:
  return {f'{theirs}.weight': Tensor(ours, 'w', *_LINEAR),
          f'{theirs}.bias': Tensor(ours, 'b')}


def _norm(theirs: str, ours: str) -> dict[str, Tensor]:
  return {f'{theirs}.weight': Tensor(ours, 'scale'),
          f'{theirs}.bias': Tensor(ours, 'offset')}


def _layer(theirs: str, ours: str, *, cross: bool) -> dict[str, Tensor]:
  """One `PerceiverLayer` against one of our blocks."""
  norms = ({'layernorm1': 'query_norm', 'layernorm2': 'input_norm'} if cross
           else {'layernorm1': 'attention_norm'})
  names = {}
  for their_norm, our_norm in norms.items():
    names.update(_norm(f'{theirs}.attention.self.{their_norm}',
                       f'{ours}/{our_norm}'))
  for projection in ('query', 'key', 'value'):
    names.update(_linear(f'{theirs}.attention.self.{projection}',
                         f'{ours}/attention/{projection}'))
  names.update(_linear(f'{theirs}.attention.output.dense',
                       f'{ours}/attention/output'))
  names.update(_norm(f'{theirs}.layernorm', f'{ours}/mlp_norm'))
  names.update(_linear(f'{theirs}.mlp.dense1', f'{ours}/mlp/hidden'))
  names.update(_linear(f'{theirs}.mlp.dense2', f'{ours}/mlp/output'))
  return names


def architecture_of(hf_config: Mapping[str, Any]) -> str:
  """The one supported architecture `config.json` names, else raises."""
  architectures = hf_config.get('architectures') or []
  model_type = hf_config.get('model_type')
  supported = ', '.join(ARCHITECTURES)
  if model_type != 'perceiver':
    raise CheckpointError(
        f'config.json has model_type {model_type!r} (architectures '
        f'{architectures}); only Perceiver checkpoints are supported: '
        f'{supported}.')
  if len(architectures) != 1 or architectures[0] not in ARCHITECTURES:
    raise CheckpointError(
        f'unsupported architecture {architectures}; supported: '
        f'{supported}.')
  return architectures[0]


def name_map(hf_config: Mapping[str, Any]) -> dict[str, Tensor]:
  """transformers tensor name -> where it goes among our parameters."""
  architecture = architecture_of(hf_config)
  input_type = ARCHITECTURES[architecture]
  # A classifier holds its `PerceiverModel` as `perceiver`.
  prefix = '' if input_type is None else 'perceiver.'
  names = {f'{prefix}embeddings.latents': Tensor('perceiver', 'latents')}
  names.update(_layer(f'{prefix}encoder.cross_attention',
                      'perceiver/cross_attend_0', cross=True))
  for i in range(int(hf_config['num_self_attends_per_block'])):
    names.update(_layer(f'{prefix}encoder.self_attends.{i}',
                        f'perceiver/latent_transformer_0/self_attend_{i}',
                        cross=False))
  if input_type is None:
    return names
  decoder = f'{prefix}decoder.decoder'
  names[f'{decoder}.output_position_encodings.position_embeddings'] = (
      Tensor('classification_decoder', 'query'))
  names.update(_layer(f'{decoder}.decoding_cross_attention',
                      'classification_decoder/cross_attend', cross=True))
  names.update(_linear(f'{decoder}.final_layer',
                       'classification_decoder/logits'))
  pre = f'{prefix}input_preprocessor'
  if input_type == 'conv1x1_learned':
    ours = 'conv1x1_learned_adapter'
    names[f'{pre}.convnet_1x1.weight'] = Tensor(f'{ours}/conv1x1', 'w',
                                                *_CONV1X1)
    names[f'{pre}.convnet_1x1.bias'] = Tensor(f'{ours}/conv1x1', 'b')
    names[f'{pre}.position_embeddings.position_embeddings'] = Tensor(
        f'{ours}/positions', 'pos_embs')
    names.update(_linear(f'{pre}.positions_projection',
                         f'{ours}/position_projection'))
  elif input_type == 'conv_stem':
    ours = 'conv_stem_adapter'
    names[f'{pre}.convnet.conv.weight'] = Tensor(f'{ours}/conv', 'w', *_CONV)
    for theirs, mine in (('weight', 'scale'), ('bias', 'offset'),
                         ('running_mean', 'mean'), ('running_var', 'var')):
      names[f'{pre}.convnet.batchnorm.{theirs}'] = Tensor(
          f'{ours}/batch_norm', mine)
  return names


def model_config(hf_config: Mapping[str, Any], *,
                 image_size: Optional[tuple[int, int]] = None
                 ) -> dict[str, Any]:
  """Our `config.model` (a plain dict: `encoder`, and for classifiers
  `head`, `decoder`, `input`) for a transformers `config.json`; `image_size`
  `(H, W)` is the image processor's (the 'learned' model's config fixes
  it)."""
  architecture = architecture_of(hf_config)
  input_type = ARCHITECTURES[architecture]
  activation = hf_config.get('hidden_act', 'gelu')
  if activation not in _ACTIVATIONS:
    raise CheckpointError(f'hidden_act {activation!r} is not supported; '
                          f'supported: {sorted(_ACTIVATIONS)}.')
  if hf_config.get('cross_attention_shape_for_attention', 'kv') != 'kv':
    raise CheckpointError(
        "only cross_attention_shape_for_attention='kv' is supported, got "
        f"{hf_config.get('cross_attention_shape_for_attention')!r}.")
  try:
    encoder = {ours: int(hf_config[theirs])
               for theirs, ours in _INT_FIELDS.items()}
    encoder.update(
        num_cross_attends=1, cross_attend_placement='start',
        share_weights=True, dropout=0.0,
        widening_factor=encoder['self_attend_widening_factor'],
        qk_channels=hf_config.get('qk_channels'),
        v_channels=hf_config.get('v_channels'),
        mlp_activation=_ACTIVATIONS[activation],
        cross_attend_query_residual=bool(
            hf_config.get('use_query_residual', True)))
  except KeyError as e:
    raise CheckpointError(f'config.json has no {e} field, which '
                          f'{architecture} needs.') from None
  except (TypeError, ValueError) as e:
    raise CheckpointError(f'config.json holds a value of the wrong type '
                          f'({e}).') from None
  model = {'encoder': encoder}
  if input_type is None:
    return model  # The encoder alone.
  model['head'] = 'perceiver_io'
  model['decoder'] = dict(num_heads=1, widening_factor=1, query_residual=True)
  if input_type == 'conv1x1_learned':
    size = int(hf_config['image_size'])
    image_size = (size, size)
  if image_size is None:
    raise CheckpointError(f'{architecture} needs the image size.')
  model['input'] = dict(type=input_type, key='image',
                        index_dims=tuple(int(n) for n in image_size),
                        raw_channels=3)
  # The preprocessor settings that transformers' classifier classes fix.
  if input_type == 'grid':
    model['input'].update(position_encoding='fourier', num_bands=64,
                          max_resolution=(224, 224))
  elif input_type == 'conv_stem':
    model['input'].update(out_channels=64, num_bands=64,
                          max_resolution=(56, 56))
  else:
    model['input'].update(out_channels=256, position_channels=256,
                          projected_channels=256)
  return model


def to_params(state: Mapping[str, np.ndarray],
              hf_config: Mapping[str, Any],
              expected: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, dict[str, np.ndarray]]:
  """Our parameters (float32 numpy, module -> name -> array) from the
  tensors `state`, shaped as `expected` (`jax.eval_shape` of `init`).
  Raises `CheckpointError` on a tensor without a place, a shape that does
  not fit, or a parameter left without a value."""
  names = name_map(hf_config)
  params: dict[str, dict[str, np.ndarray]] = {}
  for key in sorted(state):
    if key.endswith(IGNORED_SUFFIXES):
      continue
    if key not in names:
      raise CheckpointError(f'tensor {key!r} (shape {state[key].shape}) has '
                            'no place in the perceiver_jax model.')
    where = names[key]
    if where.name not in expected.get(where.module, {}):
      raise CheckpointError(f'tensor {key!r} maps to {where.module}/'
                            f'{where.name}, which the model does not have.')
    value = np.ascontiguousarray(
        where.to_ours(np.asarray(state[key], np.float32)))
    shape = tuple(expected[where.module][where.name].shape)
    if value.shape != shape:
      raise CheckpointError(
          f'tensor {key!r} has shape {state[key].shape}: as '
          f'{where.module}/{where.name} that is {value.shape}, but the model '
          f'built from config.json needs {shape}.')
    params.setdefault(where.module, {})[where.name] = value
  theirs = {(t.module, t.name): key for key, t in names.items()}
  for module in sorted(expected):
    for name in sorted(expected[module]):
      if name not in params.get(module, {}):
        raise CheckpointError(
            f'the checkpoint has no tensor for {module}/{name} (expected '
            f'{theirs.get((module, name), "none known")!r}).')
  return params


def from_params(params: Mapping[str, Mapping[str, Any]],
                hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our parameters as transformers tensors (the reverse of `to_params`)."""
  names = name_map(hf_config)
  by_ours = {(t.module, t.name): (key, t) for key, t in names.items()}
  state = {}
  for module in sorted(params):
    for name in sorted(params[module]):
      if (module, name) not in by_ours:
        raise CheckpointError(f'parameter {module}/{name} has no place in '
                              'a transformers Perceiver.')
      key, where = by_ours[(module, name)]
      state[key] = np.ascontiguousarray(
          where.to_theirs(np.asarray(params[module][name], np.float32)))
  return state


def count(tree: Mapping[str, Any]) -> int:
  """Number of values in a flat name -> array dict or nested params."""
  return sum(count(value) if isinstance(value, Mapping) else int(np.size(value))
             for value in tree.values())


# Our input type -> the transformers classifier that reads it.
_CLASS_OF_INPUT = {t: a for a, t in ARCHITECTURES.items() if t is not None}
_HIDDEN_ACT = {'gelu': 'gelu', 'gelu_tanh': 'gelu_pytorch_tanh'}
# `EncoderConfig` fields that decide the function (the rest are execution
# modes).
_FUNCTION_FIELDS = (
    'num_blocks', 'num_self_attends_per_block', 'num_cross_attends',
    'cross_attend_placement', 'share_weights', 'num_latents',
    'num_latent_channels', 'num_cross_heads', 'num_self_heads', 'qk_channels',
    'v_channels', 'mlp_activation', 'cross_attend_query_residual')


def _architecture_values(model: Mapping[str, Any]) -> dict[str, Any]:
  """The values that decide a model's function, defaults filled in."""
  encoder = encoder_config.EncoderConfig.from_mapping(
      model.get('encoder') or {})
  values = {name: getattr(encoder, name) for name in _FUNCTION_FIELDS}
  (values['cross_attend_widening_factor'],
   values['self_attend_widening_factor']) = encoder.widening_factors()
  values['head'] = model.get('head', 'mean_linear')
  if values['num_cross_attends'] == 1:
    # One cross-attend runs first whatever the placement says.
    values['cross_attend_placement'] = 'start'
  for key, value in decoder_lib.decoder_settings(model).items():
    if key != 'query_num_bands':  # Only Fourier queries read it.
      values[f'decoder.{key}'] = value
  for key, value in dict(model.get('input') or {}).items():
    if key == 'permutation_seed' and value is None:
      continue
    if key in ('index_dims', 'max_resolution') and value is not None:
      value = tuple(int(n) for n in value)
    values[f'input.{key}'] = value
  return values


def transformers_config(model: Mapping[str, Any],
                        num_classes: int) -> dict[str, Any]:
  """transformers' `config.json` for our `config.model`; a setting it
  cannot express raises `CheckpointError` (found by mapping the result back
  with `model_config` and comparing every value that decides the
  function)."""
  input_type = dict(model.get('input') or {}).get('type')
  if input_type not in _CLASS_OF_INPUT:
    raise CheckpointError(
        f'input type {input_type!r} has no transformers classifier; '
        f'exportable: {sorted(_CLASS_OF_INPUT)}.')
  head = model.get('head', 'mean_linear')
  if head != 'perceiver_io':
    raise CheckpointError(f"head {head!r} has no transformers counterpart; "
                          "only head='perceiver_io' models export.")
  values = _architecture_values(model)
  index_dims = values.get('input.index_dims') or (224, 224)
  hf_config = {theirs: values[ours] for theirs, ours in _INT_FIELDS.items()}
  hf_config.update({
      'model_type': 'perceiver',
      'architectures': [_CLASS_OF_INPUT[input_type]],
      'qk_channels': values['qk_channels'],
      'v_channels': values['v_channels'],
      'cross_attention_shape_for_attention': 'kv',
      'hidden_act': _HIDDEN_ACT[values['mlp_activation']],
      'use_query_residual': values['cross_attend_query_residual'],
      'attention_probs_dropout_prob': 0.0,
      'image_size': int(index_dims[0]),
      'num_labels': int(num_classes),
      'id2label': {str(i): f'LABEL_{i}' for i in range(int(num_classes))},
      'label2id': {f'LABEL_{i}': i for i in range(int(num_classes))},
  })
  back = _architecture_values(model_config(hf_config,
                                           image_size=tuple(index_dims)))
  for key, value in values.items():
    if key.startswith('input.') and key not in back:
      continue  # A field the input type does not read.
    if back.get(key) != value:
      raise CheckpointError(
          f'{key}={value!r} cannot be expressed in transformers\' '
          f'{hf_config["architectures"][0]} (it fixes {back.get(key)!r}).')
  return hf_config


def merge_model_config(config_model: Any, model: Mapping[str, Any]) -> None:
  """Writes `model_config`'s result into an unlocked run config's
  `config.model`: execution modes stay, every field that decides the
  function becomes the checkpoint's, `input` is replaced whole."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  for key, value in model.items():
    if key in ('encoder', 'decoder') and key in config_model:
      config_model[key].update(value)
    elif key != 'input':
      config_model[key] = value
  if 'input' in model:
    config_model.input = ml_collections.ConfigDict(model['input'])


"""One way for every command to report a mistake: one `error: ...` line.

absl commands run `cli.run(main)`; argparse ones use `cli.ArgumentParser`
and `cli.guard(main)`. A user's mistake (`UsageError`, absl usage and flag
errors, ValueError, OSError) exits with status 2, a diverged loss
(FloatingPointError) with 1, each after one line on stderr; anything else is
a bug and keeps its traceback, as does any error under `--traceback`.
No JAX or TensorFlow import here, so commands fail fast.
"""

import argparse
import ast
import os
import sys
from typing import Any, Callable, NoReturn, Optional, Sequence

from absl import app
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags
from ml_collections.config_flags import config_path
from ml_collections.config_flags import tuple_parser

USAGE_STATUS = 2  # The command line holds a mistake.
FAILURE_STATUS = 1  # The command ran and failed (e.g. a diverged loss).
INTERRUPTED_STATUS = 130  # Ctrl-C or SIGTERM.

_TRACEBACK = flags.DEFINE_bool(
    'traceback', False, 'Show full tracebacks instead of one-line errors.')


class UsageError(ValueError):
  """A mistake in a command's flags or paths; its message says the fix."""


def fail(message: str, status: int = USAGE_STATUS) -> NoReturn:
  """Prints `error: message` on stderr and exits with `status`."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(status)


def _traceback_wanted() -> bool:
  return '--traceback' in sys.argv[1:] or (
      flags.FLAGS.is_parsed() and _TRACEBACK.value)


def guard(main: Callable[..., Any], *args: Any) -> Any:
  """`main(*args)`, with user errors in one line."""
  try:
    return main(*args)
  except KeyboardInterrupt:
    if _traceback_wanted():
      raise
    fail('interrupted.', status=INTERRUPTED_STATUS)
  except (ValueError, OSError, FloatingPointError, app.UsageError,
          flags.Error) as e:
    if _traceback_wanted():
      raise
    # Our own mistakes' messages as they are; others named by their type.
    ours = isinstance(e, (UsageError, app.UsageError))
    fail(str(e) if ours else f'{type(e).__name__}: {e}',
         FAILURE_STATUS if isinstance(e, FloatingPointError) else
         USAGE_STATUS)


# ---------------------------------------------------------------- absl ----

def _flag_error_message(error: Exception) -> str:
  """A flag error in one line; a config file's traceback reduced to its end."""
  text = str(error)
  if 'Traceback (most recent call last)' in text:
    first = text.splitlines()[0].rstrip(':').strip()
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    return f'{first}: {last}'
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def _config_spec_in(argv: Sequence[str]) -> Optional[str]:
  """The value of `--config=...` in `argv`, if given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg[len('--config='):]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _innermost_text(error: Exception) -> str:
  """The message of the innermost of ConfigDict's nested errors."""
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  return str(error.args[0]) if error.args else str(error)


def _unknown_field_message(error: Exception) -> str:
  """ConfigDict's (nested) unknown-field error as one line."""
  text = _innermost_text(error)
  if "has no attribute 'get_config'" in text:
    spec = _config_spec_in(sys.argv) or 'the config file'
    return (f'{spec.partition(":")[0]} defines no get_config(); give a '
            'config file of configs/ (or one with a get_config function).')
  return ('Unknown config field in an override: ' +
          ' '.join(text.split()) + ' (--traceback for details)')


_defined_config_flags: list[str] = []


def define_config_flag(default: Optional[str], help_text: str
                       ) -> flags.FlagHolder:
  """`--config` (locked), with a mistyped override of it in one line.

  ml_collections applies the overrides to the default config when the flag
  is defined, before `run` could catch the error.
  """
  _defined_config_flags.append('config')
  try:
    return config_flags.DEFINE_config_file('config', default, help_text,
                                           lock_config=True)
  except (AttributeError, KeyError) as e:
    if _traceback_wanted():
      raise
    fail(_unknown_field_message(e))


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parser, reporting a bad flag in one line."""
  spec = _config_spec_in(argv) if _defined_config_flags else None
  # A missing config file: ml_collections would fail later, in many lines.
  if spec is not None and not os.path.isfile(spec.partition(':')[0]):
    fail(f'config file {spec.partition(":")[0]} not found; give '
         '--config=path/to/config.py[:arg], e.g. --config=configs/digits.py.')
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    if '--traceback' in argv:
      raise
    if isinstance(e, flags.Error):
      fail(f'{_flag_error_message(e)} (--helpshort lists the flags)')
    # A `--config.x=y` override naming no field of the config.
    fail(_unknown_field_message(e))


def run(main: Callable[[list[str]], Optional[int]]) -> None:
  """`absl.app.run(main)` with one-line errors."""
  app.run(lambda argv: guard(main, argv), flags_parser=parse_flags)


def no_arguments(argv: Sequence[str]) -> None:
  """Raises UsageError if `argv` holds anything after the program name."""
  if len(argv) > 1:
    raise UsageError(f'unexpected arguments {list(argv[1:])}: every option '
                     'is a --flag=value (--helpshort lists them).')


# Parsers of an override by the type of the field it sets, as
# ml_collections' config flags choose them.
_PARSERS = {
    float: flags.FloatParser(),
    bool: flags.BooleanParser(),
    int: flags.IntegerParser(),
    str: flags.ArgumentParser(),
    tuple: tuple_parser.TupleParser(),
}


def parse_override(config: config_dict.ConfigDict, key: str,
                   text: str) -> Any:
  """The value `--{key}={text}` would set in `config` (key: 'config.a.b').

  Raises UsageError for an unknown field, a group of fields, or a value
  that does not parse as the field's type.
  """
  field = key[len('config.'):]
  try:
    field_type = config_path.get_type(field, config)
    default = config_path.get_value(field, config)
  except (AttributeError, KeyError) as e:
    detail = ' '.join(_innermost_text(e).split())
    raise UsageError(f'{field} is not a field of the config ({detail}); '
                         'check its spelling in the config file.') from None
  if text == 'None' and default is None:
    return None
  if isinstance(field_type, type) and issubclass(field_type,
                                                 config_dict.ConfigDict):
    raise UsageError(f'{field} is a group of fields, not a value; name '
                         f'one of them, e.g. {field}.{sorted(default)[0]}.')
  parser = _PARSERS.get(config_path.get_origin(field_type) or field_type)
  try:
    if parser is None:  # A field without a type (its default is None).
      try:
        return ast.literal_eval(text)
      except (SyntaxError, ValueError):
        return text
    return parser.parse(text)
  except (ValueError, TypeError) as e:
    raise UsageError(
        f'{text!r} is not a valid {getattr(field_type, "__name__", field_type)}'
        f' for {field} ({" ".join(str(e).split())}).') from None


# ------------------------------------------------------------ argparse ----

class ArgumentParser(argparse.ArgumentParser):
  """argparse with a `--traceback` flag and one-line errors (status 2)."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.add_argument('--traceback', action='store_true',
                      help='show full tracebacks instead of one-line errors')

  def error(self, message: str) -> NoReturn:
    fail(f'{message} (--help lists the flags)')

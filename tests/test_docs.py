"""README.md and docs/*.md against the tree and the commands' own flags.

Every relative link (and `#anchor`) must resolve, and every
`python -m experiments.X ...` or `python -m perceiver_jax.... ...` command
written in the docs must name flags that the command defines, read from its
own absl or argparse definitions (`tests/helpers/flag_definitions.py`: one
subprocess, a forked child per command). `--config.a.b` overrides are
checked against the fields of the config file the command names (its
`--config=`, or the flag's default), and every config file a command names
must load. Flags written on their own (in prose, or an ablation's override
line) must be a flag of one of the documented commands or a field of one of
the configs they name.
"""

import dataclasses
import functools
import glob
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Iterator

import pytest

from tests.helpers.command_utils import REPO, one_device_env

DOCS = ['README.md'] + sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, 'docs', '*.md')))
# The command modules the docs may name: ours only (not pytest, venv, ...).
OUR_MODULES = re.compile(r'^(experiments|perceiver_jax)(\.\w+)+$')
# Tokens that end a command on a shell line.
SHELL_SEPARATORS = {'|', '||', '&', '&&', ';'}


@dataclasses.dataclass(frozen=True)
class Command:
  """One `python -m MODULE ARGS` written in a doc."""
  doc: str
  line: int
  module: str
  args: tuple[str, ...]

  def where(self) -> str:
    return (f'{self.doc}:{self.line}: python -m {self.module} '
            f'{" ".join(self.args)}')


def split_fences(text: str) -> Iterator[tuple[bool, str, int]]:
  """(is_code_block, text, first line number) for each part of `text`."""
  in_code, start, part = False, 1, []
  for number, line in enumerate(text.split('\n'), 1):
    if line.lstrip().startswith('```'):
      if part or in_code:
        yield in_code, '\n'.join(part), start
      in_code, start, part = not in_code, number + 1, []
      continue
    part.append(line)
  yield in_code, '\n'.join(part), start


def _commands_in(text: str, doc: str, line: int) -> Iterator[Command]:
  """The `python -m` commands of one shell text (continuations joined)."""
  for match in re.finditer(r'python3? -m (\S+)', text):
    module = match.group(1)
    if not OUR_MODULES.match(module):
      continue
    rest = text[match.end():]
    following = re.search(r'python3? -m ', rest)
    if following:
      rest = rest[:following.start()]
    rest = rest.split('\n')[0]
    try:
      tokens = shlex.split(rest, comments=True)
    except ValueError:  # An unbalanced quote in prose: plain words.
      tokens = rest.split()
    args = []
    for token in tokens:
      if token in SHELL_SEPARATORS:
        break
      args.append(token)
    yield Command(doc, line + text.count('\n', 0, match.start()), module,
                  tuple(args))


def shell_lines(part: str, start: int) -> Iterator[tuple[int, str]]:
  """(first line number, text) of a code block's lines, joining the lines
  that a backslash at the end continues."""
  pending, first = '', start
  for number, line in enumerate(part.split('\n'), start):
    if not pending:
      first = number
    if line.endswith('\\'):
      pending += line[:-1] + ' '
      continue
    yield first, pending + line
    pending = ''
  if pending:
    yield first, pending


def code_spans(part: str, start: int) -> Iterator[tuple[int, str, str]]:
  """(line, text on one line, the prose after it) of each inline span."""
  for span in re.finditer(r'`([^`]+)`', part):
    flat = ' '.join(re.sub(r'\\\n', ' ', span.group(1)).split())
    yield (start + part.count('\n', 0, span.start()), flat,
           part[span.end():])


def doc_commands(doc: str, text: str) -> Iterator[Command]:
  """Commands in code blocks and in inline code spans of `text`. A command
  in a code block whose next line is its `error: ...` shows a mistake and
  is not one to check."""
  for is_code, part, start in split_fences(text):
    if is_code:
      lines = list(shell_lines(part, start))
      for (line, shell), (_, after) in zip(lines, lines[1:] + [(0, '')]):
        if not after.startswith('error:'):
          yield from _commands_in(shell, doc, line)
    else:
      for line, flat, _ in code_spans(part, start):
        yield from _commands_in(flat, doc, line)


def loose_flags(text: str) -> Iterator[tuple[int, str, bool]]:
  """(line, flag name, shown as a mistake) of the flags written on their own:
  inline spans and code lines that start with `--` (an ablation's override,
  a flag named in prose), not those of a `python -m` command or of another
  program. A span followed by `-> `error: ...`` shows a mistake."""
  found = []
  for is_code, part, start in split_fences(text):
    if is_code:
      found += [(line, shell.strip(), False)
                for line, shell in shell_lines(part, start)]
    else:
      found += [(line, flat, bool(re.match(r'\s*->\s*`error:', after)))
                for line, flat, after in code_spans(part, start)]
  for line, code, mistake in found:
    if not code.lstrip('[').startswith('--') or 'python -m' in code:
      continue
    for match in re.finditer(r'(?:^|\s)\[?--([\w.]+)', code):
      yield line, match.group(1).rstrip('.'), mistake


def heading_anchors(text: str) -> set[str]:
  """GitHub's anchors for the headings of a Markdown text."""
  anchors, seen = set(), {}
  for is_code, part, _ in split_fences(text):
    if is_code:
      continue
    for heading in re.findall(r'^#{1,6} +(.+?) *#*$', part, re.M):
      slug = re.sub(r'[^\w\- ]', '', heading.lower()).replace(' ', '-')
      count = seen.get(slug, 0)
      seen[slug] = count + 1
      anchors.add(slug if count == 0 else f'{slug}-{count}')
  return anchors


@functools.lru_cache(maxsize=None)
def read(doc: str) -> str:
  with open(os.path.join(REPO, doc), encoding='utf-8') as f:
    return f.read()


def links(doc: str) -> Iterator[tuple[int, str]]:
  """(line, target) of every Markdown link and image outside code."""
  for is_code, part, start in split_fences(read(doc)):
    if is_code:
      continue
    prose = re.sub(r'`[^`]*`', '', part)
    for match in re.finditer(r'!?\[[^\]]*\]\(([^)\s]+)\)', prose):
      yield start + prose.count('\n', 0, match.start()), match.group(1)


def _run_helper(*args: str) -> dict:
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'tests', 'helpers', 'flag_definitions.py'),
       *args], cwd=REPO, env=one_device_env(), capture_output=True,
      text=True, timeout=120)
  marker = [line for line in result.stdout.splitlines()
            if line.startswith('FLAG_DEFINITIONS ')]
  assert result.returncode == 0 and marker, (
      f'flag_definitions.py {" ".join(args)} failed:\n{result.stderr[-3000:]}')
  return json.loads(marker[-1][len('FLAG_DEFINITIONS '):])


def config_spec(command: Command, definitions: dict) -> tuple[str, str]:
  """(config-file flag, the file spec it gets) of `command`, if it has one
  (our commands have at most one config-file flag)."""
  for flag, default in definitions['config_files'].items():
    for arg in command.args:
      if arg.startswith(f'--{flag}='):
        return flag, arg.split('=', 1)[1]
    return flag, default
  return '', ''


@pytest.fixture(scope='module')
def commands() -> list[Command]:
  found = [c for doc in DOCS for c in doc_commands(doc, read(doc))]
  assert len(found) > 50, 'the docs should show the commands'
  return found


def _named_config_files(commands: list[Command]) -> list[str]:
  """The `--config=configs/...` specs that the commands name explicitly."""
  return sorted({arg.split('=', 1)[1] for c in commands for arg in c.args
                 if re.match(r'--config=configs/[^<]*$', arg)})


@pytest.fixture(scope='module')
def definitions(commands) -> dict[str, dict]:
  """Module -> its flag definitions, and `CONFIGS` -> the named configs'
  fields, all read by one `flag_definitions.py` run."""
  modules = sorted({c.module for c in commands})
  configs = 'configs:' + ','.join(_named_config_files(commands))
  results = _run_helper(configs, *(f'command:{m}' for m in modules))
  found = {m: results[f'command:{m}'] for m in modules}
  found['CONFIGS'] = results[configs]
  return found


def test_links_and_anchors_resolve():
  problems = []
  for doc in DOCS:
    for line, target in links(doc):
      if re.match(r'[a-z]+:', target):  # http:, https:, mailto:
        continue
      path, _, anchor = target.partition('#')
      resolved = (os.path.normpath(os.path.join(os.path.dirname(doc), path))
                  if path else doc)
      if not os.path.exists(os.path.join(REPO, resolved)):
        problems.append(f'{doc}:{line}: {target}: no file {resolved}')
      elif anchor and anchor not in heading_anchors(read(resolved)):
        problems.append(f'{doc}:{line}: {target}: no heading #{anchor} in '
                        f'{resolved}')
  assert not problems, '\n'.join(problems)


def test_every_doc_page_is_linked_from_the_readme():
  linked = {os.path.normpath(target.partition('#')[0])
            for _, target in links('README.md')}
  unlinked = [d for d in DOCS[1:] if d not in linked]
  assert not unlinked, f'README.md links none of {unlinked}'


def test_documented_flags_exist(commands, definitions):
  problems, specs = [], {}
  for command in commands:
    defs = definitions[command.module]
    known = set(defs['flags'])
    known |= {'no' + name for name in defs['booleans']}
    config_flag, spec = config_spec(command, defs)
    for arg in command.args:
      arg = arg.strip('[]')  # `[--flag=value]`: an optional flag.
      if not arg.startswith('--'):
        continue
      name = arg[2:].split('=', 1)[0]
      base, _, field = name.partition('.')
      if field and base == config_flag:
        # `--config.<key>`: a placeholder stands for any field below.
        field = field.split('<', 1)[0].rstrip('.')
        if field and '<' not in spec:
          specs.setdefault(spec, []).append((command, field))
      elif name not in known:
        problems.append(f'{command.where()}\n    --{name} is not a flag of '
                        f'{command.module}')
    if spec and '<' not in spec:
      specs.setdefault(spec, [])
  fields = dict(definitions['CONFIGS'])
  # Configs that only a flag's default names (no `--config=` given).
  missing = sorted(set(specs) - set(fields))
  if missing:
    fields.update(_run_helper('configs:' + ','.join(missing))[
        'configs:' + ','.join(missing)])
  for spec, uses in sorted(specs.items()):
    if isinstance(fields[spec], dict):
      problems.append(f'config {spec} does not load: {fields[spec]["error"]}')
      continue
    for command, field in uses:
      if field not in fields[spec]:
        problems.append(f'{command.where()}\n    {field} is not a field of '
                        f'{spec}')
  assert not problems, '\n'.join(problems)


def test_flags_on_their_own_exist(definitions):
  """A flag named on its own must be a flag of one of the docs' commands,
  and a `--config.<field>` override a field of one of the configs they
  name; one shown as a mistake must be neither. XLA's own flags (`xla_*`,
  given through XLA_FLAGS) are XLA's to define."""
  fields, flags = set(), set()
  for paths in definitions['CONFIGS'].values():
    if isinstance(paths, list):
      fields.update(paths)
  for module, defs in definitions.items():
    if module != 'CONFIGS':
      flags.update(defs['flags'])
      flags.update('no' + name for name in defs['booleans'])
  problems, checked = [], 0
  for doc in DOCS:
    for line, name, mistake in loose_flags(read(doc)):
      if name.startswith('xla_'):
        continue
      checked += 1
      base, _, field = name.partition('.')
      known = (field in fields) if base == 'config' and field else (
          name in flags)
      if mistake and known:
        problems.append(f'{doc}:{line}: --{name} is shown as a mistake but '
                        'exists')
      elif not mistake and not known:
        problems.append(f'{doc}:{line}: --{name} is neither a flag of a '
                        'command nor a field of a config that the docs name')
  assert checked > 30 and not problems, '\n'.join(problems)

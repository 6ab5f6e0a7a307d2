"""Every command turns a user's mistake into one `error: ...` line.

Each case runs a command as a user would (a subprocess from the repository
root) and checks: exit status 2, stderr holding exactly the expected line
(library start-up chatter such as TensorFlow's glog lines aside), and a
scratch directory that the command left exactly as it was. The cases run
in parallel threads: most pay only for absl, a few for JAX or TensorFlow.
"""

import concurrent.futures
import io
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import command_utils
from perceiver_jax import cli

# Lines some libraries print while importing (TensorFlow's and XLA's glog
# lines, absl's pre-init notice): not ours, and not errors.
_LIBRARY_CHATTER = re.compile(
    r'^([IWE]\d{4} |WARNING: All log messages before absl|E0000 |'
    r'To enable the following instructions|'
    r'.*cpu_feature_guard|.*oneDNN custom operations)')

# (module and arguments, the expected stderr line). `{T}` is the scratch
# directory, which holds: `afile` (a file), `empty/` (an empty directory),
# `norun/` (a run directory without checkpoints: config.json only) and
# `run/` (config.json and checkpoints/3, 6).
CASES = [
    # experiments.train
    (['experiments.train', '--wrkdir={T}/x'],
     "error: Unknown command line flag 'wrkdir'. Did you mean: workdir ? "
     '(--helpshort lists the flags)'),
    (['experiments.train', '--config=configs/nope.py'],
     'error: config file configs/nope.py not found; give '
     '--config=path/to/config.py[:arg], e.g. --config=configs/digits.py.'),
    (['experiments.train', '--config=tests/helpers/fault_data.py'],
     'error: tests/helpers/fault_data.py defines no get_config(); give a config file '
     'of configs/ (or one with a get_config function).'),
    (['experiments.train', '--config=configs/digits.py:runlocal',
      '--config.train.batch_sise=32', '--workdir={T}/x'],
     'error: Unknown config field in an override: \'batch_sise\' Did you '
     'mean "batch_size" instead of "batch_sise"? (--traceback for details)'),
    (['experiments.train', '--config.train.num_steps=abc', '--workdir={T}/x'],
     'error: flag --config.train.num_steps=abc: invalid literal for int() '
     "with base 10: 'abc' (--helpshort lists the flags)"),
    (['experiments.train', '--workdir={T}/afile'],
     'error: --workdir={T}/afile is a file; give a directory (new, or a run '
     'to resume).'),
    (['experiments.train', '--workdir={T}/x', 'extra'],
     "error: unexpected arguments ['extra']: every option is a --flag=value "
     '(--helpshort lists them).'),
    # experiments.evaluate
    (['experiments.evaluate'],
     'error: flag --workdir=None: Flag --workdir must have a value other '
     'than None. (--helpshort lists the flags)'),
    (['experiments.evaluate', '--workdir={T}/empty'],
     'error: --workdir={T}/empty holds no run (no config.json); give the run '
     'directory that experiments.train wrote.'),
    (['experiments.evaluate', '--workdir={T}/afile'],
     'error: --workdir={T}/afile is a file; give the run directory that '
     'experiments.train wrote.'),
    (['experiments.evaluate', '--workdir={T}/norun'],
     'error: {T}/norun/checkpoints holds no checkpoint; train the run first '
     '(experiments.train --workdir=...).'),
    (['experiments.evaluate', '--workdir={T}/run',
      '--checkpoint={T}/run/checkpoints/5'],
     'error: --checkpoint={T}/run/checkpoints/5 does not exist; the kept '
     'steps are 3, 6 (e.g. --checkpoint={T}/run/checkpoints/6, or '
     '--checkpoint=all).'),
    (['experiments.evaluate', '--workdir={T}/run', '--checkpoint=newest'],
     "error: --checkpoint=newest is neither 'all' nor a step directory such "
     'as {T}/run/checkpoints/6.'),
    (['experiments.evaluate', '--workdir={T}/run',
      '--config.model.encoder.num_latents=8'],
     'error: --config.model.encoder.num_latents cannot be overridden when evaluating '
     "(the checkpoint was trained with the run's config); evaluation accepts "
     '--config.{evaluator.split,evaluator.batch_size,evaluator.max_examples}.'
     ),
    (['experiments.evaluate', '--workdir={T}/run',
      '--config.evaluator.batch_size'],
     'error: --config.evaluator.batch_size needs a value: '
     '--config.evaluator.batch_size=VALUE.'),
    # experiments.sweep
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s'],
     'error: configs/digits.py defines no get_hyper(h) and no --sweep was '
     "given: add one or more --sweep='FIELD=V1,V2,...' (e.g. "
     "--sweep='seed=0,1,2') or define get_hyper in the config."),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=seed'],
     "error: --sweep='seed' is not FIELD=VALUE,VALUE,...; write it like "
     "--sweep='optimizer.learning_rate=3e-4,1e-3'."),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=optimizer.learnin_rate=1e-3'],
     "error: optimizer.learnin_rate is not a field of the config "
     "('learnin_rate' Did you mean \"learning_rate\" instead of "
     '"learnin_rate"?); check its spelling in the config file.'),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=train.num_steps=3,x'],
     "error: 'x' is not a valid int for train.num_steps (invalid literal for "
     "int() with base 10: 'x')."),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=seed=0,1,2', '--sweep=optimizer.learning_rate=1e-3,3e-3',
      '--zip'],
     'error: --zip pairs the --sweep axes value by value, but they differ in '
     'length (seed has 3, optimizer.learning_rate has 2): give them equally '
     'many values, or drop --zip to cross them.'),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=seed=0', '--sweep=seed=1'],
     'error: --sweep gives seed twice; list all its values in one --sweep.'),
    (['experiments.sweep', '--config=configs/nope.py', '--workdir={T}/s',
      '--sweep=seed=0'],
     'error: config file configs/nope.py not found; give '
     '--config=path/to/config.py[:arg], e.g. --config=configs/digits.py.'),
    (['experiments.sweep', '--config=configs/digits.py',
      '--workdir={T}/afile', '--sweep=seed=0'],
     'error: --workdir={T}/afile is a file; give a directory (new, or the '
     'one of the sweep to resume).'),
    (['experiments.sweep', '--workdir={T}/s'],
     'error: give --config=configs/x.py and --workdir=DIR to run a sweep, or '
     '--summarize=DIR to summarise one.'),
    (['experiments.sweep', '--summarize'],
     'error: a bare --summarize summarises --workdir=DIR; give it, or '
     '--summarize=DIR.'),
    (['experiments.sweep', '--summarize={T}/empty'],
     'error: {T}/empty holds no sweep points (no */sweep_point.json); '
     '--summarize takes the --workdir of a sweep.'),
    (['experiments.sweep', '--config=configs/digits.py', '--workdir={T}/s',
      '--sweep=seed=0', '--parallel=0'],
     'error: ValueError: parallel must be a positive integer, got 0.'),
    # experiments.plot and experiments.attention_maps
    (['experiments.plot'],
     'error: give at least one run directory: --workdir=DIR.'),
    (['experiments.plot', '--workdir={T}/empty'],
     'error: {T}/empty holds no run (no metrics.jsonl); give a run directory '
     'that experiments.train wrote.'),
    (['experiments.attention_maps', '--workdir={T}/empty'],
     'error: --workdir={T}/empty holds no run (no config.json); give the run '
     'directory that experiments.train wrote.'),
    (['experiments.attention_maps', '--workdir={T}/run', '--step=5'],
     'error: --step=5: no such checkpoint in {T}/run/checkpoints; leave '
     '--step out for the newest.'),
    # The measuring tools.
    (['experiments.model_summary', '--config=configs/nope.py'],
     'error: config file configs/nope.py not found; give '
     '--config=path/to/config.py[:arg], e.g. --config=configs/digits.py.'),
    (['experiments.benchmark', '--mode=fly'],
     'error: flag --mode=fly: value should be one of <train|forward|input|'
     'scaling> (--helpshort lists the flags)'),
    (['experiments.gradient_profile', '--calls=many'],
     'error: flag --calls=many: invalid literal for int() with base 10: '
     "'many' (--helpshort lists the flags)"),
    (['experiments.compare_peers', '--rounds=0'],
     'error: --rounds must be at least 1 (--help lists the flags)'),
    (['experiments.compare_peers', '--cpu_devices=0'],
     'error: --cpu_devices must be at least 1 (--help lists the flags)'),
    (['experiments.compare_peers', '--released=fourier',
      '--precision=bfloat16'],
     'error: --released times the float32 forward on one device; leave out '
     '--precision, --peer_precision and --cpu_devices (--help lists the '
     'flags)'),
    (['experiments.benchmark', '--cpu_devices=-2'],
     'error: flag --cpu_devices=-2: -2 is not a positive integer '
     '(--helpshort lists the flags)'),
    (['experiments.benchmark', '--mode=input', '--batch_size=abc'],
     'error: flag --batch_size=abc: invalid literal for int() with base 10: '
     "'abc' (--helpshort lists the flags)"),
    # Dataset preparation.
    (['perceiver_jax.data.imagenet'],
     'error: the following arguments are required: --manual_dir (--help '
     'lists the flags)'),
    (['perceiver_jax.data.imagenet', '--manual_dir={T}/empty',
      '--data_dir={T}/tfds'],
     'error: --manual_dir={T}/empty holds neither ILSVRC2012_img_train.tar '
     'nor ILSVRC2012_img_val.tar; download them from https://image-net.org '
     'into one folder and give that folder (python -m '
     'perceiver_jax.data.imagenet --help).'),
    (['perceiver_jax.data.builders.build_audioset', '--manual_dir={T}/nope',
      '--data_dir={T}/tfds'],
     'error: --manual_dir={T}/nope is not a directory; give the folder '
     "holding AudioSet's four CSVs and clips/ (see docs/audioset.md)."),
    (['perceiver_jax.data.builders.build_audioset', '--manual_dir={T}/empty',
      '--config=video'],
     "error: argument --config: invalid choice: 'video' (choose from "
     "'audio', 'audio_video') (--help lists the flags)"),
    (['perceiver_jax.data.modelnet40', '--manual_dir={T}/nope',
      '--data_dir={T}/tfds'],
     'error: --manual_dir={T}/nope is not a directory; give the folder '
     'holding ModelNet40.zip or its extracted folder '
     '(https://modelnet.cs.princeton.edu/).'),
    (['perceiver_jax.data.modelnet40'],
     'error: flag --manual_dir=None: Flag --manual_dir must have a value '
     'other than None. (--helpshort lists the flags)'),
    # experiments.import_checkpoint / export_checkpoint
    (['experiments.import_checkpoint', '--from={T}/empty',
      '--workdir={T}/x'],
     'error: config.json not found: {T}/empty/config.json'),
    (['experiments.import_checkpoint', '--from={T}/norun',
      '--workdir={T}/x'],
     'error: config.json has model_type None (architectures []); only '
     'Perceiver checkpoints are supported: '
     'PerceiverForImageClassificationFourier, '
     'PerceiverForImageClassificationLearned, '
     'PerceiverForImageClassificationConvProcessing, PerceiverModel.'),
    (['experiments.export_checkpoint', '--workdir={T}/empty',
      '--to={T}/y'],
     'error: no config.json in {T}/empty.'),
    (['experiments.export_checkpoint', '--workdir={T}/norun',
      '--to={T}/y'],
     'error: {T}/norun/config.json is not a perceiver_jax run config (no '
     'data.num_classes or model.input).'),
    # experiments.gpu_report
    (['experiments.gpu_report', '--tiny'],
     'error: flag --out=None: Flag --out must have a value other than None. '
     '(--helpshort lists the flags)'),
    (['experiments.gpu_report', '--tiny', '--out={T}/report',
      '--stage_seconds=headline=abc'],
     "error: ValueError: --stage_seconds: 'abc' is not a number of seconds "
     "(in 'headline=abc')."),
    (['experiments.gpu_report', '--tiny', '--out={T}/report',
      '--budget_seconds=-1'],
     'error: ValueError: --budget_seconds must be positive, got -1.0.'),
    # experiments.predict and configs/images.py
    (['experiments.predict', '--workdir={T}/run'],
     'error: give image files or folders after the flags: python -m '
     'experiments.predict --workdir=RUN FILE_OR_DIR...'),
    (['experiments.predict', '--workdir={T}/run', '{T}/nofile.png'],
     'error: not found: {T}/nofile.png'),
    (['experiments.train', '--config=configs/images.py:dataset=folder,runlocal',
      '--workdir={T}/x'],
     'error: ValueError: dataset=folder needs --config.data.folder=DIR '
     '(DIR/<split>/<class>/<image files>).'),
    (['experiments.train', '--config=configs/images.py:dataset=folder,runlocal',
      '--config.data.folder={T}/run', '--workdir={T}/x'],
     "error: DatasetNotPreparedError: config.data.folder={T}/run has no "
     "'train' split folder (it holds ['checkpoints']); expected "
     'DIR/<split>/<class>/<image files>.'),
    # config.init_from (perceiver_jax/train/finetune.py), config.data.in_memory
    (['experiments.train', '--config=configs/images.py:dataset=cifar10,'
      'runlocal,mock', '--config.init_from={T}/nowhere', '--workdir={T}/x'],
     'error: config.init_from={T}/nowhere holds no run (no config.json); '
     'give a run directory or one of its checkpoints/<step> directories.'),
    (['experiments.train', '--config=configs/images.py:dataset=cifar10,'
      'runlocal,mock', '--config.init_from={T}/norun', '--workdir={T}/x'],
     'error: {T}/norun/config.json is not a perceiver_jax run config (no '
     'model or data.num_classes).'),
    (['experiments.train', '--config=configs/images.py:dataset=cifar10,'
      'runlocal,mock', '--config.data.in_memory=True', '--workdir={T}/x'],
     'error: ValueError: config.data.in_memory=True needs dataset=folder and '
     'random_crop=False, no RandAugment, MixUp or CutMix.'),
]


def _scratch(root) -> None:
  (root / 'afile').write_text('not a directory\n')
  (root / 'empty').mkdir()
  (root / 'norun').mkdir()
  (root / 'norun' / 'config.json').write_text('{}\n')
  (root / 'run').mkdir()
  (root / 'run' / 'config.json').write_text('{}\n')
  for step in (3, 6):
    (root / 'run' / 'checkpoints' / str(step)).mkdir(parents=True)


def _tree(root) -> dict[str, tuple]:
  """Every path under `root` with its size and modification time."""
  tree = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      tree[os.path.relpath(path, root)] = (stat.st_size, stat.st_mtime_ns)
  return tree


def _run(args: list[str]) -> subprocess.CompletedProcess:
  env = command_utils.one_device_env()
  env['TF_CPP_MIN_LOG_LEVEL'] = '1'
  return subprocess.run([sys.executable, '-m', *args], cwd=command_utils.REPO,
                        env=env, capture_output=True, text=True, timeout=240)


def test_at_least_25_distinct_mistakes_over_every_command():
  assert len({tuple(args) for args, _ in CASES}) == len(CASES) >= 25
  commands = {args[0] for args, _ in CASES}
  # Every module with a __main__ block has cases.
  mains = set()
  for package in ('experiments', 'perceiver_jax'):
    for folder, _, files in os.walk(os.path.join(command_utils.REPO,
                                                 package)):
      for name in files:
        path = os.path.join(folder, name)
        if name.endswith('.py') and "__name__ == '__main__'" in open(
            path).read():
          mains.add(os.path.relpath(path, command_utils.REPO)[:-3].replace(
              os.sep, '.'))
  assert mains == commands


def test_every_mistake_is_one_line_status_2_and_writes_nothing(tmp_path):
  _scratch(tmp_path)
  before = _tree(tmp_path)
  cases = [([a.format(T=tmp_path) for a in args],
            line.replace('{T}', str(tmp_path))) for args, line in CASES]
  with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
    results = list(pool.map(lambda case: _run(case[0]), cases))
  failures = []
  for (args, line), result in zip(cases, results):
    lines = [l for l in result.stderr.splitlines()
             if l.strip() and not _LIBRARY_CHATTER.match(l)]
    if result.returncode != 2 or lines != [line]:
      failures.append((args, result.returncode, lines[-5:], line))
  assert not failures, '\n'.join(map(str, failures))
  assert _tree(tmp_path) == before


def test_a_bug_keeps_its_traceback_and_traceback_shows_user_errors(
    monkeypatch, capsys):
  def buggy():
    return {}['missing']

  with pytest.raises(KeyError):
    cli.guard(buggy)

  def mistake():
    raise cli.UsageError('--x=1 is wrong; give --x=2.')

  monkeypatch.setattr(sys, 'argv', ['prog'])
  with pytest.raises(SystemExit) as exit_info:
    cli.guard(mistake)
  assert exit_info.value.code == cli.USAGE_STATUS
  assert capsys.readouterr().err == 'error: --x=1 is wrong; give --x=2.\n'

  def diverged():
    raise FloatingPointError('loss is nan')

  with pytest.raises(SystemExit) as exit_info:
    cli.guard(diverged)
  assert exit_info.value.code == cli.FAILURE_STATUS
  assert capsys.readouterr().err == (
      'error: FloatingPointError: loss is nan\n')
  monkeypatch.setattr(sys, 'argv', ['prog', '--traceback'])
  with pytest.raises(cli.UsageError):
    cli.guard(mistake)


def test_argument_parser_errors_in_one_line(monkeypatch):
  parser = cli.ArgumentParser(prog='tool')
  parser.add_argument('--count', type=int, required=True)
  stderr = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', stderr)
  with pytest.raises(SystemExit) as exit_info:
    parser.parse_args(['--count=two'])
  assert exit_info.value.code == 2
  assert stderr.getvalue() == ("error: argument --count: invalid int value: "
                               "'two' (--help lists the flags)\n")
  assert parser.parse_args(['--count=3', '--traceback']).traceback

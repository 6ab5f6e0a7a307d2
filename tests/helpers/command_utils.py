"""Running the project's commands in a subprocess, as a user would."""

import glob
import hashlib
import os
import subprocess
import sys
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_device_env() -> dict[str, str]:
  """This environment for a subprocess on one CPU device.

  The repository is importable; conftest.py's fake devices (XLA_FLAGS) are
  dropped, like a user's laptop, and its compilation cache is kept.
  """
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  return env


def run_module(*args: str,
               timeout: float = 300) -> subprocess.CompletedProcess:
  """`python -m *args` from the repository root on one CPU device."""
  return subprocess.run([sys.executable, '-m', *args], cwd=REPO,
                        env=one_device_env(), capture_output=True, text=True,
                        timeout=timeout)


def file_digests(directory: str) -> Optional[dict[str, str]]:
  """`{relative path: sha256}` of every file under `directory`, or None.

  Two equal results mean the same files with the same bytes (None: the
  directory does not exist).
  """
  if not os.path.exists(directory):
    return None
  digests = {}
  for path in glob.glob(f'{directory}/**', recursive=True):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        digests[os.path.relpath(path, directory)] = hashlib.sha256(
            f.read()).hexdigest()
  return digests

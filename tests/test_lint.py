"""Lint as ROS does: flake8 with 99 columns and single quotes over the whole project."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_flake8_clean():
    if shutil.which('flake8') is None and not (Path(sys.executable).parent / 'flake8').exists():
        pytest.skip('flake8 is not installed (scripts/setup.sh installs it)')
    proc = subprocess.run(
        [sys.executable, '-m', 'flake8', '--max-line-length=99', '--inline-quotes=single',
         '--extend-exclude=.venv*,build,install,log',
         'ros_segcap', 'training', 'tests', 'scripts', 'benchmarks', 'launch', 'setup.py'],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, 'flake8 found problems:\n' + proc.stdout + proc.stderr

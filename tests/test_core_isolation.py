"""ros_segcap.core never needs ROS: it imports where rclpy cannot, and no module names ROS."""
from __future__ import annotations

import ast
import os
from pathlib import Path
import re
import subprocess
import sys

import pytest

CORE = Path(__file__).resolve().parent.parent / 'ros_segcap' / 'core'
REPO = CORE.parent.parent
ROS_MODULE = re.compile(r'(rclpy|rosidl\w*|rclpy\w*|\w+_msgs|ros_segcap\.ros)(\..*)?')

# Run in a fresh interpreter: a meta path finder refuses rclpy, rosidl* and every *_msgs
# package before anything else is imported, then every core module is imported.
BLOCKED_IMPORT = r"""
import importlib, importlib.abc, pkgutil, re, sys

BLOCK = re.compile(r'(rclpy|rosidl\w*|\w+_msgs)(\..*)?')


class NoRos(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if BLOCK.fullmatch(name):
            raise ImportError(f'{name} is blocked in this test', name=name)
        return None


sys.meta_path.insert(0, NoRos())
for name in ('rclpy', 'std_msgs.msg', 'sensor_msgs'):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f'the blocker let {name} through')

import ros_segcap.core
names = sorted(m.name for m in pkgutil.iter_modules(ros_segcap.core.__path__))
for name in names:
    importlib.import_module(f'ros_segcap.core.{name}')
from ros_segcap.cli import build_parser
build_parser().parse_args(['infer', 'x.png', '--prompt', 'p'])
leaked = sorted(m for m in sys.modules if BLOCK.fullmatch(m))
if leaked:
    raise SystemExit(f'ROS modules imported: {leaked}')
print('imported', len(names), 'core modules:', ' '.join(names))
"""


def core_files() -> list[Path]:
    return sorted(CORE.glob('*.py'))


def test_core_imports_without_rclpy() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', BLOCKED_IMPORT], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = proc.stdout.split(':', 1)[1].split()
    assert set(names) == {p.stem for p in core_files()} - {'__init__'}


def _imported_names(tree: ast.AST, module: str) -> list[str]:
    """Absolute names of every import (also inside functions) and import_module('...')."""
    names = []
    package = module.rsplit('.', 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parent + ([base] if base else []))
            names += [base] + [f'{base}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if ROS_MODULE.fullmatch(node.value):  # importlib.import_module('rclpy') etc.
                names.append(node.value)
    return names


@pytest.mark.parametrize('path', core_files(), ids=lambda p: p.name)
def test_no_ros_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = _imported_names(tree, f'ros_segcap.core.{path.stem}')
    bad = [n for n in names if ROS_MODULE.fullmatch(n)]
    assert not bad, f'{path.name} imports {bad}'


def test_scanner_catches_ros_imports() -> None:
    """The scanner itself sees plain, nested, relative and dynamic imports of ROS."""
    source = ('import rclpy\n'
              'def f():\n    from sensor_msgs.msg import Image\n'
              'from ..ros import node\n'
              'import importlib\nimportlib.import_module("std_msgs.msg")\n')
    names = _imported_names(ast.parse(source), 'ros_segcap.core.fake')
    bad = {n for n in names if ROS_MODULE.fullmatch(n)}
    assert {'rclpy', 'sensor_msgs.msg', 'ros_segcap.ros', 'std_msgs.msg'} <= bad

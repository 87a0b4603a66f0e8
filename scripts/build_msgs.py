#!/usr/bin/env python3
"""Build the interface package ros_segcap_msgs (msg/) into this Python environment.

Usage: .venv/bin/python scripts/build_msgs.py [--force] [--prefix DIR] [--build-dir DIR]

Without a ROS install, the rosidl/ament CMake tools come from pip wheels (requirements-build.txt)
installed under the venv prefix. Steps:

1. Fix the wheels' exported CMake files. Each message wheel's
   `share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake` names the include dirs of
   the machine that built the wheel (`/opt/python/cp311-cp311/include/python3.11` and its
   numpy include dir); CMake refuses to configure with a non-existent include dir. They are
   rewritten in place to this interpreter's Python and numpy include dirs. The first time a
   file is changed its original is kept beside it as `<file>.segcap-orig`. Running again
   changes nothing (the old paths are gone), so the step is idempotent.
2. cmake configure / build / install into the prefix (the venv), so the generated Python
   package lands in the venv's site-packages and the libraries in <prefix>/lib (which the
   ROS wheels' bootstrap puts on LD_LIBRARY_PATH).
3. Check that `import ros_segcap_msgs.msg` works in a fresh interpreter, then write a stamp.
   A later run with the same sources, script and interpreter does nothing.

Every failure prints one line starting with `build_msgs: FAILED:` (after the tail of the
failing tool's log) and exits 1.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = ROOT / 'msg'
PACKAGE = 'ros_segcap_msgs'
# Include dirs of the wheel builder's interpreter (manylinux image), as the exports name them.
PY_INCLUDE_RE = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
NUMPY_INCLUDE_RE = re.compile(
    r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include')
LOG_TAIL_LINES = 25


class BuildError(RuntimeError):
    """A step failed; the message is the one-line reason."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--force', action='store_true', help='rebuild even if up to date')
    parser.add_argument('--prefix', type=Path, default=Path(sys.prefix),
                        help='install prefix holding the ROS wheels (default: this venv)')
    parser.add_argument('--build-dir', type=Path, default=None,
                        help='CMake build dir (default: <prefix>/build/ros_segcap_msgs)')
    return parser.parse_args(argv)


def source_hash() -> str:
    """Hash everything the build depends on: interface files, this script, the interpreter."""
    digest = hashlib.sha1()
    files = sorted(p for p in MSG_DIR.rglob('*')
                   if p.is_file() and 'build' not in p.relative_to(MSG_DIR).parts)
    for path in files + [Path(__file__).resolve()]:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


def python_include_dirs() -> tuple[str, str]:
    """Return this interpreter's Python and numpy include dirs (both must exist)."""
    py_include = sysconfig.get_paths()['include']
    if not (Path(py_include) / 'Python.h').is_file():
        raise BuildError(f'Python.h not found in {py_include}: install the Python headers '
                         f'(apt install python3-dev or a Python built with headers)')
    try:
        import numpy
    except ImportError as exc:
        raise BuildError(f'numpy is not importable ({exc}); run scripts/setup.sh first') from exc
    return py_include, numpy.get_include()


def fix_cmake_exports(prefix: Path) -> int:
    """Rewrite the wheel-builder include dirs in the exported CMake files; return files changed."""
    py_include, np_include = python_include_dirs()
    changed = 0
    for path in sorted((prefix / 'share').glob('*/cmake/*.cmake')):
        text = path.read_text()
        if '/opt/python/' not in text:
            continue
        new = NUMPY_INCLUDE_RE.sub(np_include, text)
        new = PY_INCLUDE_RE.sub(py_include, new)
        if new == text:
            continue
        backup = path.with_name(path.name + '.segcap-orig')
        if not backup.exists():
            shutil.copy2(path, backup)
        path.write_text(new)
        changed += 1
    return changed


def run(cmd: list[str], log: Path, what: str) -> None:
    """Run `cmd`, its output going to `log`; raise BuildError naming `what` if it fails."""
    with log.open('w') as out:
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        except OSError as exc:
            raise BuildError(f'{what}: could not run {cmd[0]} ({exc})') from exc
    if proc.returncode != 0:
        tail = log.read_text(errors='replace').splitlines()[-LOG_TAIL_LINES:]
        print('\n'.join(tail), file=sys.stderr)
        raise BuildError(f'{what} exited with {proc.returncode}; full log: {log}')


def cmake_build(prefix: Path, build_dir: Path) -> None:
    """Configure, build and install the package into `prefix`."""
    cmake = shutil.which('cmake')
    if cmake is None:
        raise BuildError('cmake not found on PATH: apt install cmake (or pip install cmake)')
    build_dir.mkdir(parents=True, exist_ok=True)
    generator = ['-G', 'Ninja'] if shutil.which('ninja') else []
    configure = [
        cmake, '-S', str(MSG_DIR), '-B', str(build_dir), *generator,
        f'-DCMAKE_INSTALL_PREFIX={prefix}', f'-DCMAKE_PREFIX_PATH={prefix}',
        f'-DPython3_EXECUTABLE={sys.executable}', '-DBUILD_TESTING=OFF',
        '-DCMAKE_BUILD_TYPE=Release', f'-DCMAKE_INSTALL_RPATH={prefix / "lib"}',
    ]
    run(configure, build_dir / 'configure.log', 'cmake configure')
    run([cmake, '--build', str(build_dir), '--parallel', '2'], build_dir / 'build.log',
        'cmake build')
    run([cmake, '--install', str(build_dir)], build_dir / 'install.log', 'cmake install')


def check_import(build_dir: Path) -> None:
    """Import the generated messages in a fresh interpreter (as the node will)."""
    code = (f'from {PACKAGE}.msg import SegCapResult, VisualPrompt; '
            f'from {PACKAGE}.srv import Segment; from {PACKAGE}.action import Segment as A; '
            'SegCapResult(); A.Feedback()')
    run([sys.executable, '-c', code], build_dir / 'import-check.log',
        f'import {PACKAGE} after install')


def main(argv: list[str] | None = None) -> int:
    """Build if needed; return the process exit code."""
    args = parse_args(argv)
    prefix = args.prefix.resolve()
    build_dir = (args.build_dir or prefix / 'build' / PACKAGE).resolve()
    stamp = prefix / 'share' / PACKAGE / 'segcap-build-stamp'
    try:
        if not (MSG_DIR / 'package.xml').is_file():
            raise BuildError(f'{MSG_DIR / "package.xml"} not found')
        if not (prefix / 'share' / 'rosidl_default_generators').is_dir():
            raise BuildError(f'rosidl_default_generators is not installed under {prefix}: '
                             f'pip install -c constraints.txt -r requirements-build.txt')
        wanted = source_hash()
        if not args.force and stamp.is_file() and stamp.read_text().strip() == wanted:
            print(f'build_msgs: {PACKAGE} is up to date ({stamp})')
            return 0
        changed = fix_cmake_exports(prefix)
        print(f'build_msgs: rewrote the include dirs of {changed} exported CMake file(s)')
        print(f'build_msgs: building {PACKAGE} in {build_dir} (about a minute on 2 cores)')
        cmake_build(prefix, build_dir)
        check_import(build_dir)
        stamp.write_text(wanted + '\n')
    except BuildError as exc:
        print(f'build_msgs: FAILED: {exc}', file=sys.stderr)
        return 1
    print(f'build_msgs: installed {PACKAGE} into {prefix}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

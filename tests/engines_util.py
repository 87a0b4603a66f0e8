"""Shared by test_backends.py and test_export.py: one ONNX export of the tiny model per run.

Exporting takes ~10 s, so the engines directory is made once per process (memoised) and
removed at exit. Tests that change files copy it first (`copy_engines`).
"""
from __future__ import annotations

import atexit
from pathlib import Path
import shutil
import tempfile

import numpy as np

_EXPORTS: dict[int, Path] = {}


def exported(model) -> Path:
    """Engines directory holding a fresh, verified export of `model` (made once)."""
    key = id(model)
    if key not in _EXPORTS:
        from ros_segcap.export.build import export_engines

        d = Path(tempfile.mkdtemp(prefix='segcap-engines-'))
        atexit.register(shutil.rmtree, d, True)
        export_engines(model, d, echo=lambda s: None)
        _EXPORTS[key] = d
    return _EXPORTS[key]


def copy_engines(src: Path, dst: Path) -> Path:
    """A private copy of an engines directory (for tests that tamper with it)."""
    shutil.copytree(src, dst)
    return dst


def fresh_rng() -> tuple[np.random.Generator, int]:
    """A new random generator each run, and its seed (print it to reproduce a failure)."""
    seed = int(np.random.SeedSequence().entropy % (2 ** 32))
    return np.random.default_rng(seed), seed


def random_restrict(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    """(1, n, side, side) bool: a random box per query (never empty), like box prompts."""
    out = np.zeros((1, n, side, side), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, side, 2)
        y1, x1 = y0 + rng.integers(1, side - y0 + 1), x0 + rng.integers(1, side - x0 + 1)
        out[0, i, y0:y1, x0:x1] = True
    return out

"""Pick and open an engine: by name, or `auto` = tensorrt, then onnxruntime, then torch.

Exported engines come from an engines directory (see `engines_dir`) and are checked against
the loaded model's weights hash first; a stale or missing engine is refused with the
`segcap export` command that fixes it (only `segcap export` builds engines). `auto` never
uses a stale engine: it falls through to the next backend and says why in its one log line.
The torch engine is the model family's own (passed in as `torch_engine`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
import sys
from typing import Callable, Optional

import torch

from ros_segcap.core.protocol import Engine

from ros_segcap.core.files import one_line

from .base import BACKEND_NAMES, EngineError, Engines
from .engine import ArrayEngine
from .manifest import check_engines, export_command, weights_hash
from ros_segcap.core.spec import graph_specs
from .tensorrt_backend import plan_key

ENGINES_ENV = 'SEGCAP_ENGINES'
CHOICES = BACKEND_NAMES + ('auto',)
log = logging.getLogger('ros_segcap.backends')


def engines_dir(explicit: Optional[str | Path] = None) -> Path:
    """Where engines live: explicit, else $SEGCAP_ENGINES, else ./engines, else the checkout's.

    The checkout's engines/ (next to package.xml) is used when ./engines does not exist, so
    `segcap infer` finds engines exported from the repository root wherever it runs.
    """
    if explicit:
        return Path(explicit)
    if os.environ.get(ENGINES_ENV):
        return Path(os.environ[ENGINES_ENV])
    cwd = Path('engines')
    repo = Path(__file__).resolve().parents[2]
    if not cwd.is_dir() and (repo / 'package.xml').is_file() and (repo / 'engines').is_dir():
        return repo / 'engines'
    return cwd


def _fresh(model, model_arg: str, directory: Path, kind: str, digest: str):
    """The EngineCheck of `kind` engines; EngineError with the fix when they are not fresh."""
    key = plan_key() if kind == 'tensorrt' else None
    check = check_engines(directory, model, model_arg, kind=kind, plan_key=key, digest=digest)
    if not check.ok:
        raise EngineError(check.reason)
    return check


# What opening an engine file can raise besides EngineError (unreadable files, a runtime's
# own errors); each becomes a one-line EngineError so `auto` moves on to the next backend.
OPEN_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def _open(backend: str, model, model_arg, directory, digest) -> Engines:
    """Engines of an exported backend; any failure is an EngineError of one line."""
    opener = _open_onnxruntime if backend == 'onnxruntime' else _open_tensorrt
    try:
        return opener(model, model_arg, directory, digest)
    except EngineError:
        raise  # already one line that says how to fix it
    except OPEN_ERRORS as exc:
        raise EngineError(f'cannot open the {backend} engines in {directory} '
                          f'({type(exc).__name__}: {one_line(exc)}); rebuild: '
                          f'{export_command(model_arg, directory, backend == "tensorrt")}'
                          ) from None


def _open_onnxruntime(model, model_arg, directory, digest) -> Engines:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError('onnxruntime is not installed (pip install onnxruntime, or '
                          'onnxruntime-gpu on a CUDA machine)') from None
    from .onnx_backend import OnnxBackend

    check = _fresh(model, model_arg, directory, 'onnx', digest)
    specs = graph_specs(model.config)
    vision = OnnxBackend(check.files['vision'], specs['vision'], digest=digest)
    seg = OnnxBackend(check.files['seg'], specs['seg'], digest=digest)
    return Engines('onnxruntime', vision, seg, check.reason,
                   f'onnxruntime {ort.__version__} on {", ".join(vision.providers)}')


def _open_tensorrt(model, model_arg, directory, digest) -> Engines:
    from .tensorrt_backend import TensorRTBackend, tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        raise EngineError(f'cannot use TensorRT: {why}')
    check = _fresh(model, model_arg, directory, 'tensorrt', digest)
    specs = graph_specs(model.config)
    key = plan_key()
    detail = ', '.join(f'{g} {check.entry["graphs"][g]["plans"][key]["precision"]}'
                       for g in specs)
    return Engines('tensorrt', TensorRTBackend(check.files['vision'], specs['vision']),
                   TensorRTBackend(check.files['seg'], specs['seg']), check.reason,
                   f'TensorRT {key}: {detail}')


def open_engine(model, backend: str = 'auto', *, torch_engine: Callable[[str], Engine],
                model_arg: Optional[str] = None, directory: Optional[str | Path] = None,
                device: str | torch.device = 'cpu',
                say: Optional[Callable[[str], None]] = None) -> Engine:
    """Open the engine of `backend` for `model` (core.protocol.Engine).

    torch_engine(reason): the model family's own torch engine. model_arg: how the user named
    the model (for the export command in messages). Raises EngineError (a ValueError) when a
    named backend cannot run; its message says why and how to fix it. Logs one line saying
    which backend runs and why.
    """
    if backend not in CHOICES:
        raise ValueError(f'unknown backend {backend!r}; use one of {", ".join(CHOICES)}')
    say = say or _say
    model_arg = model_arg or model.config.name
    directory = engines_dir(directory)
    if backend == 'torch':
        engine = torch_engine('requested')
    elif backend in ('onnxruntime', 'tensorrt'):
        engine = ArrayEngine(_open(backend, model, model_arg, directory, weights_hash(model)),
                             device)
    else:
        engine = _auto(model, model_arg, directory, device, torch_engine)
    say(f'segcap backend: {engine.backend} ({engine.reason})'
        + (f' [{engine.detail}]' if engine.detail else ''))
    return engine


def open_runners(model, backend: str, *, model_arg: Optional[str] = None,
                 directory: Optional[str | Path] = None) -> Engines:
    """The array-level vision and seg runners of an exported backend (parity checks)."""
    exported = ('onnxruntime', 'tensorrt')
    if backend not in exported:
        raise ValueError(f'no exported runners for {backend!r}; use one of '
                         f'{", ".join(exported)}')
    return _open(backend, model, model_arg or model.config.name, engines_dir(directory),
                 weights_hash(model))


def _say(line: str) -> None:
    """Log the backend line; print it to stderr when nobody configured logging (CLI, node)."""
    if log.hasHandlers():
        log.info('%s', line)
    else:
        print(line, file=sys.stderr, flush=True)


def _auto(model, model_arg, directory, device, torch_engine) -> Engine:
    digest = weights_hash(model)
    why_not = []
    for name in ('tensorrt', 'onnxruntime'):
        try:
            engines = _open(name, model, model_arg, directory, digest)
        except EngineError as exc:
            why_not.append(f'not {name}: {exc}')
            continue
        engines.reason = f'auto; {"; ".join(why_not + [engines.reason])}'
        return ArrayEngine(engines, device)
    return torch_engine('auto; ' + '; '.join(why_not))

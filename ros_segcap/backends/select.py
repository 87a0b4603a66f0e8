"""Pick and open a backend: by name, or `auto` = tensorrt, then onnxruntime, then torch.

Engines come from an engines directory (see `engines_dir`) and are checked against the
loaded model's weights hash first; a stale or missing engine is rebuilt (rebuild=True) or
refused with the command that fixes it. `auto` never uses a stale engine: it falls through
to the next backend and says why in its one log line.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
import sys
from typing import Callable, Optional

import torch

from ros_segcap.core.model import SegCapModel

from .base import BACKEND_NAMES, EngineError, Engines
from .spec import graph_specs

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


def _rebuild(model: SegCapModel, model_arg: str, directory: Path, tensorrt: bool) -> None:
    from ros_segcap.export.build import export_engines

    export_engines(model, directory, model_arg=model_arg, tensorrt=tensorrt, fp16=tensorrt,
                   echo=lambda s: log.info('%s', s))


def _fresh(model: SegCapModel, model_arg: str, directory: Path, kind: str, rebuild: bool,
           digest: str):
    """EngineCheck that is ok, rebuilding once if allowed; EngineError otherwise."""
    from ros_segcap.export.manifest import check_engines
    from ros_segcap.export.tensorrt_build import plan_key

    key = plan_key() if kind == 'tensorrt' else None
    check = check_engines(directory, model, model_arg, kind=kind, plan_key=key, digest=digest)
    if not check.ok and rebuild:
        log.warning('%s; rebuilding', check.reason)
        _rebuild(model, model_arg, directory, kind == 'tensorrt')
        check = check_engines(directory, model, model_arg, kind=kind, plan_key=key,
                              digest=digest)
    if not check.ok:
        raise EngineError(check.reason)
    return check


def _open_onnxruntime(model, model_arg, directory, rebuild, digest) -> Engines:
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError('onnxruntime is not installed (pip install onnxruntime, or '
                          'onnxruntime-gpu on a CUDA machine)') from None
    from .onnx_backend import OnnxBackend

    check = _fresh(model, model_arg, directory, 'onnx', rebuild, digest)
    specs = graph_specs(model.config)
    vision = OnnxBackend(check.files['vision'], specs['vision'], digest=digest)
    seg = OnnxBackend(check.files['seg'], specs['seg'], digest=digest)
    return Engines('onnxruntime', vision, seg, check.reason,
                   f'onnxruntime {ort.__version__} on {", ".join(vision.providers)}')


def _open_tensorrt(model, model_arg, directory, rebuild, digest) -> Engines:
    from ros_segcap.export.tensorrt_build import plan_key

    from .tensorrt_backend import TensorRTBackend, tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        raise EngineError(f'cannot use TensorRT: {why}')
    check = _fresh(model, model_arg, directory, 'tensorrt', rebuild, digest)
    specs = graph_specs(model.config)
    key = plan_key()
    detail = ', '.join(f'{g} {check.entry["graphs"][g]["plans"][key]["precision"]}'
                       for g in specs)
    return Engines('tensorrt', TensorRTBackend(check.files['vision'], specs['vision']),
                   TensorRTBackend(check.files['seg'], specs['seg']), check.reason,
                   f'TensorRT {key}: {detail}')


def open_engines(model: SegCapModel, backend: str = 'auto', *, model_arg: Optional[str] = None,
                 directory: Optional[str | Path] = None, rebuild: bool = False,
                 device: str | torch.device = 'cpu',
                 say: Optional[Callable[[str], None]] = None) -> Engines:
    """Open the vision and seg runners of `backend` for `model`.

    model_arg: how the user named the model (for the rebuild command in messages).
    Raises EngineError (a ValueError) when a named backend cannot run; its message says why
    and how to fix it. Logs one line saying which backend runs and why.
    """
    if backend not in CHOICES:
        raise ValueError(f'unknown backend {backend!r}; use one of {", ".join(CHOICES)}')
    say = say or _say
    model_arg = model_arg or model.config.name
    directory = engines_dir(directory)
    if backend == 'torch':
        engines = _torch(model, device, 'requested')
    elif backend in ('onnxruntime', 'tensorrt'):
        from ros_segcap.export.manifest import weights_hash

        opener = _open_onnxruntime if backend == 'onnxruntime' else _open_tensorrt
        engines = opener(model, model_arg, directory, rebuild, weights_hash(model))
    else:
        engines = _auto(model, model_arg, directory, rebuild, device)
    say(f'segcap backend: {engines.backend} ({engines.reason})'
        + (f' [{engines.detail}]' if engines.detail else ''))
    return engines


def _say(line: str) -> None:
    """Log the backend line; print it to stderr when nobody configured logging (CLI, node)."""
    if log.hasHandlers():
        log.info('%s', line)
    else:
        print(line, file=sys.stderr, flush=True)


def _torch(model: SegCapModel, device, reason: str) -> Engines:
    from .torch_backend import torch_backends

    vision, seg = torch_backends(model, device)
    return Engines('torch', vision, seg, reason, f'torch {torch.__version__} eager on {device}')


def _auto(model, model_arg, directory, rebuild, device) -> Engines:
    from ros_segcap.export.manifest import weights_hash

    digest = weights_hash(model)
    why_not = []
    for name, opener in (('tensorrt', _open_tensorrt), ('onnxruntime', _open_onnxruntime)):
        try:
            engines = opener(model, model_arg, directory, rebuild, digest)
        except EngineError as exc:
            why_not.append(f'not {name}: {exc}')
            continue
        engines.reason = f'auto; {"; ".join(why_not + [engines.reason])}'
        return engines
    return _torch(model, device, 'auto; ' + '; '.join(why_not))

"""Open a Pipeline from the options: load the model, open its engine, hand both over.

The one place the runtime meets the model registry (ros_segcap.models) and the engine
adapters (ros_segcap.backends); the CLI, the node, the benchmarks and the evaluation all
open their pipelines here. Nothing here builds engines: stale ones are refused with the
`segcap export` command that fixes them (or skipped by `auto`, which says why).

On a CUDA device the model loads on the GPU in the dtype of its weights, segcap-tiny's CPU
decode kernels (fast-q4) are not used (one line says so), and the process reports its peak
GPU memory on stderr / the log when it exits.
"""
from __future__ import annotations

import atexit
from dataclasses import dataclass, fields
import logging
import sys
from typing import Any, Callable, Optional

from ros_segcap.backends.select import open_engine
from ros_segcap.core.options import option
from ros_segcap.core.pipeline import Pipeline, Settings
from ros_segcap.models import family_of

log = logging.getLogger('ros_segcap.runtime')
_peak_reported: set[str] = set()  # CUDA devices whose exit report is registered


@dataclass(frozen=True)
class PipelineConfig:
    """Every option that opens and runs a Pipeline (defaults and ranges: core.options)."""

    model: str = option('model').default  # registry name or model directory
    backend: str = option('backend').default  # torch | onnxruntime | tensorrt | auto
    device: str = option('device').default
    decode_path: str = option('decode_path').default
    allow_pickle: bool = option('allow_pickle').default
    engines_dir: str = option('engines_dir').default
    max_new_tokens: int = option('max_new_tokens').default
    temperature: float = option('temperature').default
    mask_threshold: float = option('mask_threshold').default
    refine_edges: bool = option('refine_edges').default
    check_presence: bool = option('check_presence').default
    region_places: bool = option('region_places').default
    cache_frames: int = option('frame_buffer').default

    def settings(self) -> Settings:
        """The answering settings the Pipeline itself holds."""
        return Settings(**{f.name: getattr(self, f.name) for f in fields(Settings)})


def open_pipeline(config: PipelineConfig = PipelineConfig(), *, model: Any = None,
                  say: Optional[Callable[[str], None]] = None) -> Pipeline:
    """Load config.model (unless `model` is given), open config.backend's engine for it.

    Raises ValueError (EngineError, bad options) or FileNotFoundError with a one-line reason.
    """
    family = family_of(config.model)
    if model is None:
        model = family.load(config.model, device=config.device,
                            allow_pickle=config.allow_pickle, decode_path=config.decode_path)
    else:
        family.prepare(model, decode_path=config.decode_path)
    if getattr(model, 'decode_note', ''):
        (say or _say)(model.decode_note)
    if is_cuda(config.device):
        report_peak_gpu_memory(config.device)
    engine = open_engine(model, config.backend, model_arg=config.model,
                         directory=config.engines_dir or None, device=config.device,
                         torch_engine=lambda why: family.torch_engine(model, config.device,
                                                                      why),
                         say=say)
    return Pipeline(model, engine, config.settings())


def is_cuda(device: Any) -> bool:
    return str(device).startswith('cuda')


def report_peak_gpu_memory(device: str) -> None:
    """Say torch.cuda.max_memory_allocated of `device` when the process exits (once)."""
    if device in _peak_reported:
        return
    _peak_reported.add(device)

    def report() -> None:
        import torch
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
            _say(f'segcap: peak GPU memory {peak:.2f} GiB on {device} '
                 '(torch.cuda.max_memory_allocated)')
    atexit.register(report)


def _say(line: str) -> None:
    """Log a line; print it to stderr when nobody configured logging (CLI, node)."""
    if log.hasHandlers():
        log.info('%s', line)
    else:
        print(line, file=sys.stderr, flush=True)

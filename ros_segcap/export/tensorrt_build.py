"""Build TensorRT plans from the exported ONNX files (tensorrt Python API).

A plan only runs on the TensorRT version and GPU model it was built for, so its file name
carries both, plus the weights hash and the precision:

    <model>.<graph>.<weights12>.trt<version>.<gpu>.<fp16|fp32>.plan

The seg graph gets an optimisation profile over its dynamic query count (min 1, opt
`opt_queries`, max `max_queries`). A timing cache in the engines directory makes rebuilds
fast. Builds take minutes on a Jetson, so progress is printed (TensorRT >= 10's progress
monitor; a heartbeat line every 15 s on older versions).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
import sys
import threading
import time
from typing import Callable, Optional

from ros_segcap.core.spec import GraphSpec, QUERY_DIM
from ros_segcap.backends.tensorrt_backend import (slug, gpu_name, plan_key,  # noqa: F401
                                                  tensorrt_version)

TIMING_CACHE = 'tensorrt.timing.cache'
WORKSPACE_MB = 1024


@dataclass(frozen=True)
class QueryProfile:
    """Optimisation profile of the dynamic query dimension."""

    min: int = 1
    opt: int = 8
    max: int = 64


def plan_name(model_name: str, graph: str, digest: str, precision: str) -> str:
    return (f'{model_name}.{graph}.{digest[:12]}.trt{tensorrt_version()}.'
            f'{slug(gpu_name())}.{precision}.plan')


def _progress_monitor(trt, echo: Callable[[str], None]):
    """A trt.IProgressMonitor that prints phases and steps (TensorRT >= 10), else None."""
    base = getattr(trt, 'IProgressMonitor', None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.t0 = time.monotonic()

        def phase_start(self, phase_name, parent_phase, num_steps):
            echo(f'  [{time.monotonic() - self.t0:6.1f} s] {phase_name} ({num_steps} steps)')

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return Monitor()


class _Heartbeat:
    """Prints 'still building' every `period` seconds (TensorRT without a progress API)."""

    def __init__(self, what: str, echo: Callable[[str], None], period: float = 15.0) -> None:
        self.what, self.echo, self.period = what, echo, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.period):
            self.echo(f'  still building {self.what} ({time.monotonic() - t0:.0f} s)')

    def __enter__(self) -> '_Heartbeat':
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build_plan(onnx_path: Path, plan_path: Path, spec: GraphSpec, *, fp16: bool,
               timing_cache: Optional[Path] = None, profile: QueryProfile = QueryProfile(),
               workspace_mb: int = WORKSPACE_MB,
               echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)
               ) -> dict:
    """Parse `onnx_path`, build a plan into `plan_path`; returns what the manifest records."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split('.')[0]) < 10:  # explicit batch is the only mode in 10+
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    precision = 'fp32'
    if fp16:
        if not getattr(builder, 'platform_has_fast_fp16', True):  # deprecated in TRT 10
            echo('  this GPU has no fast fp16; building fp32')
        else:
            config.set_flag(trt.BuilderFlag.FP16)
            precision = 'fp16'
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b''
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    prof = builder.create_optimization_profile()
    profile_shapes = {}
    for t in spec.inputs:
        if not any(isinstance(d, str) for d in t.shape):
            continue
        shapes = [t.concrete({QUERY_DIM: n}) for n in (profile.min, profile.opt, profile.max)]
        if any(network.get_input(i).name == t.name for i in range(network.num_inputs)):
            prof.set_shape(t.name, *shapes)
            profile_shapes[t.name] = [list(s) for s in shapes]
    config.add_optimization_profile(prof)
    monitor = _progress_monitor(trt, echo)
    if monitor is not None:
        config.progress_monitor = monitor
    echo(f'building TensorRT {precision} plan {plan_path.name} (minutes on a Jetson) ...')
    t0 = time.monotonic()
    with _Heartbeat(plan_path.name, echo) if monitor is None else nullcontext():
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f'TensorRT failed to build {plan_path.name}; see the log above')
    tmp = plan_path.with_name(f'.{plan_path.name}.tmp')
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan_path)
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.monotonic() - t0
    echo(f'  built {plan_path.name} in {seconds:.0f} s')
    return {'file': plan_path.name, 'precision': precision, 'tensorrt': trt.__version__,
            'gpu': gpu_name(), 'profile': profile_shapes, 'build_s': round(seconds, 1),
            'workspace_mb': workspace_mb}

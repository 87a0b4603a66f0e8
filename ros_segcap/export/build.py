"""`segcap export`: ONNX files, optional TensorRT plans, parity checks, the manifest entry.

Order of work: weights hash -> ONNX export (checked) -> onnxruntime vs torch parity on a
random image and 7 queries (refuses to record engines that miss the fp32 tolerances) ->
TensorRT plans (fp16 kept only where the masks still agree, else rebuilt as fp32) ->
manifest.json. Files are written first and the manifest last, so an interrupted export
leaves the previous manifest entry pointing at hashes the new files do not match: stale,
never silently used.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
import platform
from typing import Callable, Optional

import numpy as np

from ros_segcap.backends.base import EngineError
from ros_segcap.backends.manifest import file_sha256, GRAPHS, weights_hash, write_entry
from ros_segcap.core.protocol import Exportable
from ros_segcap.core.spec import SPEC_VERSION, graph_specs, seg_inputs

from . import parity
from .flops import count_flops
from .onnx_export import example_inputs, export_onnx, OPSET
from .tensorrt_build import build_plan, plan_key, plan_name, QueryProfile, TIMING_CACHE
from .torch_runner import torch_backends

VERIFY_QUERIES = 7


def versions() -> dict[str, Optional[str]]:
    """Versions of everything an engine depends on."""
    from importlib import metadata

    import onnx
    import torch

    try:
        ours: Optional[str] = metadata.version('ros_segcap')
    except metadata.PackageNotFoundError:
        ours = None  # running from a source tree that is not pip-installed
    out: dict[str, Optional[str]] = {'ros_segcap': ours, 'torch': torch.__version__,
                                     'onnx': onnx.__version__, 'python': platform.python_version()}
    for mod in ('onnxruntime', 'tensorrt'):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def reference_outputs(model: Exportable, rng: np.random.Generator,
                      queries: int = VERIFY_QUERIES) -> tuple[dict, dict, dict, dict]:
    """(vision inputs, vision outputs, seg inputs, seg outputs) of the torch backend."""
    specs = graph_specs(model.config)
    vision, seg = torch_backends(model)
    v_in = example_inputs(specs['vision'], rng)
    v_out = vision.run(v_in)
    q = example_inputs(specs['seg'], rng, queries)
    s_in = seg_inputs(specs['seg'], v_out, q['query_feat'], q['query_pos'], q['restrict'])
    return v_in, v_out, s_in, seg.run(s_in)


def _check_graph(runner, refs: tuple, graph: str, **tol: float) -> dict:
    """Parity summary of one runner against the torch reference outputs."""
    v_in, v_ref, s_in, s_ref = refs
    inputs, ref = (v_in, v_ref) if graph == 'vision' else (s_in, s_ref)
    got = runner.run(inputs)
    bad = parity.failures(ref, got, **tol)
    return {**parity.summary(ref, got), 'ok': not bad, 'failures': bad}


def export_engines(model: Exportable, out_dir: Path, *, model_arg: Optional[str] = None,
                   fp16: bool = False, tensorrt: bool = False, opset: int = OPSET,
                   verify: bool = True, profile: QueryProfile = QueryProfile(),
                   echo: Callable[[str], None] = print) -> dict:
    """Export a model's engines into out_dir and record them; returns the manifest entry."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = model.config.name
    echo(f'hashing the engine weights of {name} ...')
    digest = weights_hash(model)
    paths = export_onnx(model, out_dir, digest=digest, opset=opset, progress=echo)
    specs = graph_specs(model.config)
    entry = {'model': model_arg or name, 'weights_sha256': digest,
             'spec_version': SPEC_VERSION, 'opset': opset, 'image_size': model.config.image_size,
             'created': datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
             'versions': versions(), 'graphs': {}}
    for graph in GRAPHS:
        entry['graphs'][graph] = {'onnx': paths[graph].name,
                                  'onnx_sha256': file_sha256(paths[graph]),
                                  'bytes': paths[graph].stat().st_size, **specs[graph].to_dict(),
                                  'plans': {}}
    entry['graphs']['vision']['gflops'] = round(sum(count_flops(paths['vision']).values())
                                                / 1e9, 3)
    refs = reference_outputs(model, np.random.default_rng()) if verify or tensorrt else None
    if verify:
        echo('checking onnxruntime against torch (fp32) ...')
        from ros_segcap.backends.onnx_backend import OnnxBackend
        checks = {g: _check_graph(OnnxBackend(paths[g], specs[g], digest=digest,
                                              providers=['CPUExecutionProvider']), refs, g)
                  for g in GRAPHS}
        for graph, res in checks.items():
            entry['graphs'][graph]['parity_onnxruntime'] = res
            if not res['ok']:
                raise EngineError(f'onnxruntime {graph} graph misses the fp32 tolerances: '
                                  f'{"; ".join(res["failures"])}; manifest not updated')
        echo('  parity ok: ' + ', '.join(
            f'{g} max abs {r["max_abs"]:.2g} rel {r["max_rel"]:.2g} mask IoU '
            f'{r["mask_iou"]:.4f}' for g, r in checks.items()))
    if tensorrt:
        _build_plans(model, out_dir, entry, paths, digest, fp16=fp16, profile=profile,
                     refs=refs, echo=echo)
    path = write_entry(out_dir, name, entry)
    echo(f'wrote {", ".join(p.name for p in paths.values())} and {path}')
    return entry


def _build_plans(model: Exportable, out_dir: Path, entry: dict, paths: dict[str, Path],
                 digest: str, *, fp16: bool, profile: QueryProfile, refs: tuple,
                 echo: Callable[[str], None]) -> None:
    """TensorRT plans for both graphs; an fp16 plan that breaks parity is rebuilt as fp32."""
    from ros_segcap.backends.tensorrt_backend import TensorRTBackend, tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        raise EngineError(f"--tensorrt: {why}; on a Jetson use JetPack's TensorRT "
                          '(python3-libnvinfer) in a venv with --system-site-packages')
    specs = graph_specs(model.config)
    key = plan_key()
    cache = out_dir / TIMING_CACHE
    for graph in GRAPHS:
        for precision in (('fp16', 'fp32') if fp16 else ('fp32',)):
            plan = out_dir / plan_name(model.config.name, graph, digest, precision)
            info = build_plan(paths[graph], plan, specs[graph], fp16=precision == 'fp16',
                              timing_cache=cache, profile=profile, echo=echo)
            rtol = parity.FP16_RTOL if info['precision'] == 'fp16' else parity.FP32_RTOL
            res = _check_graph(TensorRTBackend(plan, specs[graph]), refs, graph, rtol=rtol)
            info.update(sha256=file_sha256(plan), parity_torch=res)
            if res['ok'] or precision == 'fp32':
                break
            echo(f'  fp16 {graph} plan misses parity ({"; ".join(res["failures"])}); '
                 'building fp32 instead')
        if not res['ok']:
            raise EngineError(f'TensorRT {graph} plan misses parity even in fp32: '
                              f'{"; ".join(res["failures"])}')
        entry['graphs'][graph]['plans'][key] = info

"""onnxruntime backend: one InferenceSession per graph, providers from what is installed.

Provider order: TensorRT EP (fp16 + engine cache next to the ONNX file), CUDA EP, CPU. Only
the providers this onnxruntime build has are asked for, so a CPU wheel just runs on CPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ros_segcap.core.files import one_line

from .base import EngineError
from ros_segcap.core.spec import GraphSpec

PREFERRED_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider',
                       'CPUExecutionProvider')
THREADS_ENV = 'SEGCAP_ORT_THREADS'  # intra-op threads; default: onnxruntime's own choice


def choose_providers(available: Sequence[str], cache_dir: Optional[Path] = None,
                     fp16: bool = True) -> list:
    """Provider list (names, or (name, options)) in preference order among `available`."""
    chosen: list = []
    for name in PREFERRED_PROVIDERS:
        if name not in available:
            continue
        if name == 'TensorrtExecutionProvider':
            opts = {'trt_fp16_enable': fp16, 'trt_engine_cache_enable': cache_dir is not None,
                    'trt_timing_cache_enable': cache_dir is not None}
            if cache_dir is not None:
                opts['trt_engine_cache_path'] = str(cache_dir / 'ort-trt-cache')
                opts['trt_timing_cache_path'] = str(cache_dir / 'ort-trt-cache')
            chosen.append((name, opts))
        else:
            chosen.append(name)
    if not chosen:
        raise EngineError(f'onnxruntime offers none of {PREFERRED_PROVIDERS} '
                          f'(it has {list(available)})')
    return chosen


class OnnxBackend:
    """Runs one ONNX graph with onnxruntime; refuses a file that does not fit the spec."""

    name = 'onnxruntime'

    def __init__(self, path: Path, spec: GraphSpec, *, digest: Optional[str] = None,
                 providers: Optional[list] = None, threads: Optional[int] = None) -> None:
        """Open `path`; digest: the weights hash the file must carry in its metadata."""
        import onnxruntime as ort

        self.path = Path(path)
        self.spec = spec
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = threads if threads is not None else int(os.environ.get(THREADS_ENV, '0'))
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle workers would spin-wait after each run and steal the cores the LLM (torch)
        # needs next; on a shared 2-core CPU not spinning is also faster for the graph itself.
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
        if providers is None:
            providers = choose_providers(ort.get_available_providers(), self.path.parent)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime's error types derive from Exception only
            raise EngineError(f'onnxruntime cannot load {self.path} ({one_line(exc)}); export '
                              'the engines again (segcap export)') from None
        self.providers = self.session.get_providers()
        self._check(digest)
        self._inputs = {i.name for i in self.session.get_inputs()}

    def _check(self, digest: Optional[str]) -> None:
        meta = self.session.get_modelmeta().custom_metadata_map
        if digest is not None and meta.get('weights_sha256') != digest:
            raise EngineError(f'{self.path} was exported from weights '
                              f'{meta.get("weights_sha256", "?")[:12]}, not {digest[:12]}; '
                              'export the engines again (segcap export)')
        have_in = [i.name for i in self.session.get_inputs()]
        have_out = [o.name for o in self.session.get_outputs()]
        extra = sorted(set(have_in) - set(self.spec.input_names))
        if extra or have_out != self.spec.output_names:
            raise EngineError(f'{self.path} does not fit the {self.spec.name} spec: inputs '
                              f'{have_in}, outputs {have_out}; expected outputs '
                              f'{self.spec.output_names}; export the engines again')

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.spec.prepare(inputs)
        # The exporter drops inputs a graph never reads; feed only what the session takes.
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        outs = self.session.run(self.spec.output_names, feeds)
        return dict(zip(self.spec.output_names, outs))

"""TensorRT backend: deserialise a plan, bind CUDA buffers, run on a private stream.

Device buffers are torch CUDA tensors (torch is already a dependency), so no pycuda or
cuda-python is needed. Needs the `tensorrt` Python package and an NVIDIA GPU; on a Jetson
that is JetPack's TensorRT (python3-libnvinfer), not a PyPI wheel.
"""
from __future__ import annotations

from pathlib import Path
import re
from typing import Mapping

import numpy as np

from .base import EngineError
from ros_segcap.core.spec import GraphSpec


def tensorrt_version() -> str:
    import tensorrt as trt

    return trt.__version__


def gpu_name(device: int = 0) -> str:
    import torch

    return torch.cuda.get_device_name(device)


def slug(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9]+', '-', text).strip('-').lower()


def plan_key() -> str:
    """Manifest key of the plans that fit this machine: '<gpu>-trt<version>'."""
    return f'{slug(gpu_name())}-trt{tensorrt_version()}'


def tensorrt_available() -> tuple[bool, str]:
    """(usable, why not): the tensorrt package and a CUDA device are both needed."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False, 'the tensorrt Python package is not installed'
    import torch

    if not torch.cuda.is_available():
        return False, 'no CUDA GPU is visible to torch'
    return True, ''


def _torch_dtype(trt, dtype):
    import torch

    names = {'float32': torch.float32, 'float16': torch.float16, 'int32': torch.int32,
             'int64': torch.int64, 'bool': torch.bool, 'int8': torch.int8}
    table = {getattr(trt, n): t for n, t in names.items() if hasattr(trt, n)}  # int64: TRT 10
    if dtype not in table:
        raise EngineError(f'TensorRT tensor type {dtype} is not supported by this runner')
    return table[dtype]


class TensorRTBackend:
    """Runs one TensorRT plan (built by ros_segcap.export.tensorrt_build)."""

    name = 'tensorrt'

    def __init__(self, path: Path, spec: GraphSpec, device: str = 'cuda:0') -> None:
        import tensorrt as trt
        import torch

        ok, why = tensorrt_available()
        if not ok:
            raise EngineError(f'cannot run TensorRT plans: {why}')
        self.path = Path(path)
        self.spec = spec
        self.device = torch.device(device)
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineError(f'TensorRT {trt.__version__} cannot load {self.path} (built by '
                              'another TensorRT version or for another GPU); rebuild it with '
                              'segcap export --tensorrt')
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_in[n]]
        outputs = [n for n in names if not is_in[n]]
        if set(self._inputs) - set(spec.input_names) or set(outputs) != set(spec.output_names):
            raise EngineError(f'{self.path} does not fit the {spec.name} spec: inputs '
                              f'{self._inputs}, outputs {outputs}; rebuild the engines')
        self.stream = torch.cuda.Stream(self.device)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        feeds = self.spec.prepare(inputs)
        bound = {}
        with torch.cuda.stream(self.stream):
            for name in self._inputs:
                t = torch.from_numpy(feeds[name]).to(self.device)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                bound[name] = t  # keep alive until the stream is done
            outs = {}
            for name in self.spec.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _torch_dtype(self._trt, self.engine.get_tensor_dtype(name))
                outs[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_tensor_address(name, outs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f'TensorRT execution of {self.path.name} failed')
        self.stream.synchronize()
        types = {t.name: t.dtype for t in self.spec.outputs}
        return {name: np.asarray(t.cpu().numpy(), dtype=types[name])
                for name, t in outs.items()}

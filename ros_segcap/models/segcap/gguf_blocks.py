"""The quantised blocks of a Llama GGUF file, under the Hugging Face parameter names.

SmolLM2's fp32 weights here are the GGUF's Q4_1 (layers) and Q8_0 (embedding / tied LM head)
blocks dequantised (assets.llm_dir), so a decode step can read the blocks themselves with the
kernels of kernels.c and get the same values from 6x fewer bytes. `matching_blocks` returns
only blocks that dequantise exactly to the given fp32 weights; anything else (another
checkpoint, fine-tuned base weights) stays on the fp32 path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch

from .native import Q4Blocks, Q8Blocks

_LAYER_NAMES = {
    'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj', 'attn_v': 'self_attn.v_proj',
    'attn_output': 'self_attn.o_proj', 'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
    'ffn_down': 'mlp.down_proj'}
Blocks = Union[Q4Blocks, Q8Blocks]


def hf_name(gguf_name: str) -> str:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight' ('' when unknown)."""
    if gguf_name == 'token_embd.weight':
        return 'model.embed_tokens.weight'
    parts = gguf_name.split('.')
    if len(parts) == 4 and parts[0] == 'blk' and parts[2] in _LAYER_NAMES:
        return f'model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight'
    return ''


def _half(raw: np.ndarray) -> torch.Tensor:
    """(..., 2) uint8 little-endian fp16 -> fp32 tensor (...)."""
    return torch.from_numpy(np.ascontiguousarray(raw).view(np.float16)[..., 0].astype(np.float32))


def unpack(kind: str, data: np.ndarray, rows: int, cols: int) -> Blocks:
    """Raw ggml rows (rows, bytes per row) uint8 -> Q4Blocks or Q8Blocks."""
    nb = cols // 32
    if kind == 'Q4_1':
        raw = np.asarray(data, dtype=np.uint8).reshape(rows, nb, 20)
        qs = torch.from_numpy(np.ascontiguousarray(raw[..., 4:]).reshape(rows, nb * 16))
        return Q4Blocks(qs, _half(raw[..., 0:2]), _half(raw[..., 2:4]))
    if kind == 'Q8_0':
        raw = np.asarray(data, dtype=np.uint8).reshape(rows, nb, 34)
        q = torch.from_numpy(np.ascontiguousarray(raw[..., 2:]).view(np.int8).reshape(rows, cols))
        return Q8Blocks(q, _half(raw[..., 0:2]))
    raise ValueError(f'unsupported block type {kind}')


def head_rows(rows: int, heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's rotary permutation of q / k weights (as the
    Hugging Face GGUF loader does): hf_weight = gguf_weight[head_rows(...)]."""
    idx = torch.arange(rows)
    return idx.view(heads, rows // heads // 2, 2).transpose(1, 2).reshape(rows)


def read_blocks(path: Union[str, Path]) -> dict[str, tuple[Blocks, list[Blocks]]]:
    """{hf name: (blocks in file row order, candidate row orders)} of the quantised tensors."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    heads = {k: int(reader.fields[k].parts[-1][0]) for k in
             ('llama.attention.head_count', 'llama.attention.head_count_kv')
             if k in reader.fields}
    out = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        kind = t.tensor_type.name
        if not name or kind not in ('Q4_1', 'Q8_0') or len(t.shape) != 2:
            continue
        cols, rows = (int(s) for s in t.shape)
        blocks = unpack(kind, t.data, rows, cols)
        orders = [blocks]
        n = heads.get('llama.attention.head_count' if '.q_proj' in name
                      else 'llama.attention.head_count_kv')
        if ('.q_proj' in name or '.k_proj' in name) and n and rows % (2 * n) == 0:
            perm = head_rows(rows, n)
            orders.insert(0, type(blocks)(*(a if a is None else a[perm] for a in blocks)))
        out[name] = (blocks, orders)
    return out


def matching_blocks(path: Union[str, Path], weights: Mapping[str, torch.Tensor]
                    ) -> dict[str, Blocks]:
    """Blocks of the GGUF at `path` whose dequantised values equal weights[name] exactly
    (fp32, same shape; a weight with more rows, e.g. new token rows, matches on its first
    rows). Tensors that do not match are left out."""
    found = {}
    for name, (_, orders) in read_blocks(path).items():
        w = weights.get(name)
        if w is None or w.dim() != 2 or w.dtype != torch.float32:
            continue
        for blocks in orders:
            rows, cols = blocks.shape
            if w.shape[1] == cols and w.shape[0] >= rows and \
                    torch.equal(blocks.dequantize(), w[:rows]):
                found[name] = blocks
                break
    return found

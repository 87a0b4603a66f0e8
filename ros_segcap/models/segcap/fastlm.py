"""A lean Llama forward with a static KV cache, for fast decoding on CPU.

Hugging Face's generic forward spends most of a decode step on Python overhead for a model
as small as SmolLM2-135M (~87 ms/token vs ~12.5 ms to read the fp32 weights once). This
module re-runs the same maths over the same weights with fused QKV and gate/up projections,
precomputed rotary tables and a preallocated cache, so a decode step is ~25 tensor ops per
layer. Each fp weight is split by outputs into one block per torch thread, and a decode
row is multiplied with torch.bmm over the blocks: MKL ran the one-row product on a single
thread. LoRA adapters (peft) are merged into the fused weights. The cache keeps a prefix
(system prompt + visual block) so another command on the same frame only prefills its own
question tokens.

With quantize='q4' (decode path 'fast-q4'), decode steps read the LLM's own GGUF blocks
instead (Q4_1 layers, Q8_0 LM head; gguf_blocks.py) with the C kernels of kernels.c: the same
weight values as the fp32 path (the fp32 weights are those blocks dequantised; LoRA adapters
are applied beside the blocks, unmerged), from ~6x fewer bytes. Prefill stays on the fp32
blocks, where the matrix products are compute-bound.

The snapshot of the weights is rebuilt automatically when any parameter changes in place
(training steps bump tensor versions).
"""
from __future__ import annotations

from typing import Hashable, NamedTuple, Optional

import torch
from torch import nn
import torch.nn.functional as F

from .native import Q4Blocks, Q8Blocks


def effective_weight(linear: nn.Module) -> torch.Tensor:
    """Weight of a Linear, with a peft LoRA adapter merged in when present."""
    base = getattr(linear, 'base_layer', None)
    if base is None:
        return linear.weight.detach()
    w = base.weight.detach().clone()
    for name in getattr(linear, 'active_adapters', ['default']):
        if name in linear.lora_A:
            a, b = linear.lora_A[name].weight, linear.lora_B[name].weight
            w += (b @ a).detach() * linear.scaling[name]
    return w


class Blocks(NamedTuple):
    """A fp matmul weight split by outputs into one block per thread: (parts, out/p, in).

    A one-row product x @ W.T is one matrix-vector product, and MKL ran it on one thread
    here (10-16 GB/s on 2 cores). torch.bmm of the row against the blocks runs one block
    per thread: 18-22 GB/s for the attention and down projections.
    """
    w: torch.Tensor


class BlocksT(NamedTuple):
    """Blocks stored as (parts, in, out/p): faster for weights with many more outputs than
    inputs (gate/up 19 -> 27 GB/s, the LM head 25 -> 33 GB/s on 2 cores)."""
    w: torch.Tensor


def split_weight(w: torch.Tensor, threads: int):
    """(out, in) fp weight -> Blocks or BlocksT with the most parts <= threads that divide
    out (one part for one thread)."""
    out, inp = w.shape
    parts = max(p for p in range(1, max(1, threads) + 1) if out % p == 0)
    if out >= 2 * inp:
        return BlocksT(w.view(parts, out // parts, inp).transpose(1, 2).contiguous())
    return Blocks(w.contiguous().view(parts, out // parts, inp))


def base_weight(linear: nn.Module) -> torch.Tensor:
    """Weight of a Linear without its LoRA adapter."""
    return getattr(linear, 'base_layer', linear).weight.detach()


def lora_parts(linear: nn.Module) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(A (r, in), B (out, r) * scaling) of the active peft adapters of a Linear, or None."""
    if getattr(linear, 'base_layer', None) is None:
        return None
    a, b = [], []
    for name in getattr(linear, 'active_adapters', ['default']):
        if name in linear.lora_A:
            a.append(linear.lora_A[name].weight.detach().float())
            b.append(linear.lora_B[name].weight.detach().float() * linear.scaling[name])
    return (torch.cat(a), torch.cat(b, 1)) if a else None


def fuse_q4(parts: list, linears: list[nn.Module]) -> Q4Blocks:
    """Q4Blocks of several Linears stacked by outputs (fused QKV, gate/up), with their LoRA
    adapters as one adapter: A stacked, B block-diagonal."""
    qs, d, m = (torch.cat([getattr(p, k) for p in parts]).contiguous() for k in ('qs', 'd', 'm'))
    loras = [lora_parts(lin) for lin in linears]
    if all(lo is None for lo in loras):
        return Q4Blocks(qs, d, m)
    cols = qs.shape[1] * 2
    rows = [p.qs.shape[0] for p in parts]
    ranks = [0 if lo is None else lo[0].shape[0] for lo in loras]
    la = torch.zeros(sum(ranks), cols)
    lb = torch.zeros(sum(rows), sum(ranks))
    r0 = c0 = 0
    for lo, n, r in zip(loras, rows, ranks):
        if lo is not None:
            la[c0:c0 + r] = lo[0]
            lb[r0:r0 + n, c0:c0 + r] = lo[1]
        r0, c0 = r0 + n, c0 + r
    return Q4Blocks(qs, d, m, la.contiguous(), lb.contiguous())


class Q8Head(NamedTuple):
    """The LM head for decode steps: Q8_0 blocks of the base vocabulary + fp32 new rows."""
    base: Q8Blocks
    tail: torch.Tensor  # (new rows, H) fp32


def _versions(lm: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in lm.parameters())


class FastLlama:
    """Inference-only Llama over the weights of a LlamaForCausalLM (batch 1)."""

    def __init__(self, lm: nn.Module, max_len: int = 2048,
                 dtype: torch.dtype = torch.float32, quantize: Optional[str] = None,
                 threads: Optional[int] = None, gguf: Optional[str] = None) -> None:
        if quantize not in (None, 'q4'):
            raise ValueError(f'quantize must be None or q4, got {quantize!r}')
        if quantize == 'q4' and (gguf is None or dtype != torch.float32):
            raise ValueError("quantize='q4' needs the LLM's GGUF file and fp32")
        self.quantize = quantize
        self.threads = threads or torch.get_num_threads()  # weight blocks per matmul
        cfg = lm.config
        self.lm = lm
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, 'head_dim', None) or cfg.hidden_size // self.n_heads
        self.eps = cfg.rms_norm_eps
        self.max_len = max_len
        self.dtype = dtype
        self.kernels = None
        self.q_layers: list[dict] = []
        self.q_head: Optional[Q8Head] = None
        self.c_step = None  # native.StepModel when every layer has Q4 blocks
        self._build(lm)
        self._rope(cfg)
        n_layers = len(self.layers)
        shape = (n_layers, self.n_kv, max_len, self.head_dim)
        device = self.final_norm.device
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        if quantize == 'q4':
            self._build_q4(lm, gguf)
        self.length = 0  # valid positions in the cache
        self.prefix_key: Optional[Hashable] = None
        self.prefix_len = 0

    def _weight(self, w: torch.Tensor):
        """A matmul weight as fp blocks (q4 keeps fp32 blocks for prefill)."""
        return split_weight(w.to(self.dtype), self.threads)

    def _head(self, w: torch.Tensor):
        """The LM head: fp blocks like every other weight."""
        return self._weight(w)

    @staticmethod
    def _linear(x: torch.Tensor, w) -> torch.Tensor:
        if isinstance(w, (Blocks, BlocksT)):
            parts, t = w.w.shape[0], x.shape[-2]
            blocks = w.w if isinstance(w, BlocksT) else w.w.transpose(1, 2)
            y = torch.bmm(x.reshape(1, t, -1).expand(parts, t, -1), blocks)  # (parts, T, o/p)
            if t == 1:
                return y.view(*x.shape[:-1], -1)
            return y.transpose(0, 1).reshape(*x.shape[:-1], -1)
        return F.linear(x, w)

    def _build(self, lm: nn.Module) -> None:
        self.version = _versions(lm)
        layers = []
        for layer in lm.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            layers.append(dict(
                ln1=layer.input_layernorm.weight.detach().to(self.dtype),
                wqkv=self._weight(torch.cat([effective_weight(att.q_proj),
                                             effective_weight(att.k_proj),
                                             effective_weight(att.v_proj)])),
                wo=self._weight(effective_weight(att.o_proj)),
                ln2=layer.post_attention_layernorm.weight.detach().to(self.dtype),
                wgu=self._weight(torch.cat([effective_weight(mlp.gate_proj),
                                            effective_weight(mlp.up_proj)])),
                wdown=self._weight(effective_weight(mlp.down_proj))))
        self.layers = layers
        self.final_norm = lm.model.norm.weight.detach().to(self.dtype)
        self.head = self._head(effective_weight(lm.lm_head))

    def _build_q4(self, lm: nn.Module, gguf: str) -> None:
        """Decode-step weights from the GGUF blocks that dequantise to the base weights."""
        from . import native
        from .gguf_blocks import matching_blocks

        if self.final_norm.device.type != 'cpu':
            raise ValueError(f'fast-q4 runs on the CPU; the LLM is on {self.final_norm.device}')
        self.kernels = native.load()
        base = {'model.embed_tokens.weight': base_weight(lm.lm_head)}
        groups = {'wqkv': ('self_attn', ('q_proj', 'k_proj', 'v_proj')),
                  'wo': ('self_attn', ('o_proj',)),
                  'wgu': ('mlp', ('gate_proj', 'up_proj')), 'wdown': ('mlp', ('down_proj',))}
        for i, layer in enumerate(lm.model.layers):
            for part, names in groups.values():
                for n in names:
                    base[f'model.layers.{i}.{part}.{n}.weight'] = \
                        base_weight(getattr(getattr(layer, part), n))
        found = matching_blocks(gguf, base)
        for i, layer in enumerate(lm.model.layers):
            q = {}
            for key, (part, names) in groups.items():
                full = [f'model.layers.{i}.{part}.{n}.weight' for n in names]
                if all(f in found for f in full):
                    q[key] = fuse_q4([found[f] for f in full],
                                     [getattr(getattr(layer, part), n) for n in names])
            self.q_layers.append(q)
        head = found.get('model.embed_tokens.weight')
        if isinstance(head, Q8Blocks) and lora_parts(lm.lm_head) is None:
            tail = effective_weight(lm.lm_head)[head.shape[0]:].float().contiguous()
            self.q_head = Q8Head(head, tail)
        self.q_missing = sum(4 - len(q) for q in self.q_layers) + (self.q_head is None)
        if self.q_missing == 4 * len(self.q_layers) + 1:
            raise ValueError(f'no block of {gguf} equals the base weights (another or a '
                             'fine-tuned base model?)')
        if all(len(q) == 4 for q in self.q_layers):  # whole decode steps in C
            self.c_step = native.step_model(
                self.q_layers, [(w['ln1'], w['ln2']) for w in self.layers], self.k_cache,
                self.v_cache, self.cos, self.sin, self.final_norm, self.n_heads, self.eps,
                self.threads)

    def weight_bytes(self) -> int:
        """Bytes of matmul weights read per decoded token (all layers + LM head)."""
        def size(w) -> int:
            if isinstance(w, (Q4Blocks, Q8Blocks)):
                return w.nbytes()
            if isinstance(w, Q8Head):
                return w.base.nbytes() + size(w.tail)
            if isinstance(w, tuple):
                return sum(t.numel() * t.element_size() for t in w)
            return w.numel() * w.element_size()
        total = size(self.q_head or self.head)
        total += self.final_norm.numel() * self.final_norm.element_size()
        for i, layer in enumerate(self.layers):
            q = self.q_layers[i] if self.q_layers else {}
            total += sum(size(q.get(k, w)) for k, w in layer.items())
        return total

    def _mm(self, x: torch.Tensor, w, q: Optional[Q4Blocks]) -> torch.Tensor:
        """x (T, in) @ W.T: one decode row over the GGUF blocks when they exist."""
        if q is not None and x.shape[0] == 1:
            from .native import gemv_q4_1
            return gemv_q4_1(self.kernels, q, x[0], self.threads)[None]
        return self._linear(x, w)

    def _rope(self, cfg) -> None:
        params = getattr(cfg, 'rope_parameters', None) or {}
        theta = params.get('rope_theta', getattr(cfg, 'rope_theta', 10000.0))
        if params.get('rope_type', 'default') != 'default':
            raise ValueError(f'fast decode supports default RoPE only, not {params}')
        hd = self.head_dim
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        freqs = torch.arange(self.max_len, dtype=torch.float32)[:, None] * inv[None]
        emb = torch.cat([freqs, freqs], -1)
        device = self.final_norm.device
        self.cos = emb.cos().to(self.dtype).to(device)
        # rotate_half(x) * sin == x.roll(hd / 2) * [-sin, sin]: one roll instead of two
        # slices, a negation and a cat (sign flips are exact, so the maths is unchanged).
        sin = emb.sin()
        self.sin = torch.cat([-sin[:, :hd // 2], sin[:, hd // 2:]], -1).to(self.dtype).to(device)

    def is_stale(self) -> bool:
        return _versions(self.lm) != self.version

    def _norm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, w.shape, w, self.eps)  # one op, same values as HF's RMSNorm

    @torch.no_grad()
    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x (T, D) embeddings at positions start..start+T-1 -> hidden (T, D) after the norm."""
        t = x.shape[0]
        end = start + t
        if end > self.max_len:
            raise ValueError(f'sequence of {end} tokens exceeds the cache of {self.max_len}')
        x = x.to(self.dtype)
        cos, sin = self.cos[start:end], self.sin[start:end]
        h_q, h_kv, hd = self.n_heads, self.n_kv, self.head_dim
        n_qk = h_q + h_kv
        mask = None
        if t > 1:
            pos = torch.arange(end, device=x.device)
            mask = pos[None, :] <= (start + torch.arange(t, device=x.device))[:, None]
        for i, w in enumerate(self.layers):
            q4 = self.q_layers[i] if self.q_layers else {}
            qkv = self._mm(self._norm(x, w['ln1']), w['wqkv'], q4.get('wqkv'))
            qk = qkv[:, :n_qk * hd].view(t, n_qk, hd).transpose(0, 1)  # (Hq + Hkv, T, hd)
            qk = qk * cos + qk.roll(hd // 2, -1) * sin  # RoPE on queries and keys at once
            q = qk[:h_q]
            self.k_cache[i, :, start:end] = qk[h_q:]
            self.v_cache[i, :, start:end] = qkv[:, n_qk * hd:].view(t, h_kv, hd).transpose(0, 1)
            att = F.scaled_dot_product_attention(
                q[None], self.k_cache[i, :, :end][None], self.v_cache[i, :, :end][None],
                attn_mask=mask, enable_gqa=True)[0]
            x = x + self._mm(att.transpose(0, 1).reshape(t, h_q * hd), w['wo'], q4.get('wo'))
            g, u = self._mm(self._norm(x, w['ln2']), w['wgu'], q4.get('wgu')).chunk(2, -1)
            x = x + self._mm(F.silu(g) * u, w['wdown'], q4.get('wdown'))
        self.length = end
        return self._norm(x, self.final_norm)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.q_head is not None:
            from .native import gemv_q8_0
            x = h.float().contiguous()
            y = gemv_q8_0(self.kernels, self.q_head.base, x, self.threads)
            return torch.cat([y, self.q_head.tail @ x]) if len(self.q_head.tail) else y
        x = h.to(self.dtype)[None]
        return self._linear(x, self.head)[0].float()

    def prefill(self, embeds: torch.Tensor, prefix_len: int = 0,
                prefix_key: Optional[Hashable] = None) -> torch.Tensor:
        """Run a prompt (T, D); reuse the cached prefix when prefix_key matches.

        Returns the hidden state of the last prompt position (D,).
        """
        start = 0
        if (prefix_key is not None and prefix_key == self.prefix_key
                and prefix_len == self.prefix_len and 0 < prefix_len < embeds.shape[0]):
            start = prefix_len  # positions [0, prefix_len) are still in the cache
        h = self.forward(embeds[start:], start)
        if prefix_key is not None and 0 < prefix_len < embeds.shape[0]:
            self.prefix_key, self.prefix_len = prefix_key, prefix_len
        else:
            self.prefix_key, self.prefix_len = None, 0
        return h[-1]

    def step(self, embed: torch.Tensor) -> torch.Tensor:
        """One new token embedding (D,) at the end of the cache -> its hidden state (D,)."""
        if self.c_step is not None:
            from .native import decode_step
            if self.length >= self.max_len:
                raise ValueError(f'sequence of {self.length + 1} tokens exceeds the cache '
                                 f'of {self.max_len}')
            h = decode_step(self.kernels, self.c_step, embed, self.length)
            self.length += 1
            return h
        return self.forward(embed[None], self.length)[0]

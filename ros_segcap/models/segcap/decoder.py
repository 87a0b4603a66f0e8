"""The OMG decoder: object queries and prompt queries with masked attention (Mask2Former-style).

Each layer: masked cross-attention to one memory scale (round robin 32 -> 16 -> 8), then
self-attention, then an FFN (post-norm). Before the first layer and after every layer a head
gives class logits (K+1, last = void) and mask logits (query embedding . mask features). The
cross-attention of layer l only sees pixels where layer l-1's mask has sigmoid >= 0.5,
intersected with the query's restriction (a window around a point, a box, a mask); a fully
blocked row falls back to the restriction alone.

Learnable queries attend to each other. Prompt and [SEG] queries ('independent' mode) attend
only to themselves, so each one's output depends on its own inputs and the frame only: the
number of queries in a batch never changes a result, and a restricted query never sees
anything outside its region.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
import torch.nn.functional as F

from .config import SegCapConfig
from .proposals import CentreHead

from ros_segcap.core.frames import DecoderOutput  # noqa: F401
from ros_segcap.core.preprocess import (POINT_HALF_SIZE, POINT_WINDOW,  # noqa: F401
                                        PROMPT_KIND_IDS)


class Attention(nn.Module):
    """Multi-head attention on (B, N, D) with a boolean `allowed` mask (B, 1|H, N, M)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, q, k, v, allowed: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, d = q.shape
        q, k, v = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, pos, memory, memory_pos, cross_allowed, self_allowed):
        """x, pos: (B, N, D); memory: (B, M, D); memory_pos: (M, D); allowed: bool masks."""
        x = self.norm1(x + self.cross_attn(x + pos, memory + memory_pos, memory,
                                           cross_allowed[:, None]))
        x = self.norm2(x + self.self_attn(x + pos, x + pos, x, self_allowed))
        return self.norm3(x + self.ffn(x))


class MLP(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def box_sine_embedding(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., 4) normalised (cx, cy, w, h) -> (..., dim) sine embedding, dim/4 per coordinate."""
    per = dim // 4
    freq = 10000 ** (2 * (torch.arange(per, device=boxes.device) // 2) / per)
    x = boxes[..., None] * 2 * math.pi / freq  # (..., 4, per)
    x = torch.stack([x[..., 0::2].sin(), x[..., 1::2].cos()], -1).flatten(-2)
    return x.flatten(-2)


class OMGDecoder(nn.Module):
    """Object queries + prompt queries -> per-layer class and mask predictions."""

    def __init__(self, config: SegCapConfig) -> None:
        super().__init__()
        d = config.dim
        self.num_layers = config.decoder_layers
        self.num_heads = config.num_heads
        self.query_feat = nn.Embedding(config.num_queries, d)
        self.query_pos = nn.Embedding(config.num_queries, d)
        self.prompt_feat = nn.Embedding(len(PROMPT_KIND_IDS), d)
        self.prompt_pos = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(DecoderLayer(d, config.num_heads, config.ffn_dim)
                                    for _ in range(config.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.class_head = nn.Linear(d, config.num_classes + 1)
        self.mask_embed = MLP([d, d, d, d])
        self.centre_head = CentreHead(d) if config.proposals else None  # object centres

    def learnable_queries(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Nq, D) features and positions of the learnable object queries."""
        feat = self.query_feat.weight[None].expand(batch, -1, -1)
        pos = self.query_pos.weight[None].expand(batch, -1, -1)
        return feat, pos

    def prompt_queries(self, kinds: torch.Tensor, boxes: torch.Tensor):
        """kinds (B, N) int64 in PROMPT_KIND_IDS, boxes (B, N, 4) cxcywh in 0..1 -> feat, pos."""
        pos = self.prompt_pos(box_sine_embedding(boxes, self.query_feat.weight.shape[1]))
        return self.prompt_feat(kinds), pos

    def heads(self, x: torch.Tensor, mask_features: torch.Tensor):
        """x (B, N, D) -> class logits (B, N, K+1), mask logits (B, N, Hm, Wm)."""
        x = self.norm(x)
        masks = torch.einsum('bnd,bdhw->bnhw', self.mask_embed(x), mask_features)
        return self.class_head(x), masks

    @staticmethod
    def _cross_allowed(mask_logits, size, restrict_maps, level):
        """Allowed pixels (B, N, h*w) of one memory scale from the previous masks."""
        m = F.interpolate(mask_logits.detach(), size=size, mode='bilinear', align_corners=False)
        allowed = m.flatten(2) >= 0  # sigmoid >= 0.5
        if restrict_maps is not None:
            region = restrict_maps[level]
            allowed = allowed & region
            fallback = region
        else:
            fallback = torch.ones_like(allowed)
        empty = ~allowed.any(-1, keepdim=True)
        return torch.where(empty, fallback, allowed)

    def forward(self, query_feat, query_pos, mask_features, memories, memory_pos,
                restrict: Optional[torch.Tensor] = None, independent: bool = False
                ) -> DecoderOutput:
        """Run all layers.

        query_feat, query_pos: (B, N, D). mask_features: (B, D, Hm, Wm). memories[i]:
        (B, h_i * w_i, D); memory_pos[i]: (h_i * w_i, D). restrict: (B, N, Hm, Wm) bool, the
        pixels each query may attend to (None = all). independent: queries attend only to
        themselves in self-attention (prompt / [SEG] queries).
        """
        b, n, _ = query_feat.shape
        sizes = [self._memory_size(m, mask_features) for m in memories]
        restrict_maps = None
        if restrict is not None:
            restrict_maps = [self._restrict_to(restrict, s) for s in sizes]
        self_allowed = None
        if independent:
            self_allowed = torch.eye(n, dtype=torch.bool, device=query_feat.device)[None, None]
        x = query_feat
        cls, masks = self.heads(x, mask_features)
        all_cls, all_masks = [cls], [masks]
        for i, layer in enumerate(self.layers):
            level = i % len(memories)
            allowed = self._cross_allowed(masks, sizes[level], restrict_maps, level)
            x = layer(x, query_pos, memories[level], memory_pos[level], allowed, self_allowed)
            cls, masks = self.heads(x, mask_features)
            all_cls.append(cls)
            all_masks.append(masks)
        return DecoderOutput(all_cls, all_masks, self.norm(x), query_pos)

    @staticmethod
    def _memory_size(memory: torch.Tensor, mask_features: torch.Tensor) -> tuple[int, int]:
        """Side lengths of a square memory map (the input is always square)."""
        side = int(round(math.sqrt(memory.shape[1])))
        return side, side

    @staticmethod
    def _restrict_to(restrict: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, N, Hm, Wm) bool -> (B, N, h*w) bool: a cell is allowed if any pixel is."""
        r = F.adaptive_max_pool2d(restrict.float().flatten(0, 1)[:, None], size)
        return (r[:, 0] > 0).view(restrict.shape[0], restrict.shape[1], -1)

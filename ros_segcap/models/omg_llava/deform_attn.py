"""Multi-scale deformable attention in plain torch (grid_sample), exportable to ONNX >= 16.

Parameter names are mmcv's `MultiScaleDeformableAttention`: sampling_offsets,
attention_weights, value_proj, output_proj (all nn.Linear), so an mmdet state dict loads
1:1 under the module's prefix (in the OMG-Seg head:
`panoptic_head.pixel_decoder.encoder.layers.{i}.self_attn.`).

Semantics follow mmcv's CPU path (`multi_scale_deformable_attn_pytorch`) and the module's
forward: the value is the query without its position; offsets are in pixels of each level
and are divided by that level's (w, h); sampling is bilinear with zero padding and
align_corners=False; the attention weights are a softmax over levels * points per head; the
output projection is added to the un-positioned query (dropout 0 at inference).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

Shapes = Sequence[Tuple[int, int]]


def sample_levels(value: torch.Tensor, shapes: Shapes, locations: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear samples of a multi-level value.

    value: (B, sum(h*w), heads, d) levels concatenated in `shapes` order, raster order inside.
    shapes: [(h, w)] per level (Python ints, so exported graphs have static splits).
    locations: (B, Q, heads, L, P, 2) as (x, y) in [0, 1] of each level, (0, 0) the top-left
        corner of the top-left pixel.
    weights: (B, Q, heads, L, P).
    Returns (B, Q, heads * d).
    """
    bsz, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    grids = 2.0 * locations - 1.0  # grid_sample wants [-1, 1]
    per_level = value.split([h * w for h, w in shapes], dim=1)
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (B, h*w, heads, d) -> (B*heads, d, h, w)
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(bsz * heads, dim, h, w)
        # (B, Q, heads, P, 2) -> (B*heads, Q, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(bsz * heads, queries, points, 2)
        sampled.append(F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))  # (B*heads, d, Q, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*heads, d, Q, L*P)
    w = weights.transpose(1, 2).reshape(bsz * heads, 1, queries, levels * points)
    out = (stacked * w).sum(-1)  # (B*heads, d, Q)
    return out.reshape(bsz, heads * dim, queries).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """Deformable self/cross attention over L feature levels with P points per head."""

    def __init__(self, *, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 3,
                 num_points: int = 4) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads}).')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        n = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dims, n * 2)
        self.attention_weights = nn.Linear(embed_dims, n)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor,
                reference_points: torch.Tensor, shapes: Shapes,
                value: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from queries to the multi-level value.

        query, query_pos: (B, Q, C). reference_points: (B, Q, L, 2) as (x, y) in [0, 1].
        shapes: [(h, w)] per level. value: (B, sum(h*w), C), the query itself when None
        (self-attention, as in the pixel decoder). Returns (B, Q, C).
        """
        if len(shapes) != self.num_levels:
            raise ValueError(f'got {len(shapes)} levels, the module was built for '
                             f'{self.num_levels}.')
        value = query if value is None else value
        identity = query
        query = query + query_pos
        bsz, nq, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(bsz, value.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(bsz, nq, heads, levels, points, 2)
        weights = self.attention_weights(query).view(bsz, nq, heads, levels * points)
        weights = weights.softmax(-1).view(bsz, nq, heads, levels, points)
        # pixels -> fraction of each level: divide x by w and y by h
        wh = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype,
                          device=query.device)  # (L, 2)
        locations = reference_points[:, :, None, :, None, :] + offsets / wh[:, None, :]
        out = sample_levels(v, shapes, locations, weights)
        return identity + self.output_proj(out)

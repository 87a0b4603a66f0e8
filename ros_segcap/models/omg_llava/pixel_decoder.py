"""mmdet's MSDeformAttnPixelDecoder as configured by OMG-LLaVA (omg_llava_7b_finetune_8gpus.py).

Key prefix in the official checkpoints: `panoptic_head.pixel_decoder.` (omg_seg_convl.pth,
loaded into the detector root) and `visual_encoder.panoptic_head.pixel_decoder.` inside
OMG-LLaVA. Our keys, as mmdet names them:

- input_convs.{i}.conv (1x1, bias) + .gn (GroupNorm 32), i = 0, 1, 2 for strides 32, 16, 8
- encoder.layers.{k}.self_attn.* (deformable attention, see deform_attn.py),
  .ffn.layers.0.0 / .ffn.layers.1 (Linear 256-1024-256, ReLU), .norms.{0,1} (LayerNorm)
- level_encoding (Embedding [3, 256], same level order as input_convs)
- lateral_convs.0.conv (1x1, no bias) + .gn on the stride-4 map;
  output_convs.0.conv (3x3, no bias) + .gn, then ReLU
- mask_feature (1x1 conv, bias)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .deform_attn import MultiScaleDeformableAttention
from .positional import sine_2d, sine_3d_single_frame


@dataclass(frozen=True)
class PixelDecoderOutput:
    """What the decoder reads; tensors batch-first."""

    mask_features: torch.Tensor  # (B, D, H/4, W/4)
    memories: Tuple[torch.Tensor, ...]  # (B, D, h_l, w_l) for strides 32, 16, 8
    memory_pos: Tuple[torch.Tensor, ...]  # (h_l * w_l, D) decoder key positions per memory


class ConvNorm(nn.Module):
    """mmcv ConvModule(conv -> GroupNorm -> optional ReLU) with its names conv / gn."""

    def __init__(self, cin: int, cout: int, kernel: int, *, bias: bool, relu: bool,
                 groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
        self.gn = nn.GroupNorm(groups, cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gn(self.conv(x))
        return F.relu(x) if self.relu else x


class FFN(nn.Module):
    """mmcv FFN with two fcs: x + fc2(act(fc1(x))); keys layers.0.0 and layers.1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU()),
                                    nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Deformable self-attention -> norm -> FFN -> norm (post-norm, residuals inside)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, levels: int, points: int) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(
            embed_dims=dim, num_heads=heads, num_levels=levels, num_points=points)
        self.ffn = FFN(dim, ffn_dim)
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor,
                shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        x = self.norms[0](self.self_attn(x, pos, ref, shapes))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    """Stack of encoder layers under the name `layers`."""

    def __init__(self, num_layers: int, **layer_kwargs) -> None:
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(**layer_kwargs) for _ in range(num_layers)])

    def forward(self, x, pos, ref, shapes):
        for layer in self.layers:
            x = layer(x, pos, ref, shapes)
        return x


def reference_points(shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
    """Pixel centres of every level, normalised: (sum(h*w), 2) as (x, y) in (0, 1).

    mmdet's MlvlPointGenerator priors ((col + 0.5) * stride, (row + 0.5) * stride) divided
    by (w * stride, h * stride), rows in raster order, levels concatenated.
    """
    pts = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        pts.append(torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), -1)
                   .reshape(-1, 2))
    return torch.cat(pts, 0)


class MSDeformAttnPixelDecoder(nn.Module):
    """Backbone maps (strides 4, 8, 16, 32) -> mask features and three memories.

    The three coarsest maps go through 1x1 conv + GN, then a deformable encoder over all
    three together (positions: 2-D sine + level_encoding); the stride-4 map is fused FPN
    style with the upsampled stride-8 memory and turned into the mask features.
    """

    def __init__(self, *, in_channels: Sequence[int] = (192, 384, 768, 1536),
                 feat_channels: int = 256, out_channels: int = 256, num_layers: int = 6,
                 ffn_channels: int = 1024, num_heads: int = 8, num_levels: int = 3,
                 num_points: int = 4, num_groups: int = 32) -> None:
        super().__init__()
        if len(in_channels) != num_levels + 1:
            raise ValueError(f'expected {num_levels + 1} input maps (one FPN level below the '
                             f'{num_levels} encoder levels), got in_channels={in_channels}.')
        self.num_levels = num_levels
        self.num_feats = feat_channels // 2  # sine channels per axis (official 128)
        # coarsest first, as mmdet builds them
        self.input_convs = nn.ModuleList([
            ConvNorm(in_channels[i], feat_channels, 1, bias=True, relu=False, groups=num_groups)
            for i in range(len(in_channels) - 1, 0, -1)])
        self.encoder = Encoder(num_layers, dim=feat_channels, ffn_dim=ffn_channels,
                               heads=num_heads, levels=num_levels, points=num_points)
        self.level_encoding = nn.Embedding(num_levels, feat_channels)
        self.lateral_convs = nn.ModuleList([ConvNorm(
            in_channels[0], feat_channels, 1, bias=False, relu=False, groups=num_groups)])
        self.output_convs = nn.ModuleList([ConvNorm(
            feat_channels, feat_channels, 3, bias=False, relu=True, groups=num_groups)])
        self.mask_feature = nn.Conv2d(feat_channels, out_channels, 1)

    def forward(self, feats: List[torch.Tensor]) -> PixelDecoderOutput:
        bsz = feats[0].shape[0]
        levels = feats[:0:-1]  # strides 32, 16, 8
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in levels]
        tokens, pos = [], []
        for i, feat in enumerate(levels):
            tokens.append(self.input_convs[i](feat).flatten(2).transpose(1, 2))  # (B, hw, D)
            p = sine_2d(*shapes[i], num_feats=self.num_feats, device=feat.device)
            pos.append(p.flatten(1).transpose(0, 1) + self.level_encoding.weight[i])
        x = torch.cat(tokens, 1)
        pos = torch.cat(pos, 0)[None].expand(bsz, -1, -1)
        ref = reference_points(shapes, x.device)[None, :, None, :].expand(
            bsz, -1, self.num_levels, 2)
        memory = self.encoder(x, pos, ref, shapes)  # (B, sum hw, D)
        outs = [m.transpose(1, 2).reshape(bsz, -1, h, w)
                for m, (h, w) in zip(memory.split([h * w for h, w in shapes], 1), shapes)]
        fine = self.lateral_convs[0](feats[0])
        fine = fine + F.interpolate(outs[-1], size=fine.shape[-2:], mode='bilinear',
                                    align_corners=False)
        fine = self.output_convs[0](fine)
        memory_pos = tuple(sine_3d_single_frame(h, w, num_feats=self.num_feats,
                                                device=x.device) for h, w in shapes)
        return PixelDecoderOutput(self.mask_feature(fine), tuple(outs), memory_pos)

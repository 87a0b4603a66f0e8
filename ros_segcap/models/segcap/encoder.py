"""Image encoder: backbone dispatch, a small ConvNeXt for the paper config, pixel decoder.

The backbone gives features at strides 8/16/32. The pixel decoder (an FPN) fuses them into
mask features at stride `mask_stride` (dim D) and three memories (strides 32, 16, 8; dim D)
that the OMG decoder cross-attends to, round robin, with sine positions + level embeddings.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import build_efficientnet_lite0
from .config import SegCapConfig


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt (Large: depths 3/3/27/3, dims 192/384/768/1536), the paper's CLIP backbone."""

    def __init__(self, *, depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        self.downsample = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            for i in range(3))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dims[i]) for _ in range(depths[i])]) for i in range(4))

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stages[0](self.stem(x))
        out = {}
        for i, key in enumerate(('s8', 's16', 's32')):
            x = self.stages[i + 1](self.downsample[i](x))
            out[key] = x
        return out


def build_backbone(config: SegCapConfig, pretrained: bool | None = None) -> nn.Module:
    """Backbone with `forward_features(x) -> {'s8', 's16', 's32'}` for the config."""
    pretrained = config.backbone_pretrained if pretrained is None else pretrained
    if config.backbone == 'efficientnet-lite0':
        return build_efficientnet_lite0(pretrained=pretrained)
    if config.backbone == 'convnext-large':
        if pretrained:
            raise ValueError('no ConvNeXt-L CLIP weights ship with this package; '
                             'use backbone_pretrained=False or load a converted checkpoint')
        return ConvNeXt()
    raise ValueError(f'unknown backbone {config.backbone!r}; use efficientnet-lite0 or '
                     'convnext-large')


def normalize_image(config: SegCapConfig, rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) float RGB in 0..255 -> the backbone's input normalisation."""
    if config.backbone == 'efficientnet-lite0':
        return (rgb - 127.5) / 127.5
    mean = rgb.new_tensor([122.77, 116.75, 104.09]).view(1, 3, 1, 1)  # CLIP statistics
    std = rgb.new_tensor([68.50, 66.63, 70.32]).view(1, 3, 1, 1)
    return (rgb - mean) / std


def sine_position(h: int, w: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """2-D sine positions (h*w, dim) as in DETR (normalised coordinates, temperature 1e4)."""
    quarter = dim // 4
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    freq = 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    py = ys[:, None] / freq  # (h, quarter)
    px = xs[:, None] / freq  # (w, quarter)
    py = torch.cat([py.sin(), py.cos()], -1)[:, None, :].expand(h, w, 2 * quarter)
    px = torch.cat([px.sin(), px.cos()], -1)[None, :, :].expand(h, w, 2 * quarter)
    pos = torch.cat([py, px], -1).reshape(h * w, 4 * quarter)
    if pos.shape[1] < dim:
        pos = F.pad(pos, (0, dim - pos.shape[1]))
    return pos.to(dtype or torch.float32)


class PixelDecoder(nn.Module):
    """FPN over strides 8/16/32 -> mask features (B, D, S/ms, S/ms) and three memories."""

    def __init__(self, config: SegCapConfig) -> None:
        super().__init__()
        d = config.dim
        c8, c16, c32 = config.backbone_channels
        self.mask_stride = config.mask_stride
        self.lateral = nn.ModuleList([nn.Conv2d(c, d, 1) for c in (c32, c16, c8)])
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(8, d), nn.ReLU())
            for _ in range(3))
        self.mask_proj = nn.Conv2d(d, d, 3, padding=1)
        self.level_embed = nn.Parameter(torch.zeros(3, d))
        nn.init.normal_(self.level_embed, std=0.02)

    def forward(self, feats: dict[str, torch.Tensor]):
        """feats: {'s8', 's16', 's32'} -> (mask_features (B, D, Hm, Wm), memories, positions).

        memories[i]: (B, h_i * w_i, D) for strides 32, 16, 8; positions[i]: (h_i * w_i, D)
        including the level embedding.
        """
        maps = []
        x = None
        for i, key in enumerate(('s32', 's16', 's8')):
            lat = self.lateral[i](feats[key])
            if x is not None:
                lat = lat + F.interpolate(x, size=lat.shape[-2:], mode='nearest')
            x = self.smooth[i](lat)
            maps.append(x)
        top = maps[-1]  # stride 8
        if self.mask_stride != 8:
            top = F.interpolate(top, scale_factor=8 / self.mask_stride, mode='bilinear',
                                align_corners=False)
        mask_features = self.mask_proj(top)
        memories, positions = [], []
        for i, m in enumerate(maps):
            b, d, h, w = m.shape
            memories.append(m.flatten(2).transpose(1, 2))  # (B, h*w, D)
            pos = sine_position(h, w, d, device=m.device, dtype=m.dtype)
            positions.append(pos + self.level_embed[i])
        return mask_features, memories, positions

"""The ConvNeXt trunk of open_clip's convnext_large_d_320 (timm `convnext_large` layout).

Only the trunk is built: stem and four stages; the trunk's head and open_clip's projection
head are not used by OMG-LLaVA's vision side, which takes all four stage outputs
(strides 4/8/16/32) and nothing else.

State-dict names are timm's, so keys map 1:1 with a prefix:
- open_clip checkpoint (laion CLIP-convnext_large_d_320...): `visual.trunk.` + our key.
- inside OMG-LLaVA (`OpenCLIPBackbone_omgseg`, if a checkpoint ever holds it):
  `visual_encoder.backbone.` with `stem.*` as is and `stages.{i}.*` renamed `layer{i+1}.*`.

Our keys: stem.0 (Conv2d 4x4 s4, bias), stem.1 (LayerNorm2d); stages.{s}.downsample.0
(LayerNorm2d), .downsample.1 (Conv2d 2x2 s2, bias) for s = 1..3;
stages.{s}.blocks.{j}.conv_dw (depthwise 7x7, bias), .norm (LayerNorm over channels),
.mlp.fc1, .mlp.fc2, .gamma (layer scale). All norms use eps 1e-6; the MLP uses exact GELU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
from torch import nn
import torch.nn.functional as F

LN_EPS = 1e-6


@dataclass(frozen=True)
class ConvNeXtConfig:
    """Depths and widths per stage; defaults are ConvNeXt-Large."""

    depths: Tuple[int, ...] = (3, 3, 27, 3)
    dims: Tuple[int, ...] = (192, 384, 768, 1536)
    in_chans: int = 3


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (timm LayerNorm2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on channels-last input (timm Mlp without dropout)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """x + gamma * mlp(norm(dwconv7x7(x))), the MLP in channels-last layout."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.mlp(self.norm(y)) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    """Optional downsample (LayerNorm2d + 2x2 stride-2 conv), then the blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(in_dim, eps=LN_EPS),
                                         nn.Conv2d(in_dim, dim, kernel_size=2, stride=2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtTrunk(nn.Module):
    """ConvNeXt stem + stages returning every stage map.

    forward: (B, 3, H, W) normalised image (H, W multiples of 32) -> list of four maps
    (B, dims[s], H / 2**(s+2), W / 2**(s+2)), strides 4, 8, 16, 32.
    """

    def __init__(self, config: ConvNeXtConfig = ConvNeXtConfig()) -> None:
        super().__init__()
        if len(config.depths) != len(config.dims):
            raise ValueError(f'depths {config.depths} and dims {config.dims} must have the '
                             'same length.')
        self.config = config
        dims = config.dims
        self.stem = nn.Sequential(nn.Conv2d(config.in_chans, dims[0], kernel_size=4, stride=4),
                                  LayerNorm2d(dims[0], eps=LN_EPS))
        self.stages = nn.Sequential(*[
            ConvNeXtStage(dims[max(s - 1, 0)], dims[s], config.depths[s], downsample=s > 0)
            for s in range(len(dims))])

    def forward(self, image: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(image)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def build_convnext_large() -> ConvNeXtTrunk:
    """The convnext_large_d_320 trunk: depths 3/3/27/3, widths 192/384/768/1536."""
    return ConvNeXtTrunk(ConvNeXtConfig())

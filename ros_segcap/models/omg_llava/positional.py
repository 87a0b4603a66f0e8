"""Sine positional encodings of the OMG-Seg head (no parameters, so no state-dict keys).

Three encodings, each as the official release computes it:

- `sine_2d`: mmdet `SinePositionalEncoding(num_feats=128, normalize=True)` (temperature
  10000, scale 2*pi, eps 1e-6, offset 0) on an unpadded map; the pixel decoder's encoder
  positions. Channels are [y part (num_feats) ; x part (num_feats)], each part interleaving
  sin and cos of one frequency: (sin f0, cos f0, sin f1, cos f1, ...).
- `sine_3d_single_frame`: mmdet `SinePositionalEncoding3D` (same arguments) on a clip of
  T = 1 frame; the Mask2Former decoder's key positions. With one frame the time term is the
  same vector at every pixel (z = (1 + offset) / (1 + eps) * scale over 2 * num_feats
  channels), added to the 2-D encoding.
- `box_encoding`: mmdet `coordinate_to_encoding` of a normalised (cx, cy, w, h) box, giving
  [y ; x ; w ; h] parts of num_feats channels each; the prompt queries' position input.
"""
from __future__ import annotations

import math

import torch

NUM_FEATS = 128
TEMPERATURE = 10000.0
SCALE = 2 * math.pi
EPS = 1e-6


def _interleave(angles: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """(..., ) angles over (F,) freqs -> (..., 2F) as (sin a/f0, cos a/f0, sin a/f1, ...)."""
    phase = angles[..., None] / freqs
    return torch.stack((phase.sin(), phase.cos()), dim=-1).flatten(-2)


def _freqs(num_feats: int, temperature: float, device=None) -> torch.Tensor:
    """The distinct frequencies of mmdet's dim_t = T ** (2 * (i // 2) / num_feats)."""
    i = torch.arange(0, num_feats, 2, dtype=torch.float32, device=device)
    return temperature ** (i / num_feats)


def sine_2d(height: int, width: int, *, num_feats: int = NUM_FEATS,
            temperature: float = TEMPERATURE, scale: float = SCALE, eps: float = EPS,
            offset: float = 0.0, device=None) -> torch.Tensor:
    """Normalised 2-D sine encoding of an unpadded (height, width) map -> (2 * num_feats, H, W).

    Row r (0-based) has y = (r + 1 + offset) / (H + eps) * scale, likewise x for columns:
    mmdet's cumulative sum over a mask of zeros, divided by its last value.
    """
    y = (torch.arange(1, height + 1, dtype=torch.float32, device=device) + offset)
    x = (torch.arange(1, width + 1, dtype=torch.float32, device=device) + offset)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    freqs = _freqs(num_feats, temperature, device)
    pos_y = _interleave(y, freqs)[:, None, :].expand(height, width, num_feats)
    pos_x = _interleave(x, freqs)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)  # (2F, H, W)


def sine_3d_single_frame(height: int, width: int, *, num_feats: int = NUM_FEATS,
                         temperature: float = TEMPERATURE, scale: float = SCALE,
                         eps: float = EPS, offset: float = 0.0, device=None) -> torch.Tensor:
    """Decoder key positions of one (height, width) memory -> (H * W, 2 * num_feats).

    mmdet's 3-D encoding on a [B, 1, H, W] mask, flattened as the official head does
    (transpose(1, 2).flatten(2).permute(0, 2, 1)): rows in raster order, channels last.
    """
    z = torch.tensor((1.0 + offset) / (1.0 + eps) * scale, device=device)
    pos_z = _interleave(z, _freqs(2 * num_feats, temperature, device))  # (2F,)
    pos = sine_2d(height, width, num_feats=num_feats, temperature=temperature, scale=scale,
                  eps=eps, offset=offset, device=device)
    return pos.flatten(1).transpose(0, 1) + pos_z  # (H*W, 2F)


def box_encoding(boxes: torch.Tensor, *, num_feats: int = NUM_FEATS,
                 temperature: float = TEMPERATURE, scale: float = SCALE) -> torch.Tensor:
    """(..., 4) normalised (cx, cy, w, h) -> (..., 4 * num_feats) as [y ; x ; w ; h]."""
    freqs = _freqs(num_feats, temperature, boxes.device)
    cx, cy, w, h = (boxes[..., i] * scale for i in range(4))
    return torch.cat([_interleave(v, freqs) for v in (cy, cx, w, h)], dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """mmdet's inverse_sigmoid: log(x / (1 - x)) with both clamped to at least eps."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))

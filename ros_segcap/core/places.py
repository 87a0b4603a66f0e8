"""Where a mask sits in the image, for models with depth_places.

The frame's masks live on the padded square of the model input (letterbox: the image at the
top left, padding to the right or below). mask_places (model.py) reads centre and size on
that square; these features read the image itself:

    x       centre x as a fraction of the image width       ('left' / 'right')
    bottom  the mask's bottom edge as a fraction of the image height  (a standing object's
            foot: lower in the image is nearer the camera)
    depth   where the bottom edge sits on the table: 0 at its far edge, 1 at the image bottom
            ('front' / 'back' of the table; 'which is closer')

extent is (height, width) of the image in the padded square, as fractions (the Pipeline
sets it from the letterbox; None means the whole square).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

BOTTOM_SHARE = 0.98  # the bottom edge: the row where this share of the mask lies above


def _rows_and_cols(mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, Hm, Wm) -> per-row and per-column weight of the hard masks (soft when empty)."""
    hard = (mask_logits >= 0).float()
    empty = hard.flatten(1).sum(1) == 0
    w = torch.where(empty[:, None, None], mask_logits.float().sigmoid(), hard)
    return w.sum(2), w.sum(1)


def table_top(class_logits: torch.Tensor, mask_logits: torch.Tensor,
              table_class: Optional[int]) -> float:
    """Top edge (0..1 of the padded square) of the query most likely to be the table.

    class_logits (N, K+1), mask_logits (N, Hm, Wm); 0.0 without a table class or a mask.
    """
    if table_class is None or class_logits.shape[0] == 0:
        return 0.0
    q = int(class_logits.float().softmax(-1)[:, table_class].argmax())
    rows = (mask_logits[q] >= 0).any(-1).nonzero()
    return float(rows[0, 0]) / mask_logits.shape[-2] if rows.numel() else 0.0


def image_places(mask_logits: torch.Tensor, extent: Optional[Sequence[float]] = None,
                 top: float = 0.0) -> torch.Tensor:
    """(N, Hm, Wm) mask logits -> (N, 3): x, bottom, depth (module docstring).

    top: the table's far edge on the padded square (table_top).
    """
    eh, ew = extent if extent is not None else (1.0, 1.0)
    hm, wm = mask_logits.shape[-2:]
    rows, cols = _rows_and_cols(mask_logits)
    mass = rows.sum(1).clamp(min=1e-6)
    xs = (torch.arange(wm, device=rows.device) + 0.5) / wm
    x = (cols * xs).sum(1) / mass / ew
    below = (rows.cumsum(1) / mass[:, None] < BOTTOM_SHARE).sum(1).float()
    bottom = (below + 1.0) / hm / eh
    top_img = min(top / eh, 0.95)
    depth = (bottom - top_img) / (1.0 - top_img)
    out = torch.stack([x, bottom, depth], -1).clamp(0.0, 1.0)
    return out.to(mask_logits.dtype)


def extent_of(masks: torch.Tensor) -> tuple[float, float]:
    """(height, width) of the area that a panoptic map's masks (N, Hm, Wm) cover, as fractions
    of the square: the image part of a letterboxed input."""
    cover = masks.any(0)
    rows, cols = cover.any(1).nonzero(), cover.any(0).nonzero()
    if not rows.numel():
        return 1.0, 1.0
    return (float(rows[-1, 0] + 1) / masks.shape[-2], float(cols[-1, 0] + 1) / masks.shape[-1])


# The tabletop world's place words (world/captions.py place_words): left below x 0.38, right
# above 0.62, back below depth 0.3, front above 0.6. RULE_GAIN sets how sharp the edges are.
RULE = {'left': (0, -1.0, 0.38), 'right': (0, 1.0, 0.62), 'front': (2, 1.0, 0.6),
        'back': (2, -1.0, 0.3)}  # word: (feature index, sign, edge)
RULE_GAIN = 8.0


def rule_init_(layer: nn.Linear, words: Sequence[str]) -> nn.Linear:
    """Start a (3 -> len(words)) place layer at the world's rule: tanh(gain * sign *
    (feature - edge)), about +1 well inside a word's zone and -1 well outside it."""
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        for row, word in enumerate(words):
            feature, sign, edge = RULE[word]
            layer.weight[row, feature] = RULE_GAIN * sign
            layer.bias[row] = -RULE_GAIN * sign * edge
    return layer

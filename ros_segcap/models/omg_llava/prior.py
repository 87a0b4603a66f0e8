"""OMG-LLaVA's perception prior, kept-query rule and pixel shuffle (no parameters).

Official source: OMGSegVisualEncoder.forward / panoptic_postprocess / pixel_shuffle_feat
(omg_llava/model/omg_seg/omg_seg_visual_encoder.py) and the projector's valid_mask
(omg_llava/model/modules/projector/modeling_projector.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F

SMOOTH = 0.5  # prob mask = sigmoid(mask) * (s * (1 - SMOOTH) + SMOOTH)


@dataclass(frozen=True)
class PerceptionPrior:
    """Per-cell query mixture and which queries own at least one cell."""

    prior: torch.Tensor  # (B, gh * gw, 2D) softmax-over-queries weights @ [feat ; pos]
    keep: torch.Tensor  # (B, Q) bool: query wins the argmax in >= 1 grid cell
    owner: torch.Tensor  # (B, gh, gw) long: the winning query of each cell


def prob_masks(mask_logits: torch.Tensor, class_logits: torch.Tensor,
               image_size: Tuple[int, int]) -> torch.Tensor:
    """(B, Q, h, w) logits -> (B, Q, H, W) sigmoid masks at the input size, scaled by
    0.5 * s + 0.5 with s the best non-background class probability (softmax over K + 1)."""
    masks = F.interpolate(mask_logits, size=image_size, mode='bilinear', align_corners=False)
    score = class_logits.softmax(-1)[..., :-1].amax(-1)  # (B, Q)
    scale = score * (1.0 - SMOOTH) + SMOOTH
    return masks.sigmoid() * scale[..., None, None]


def perception_prior(mask_logits: torch.Tensor, class_logits: torch.Tensor,
                     query_feat: torch.Tensor, query_pos: torch.Tensor,
                     image_size: Tuple[int, int], grid: Tuple[int, int]) -> PerceptionPrior:
    """The prior tokens of the official visual encoder.

    mask_logits (B, Q, h, w), class_logits (B, Q, K + 1), query_feat / query_pos (B, Q, D)
    (raw last-layer output and query_embed), image_size the padded input (H, W), grid the
    token grid (H / 64, W / 64 for ConvNeXt stride 32 and a x2 pixel shuffle).
    """
    probs = prob_masks(mask_logits, class_logits, image_size)
    cells = F.interpolate(probs, size=grid, mode='bilinear', align_corners=False)  # (B,Q,gh,gw)
    owner = cells.argmax(1)  # (B, gh, gw); ties go to the lowest query index
    num_q = cells.shape[1]
    keep = F.one_hot(owner.flatten(1), num_q).amax(1).bool()  # (B, Q)
    weights = cells.softmax(1).flatten(2).transpose(1, 2)  # (B, gh*gw, Q)
    prior = weights @ torch.cat([query_feat, query_pos], -1)
    return PerceptionPrior(prior, keep, owner)


def pixel_shuffle(feat: torch.Tensor, ratio: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, r*r*C, H/r, W/r) with channel (dy * r + dx) * C + c.

    Output pixel (i, j) gathers input pixels (i*r + dy, j*r + dx).
    """
    b, c, h, w = feat.shape
    if h % ratio or w % ratio:
        raise ValueError(f'feature map {h}x{w} is not divisible by the shuffle ratio {ratio}.')
    x = feat.reshape(b, c, h // ratio, ratio, w // ratio, ratio)
    return x.permute(0, 3, 5, 1, 2, 4).reshape(b, ratio * ratio * c, h // ratio, w // ratio)

"""What the vision engine hands to the rest of the pipeline: a frame's features and the
decoder's predictions for a set of queries. Shapes in brackets are for segcap-tiny."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class DecoderOutput:
    """Per-layer predictions (L+1 entries each) and the final queries."""

    class_logits: list[torch.Tensor]  # (B, N, K+1) each
    mask_logits: list[torch.Tensor]  # (B, N, Hm, Wm) each
    query_feat: torch.Tensor  # (B, N, D) normalised final query features f_q
    query_pos: torch.Tensor  # (B, N, D) query positions e_q


@dataclass
class FrameFeatures:
    """Vision outputs of one frame (batch 1). Shapes for segcap-tiny in brackets."""

    pixel_tokens: torch.Tensor  # (1, T, 4C) [1, 64, 5120]
    mask_features: torch.Tensor  # (1, D, Hm, Wm) [1, 128, 64, 64]
    memories: list[torch.Tensor]  # (1, h_i*w_i, D) for strides 32, 16, 8
    memory_pos: list[torch.Tensor]  # (h_i*w_i, D)
    class_logits: torch.Tensor  # (1, Nq, K+1) last layer
    mask_logits: torch.Tensor  # (1, Nq, Hm, Wm) last layer
    query_feat: torch.Tensor  # (1, Nq, D)
    query_pos: torch.Tensor  # (1, Nq, D)
    fine: Optional[torch.Tensor] = None  # (1, C8, Hm, Wm) [1, 40, 64, 64] with fine_pool
    image: Optional[torch.Tensor] = None  # (1, 3, S, S) input, kept by models that crop it


@dataclass
class FrameObjects:
    """Every object the decoder keeps for a frame (a panoptic reading), N of them."""

    classes: torch.Tensor  # (N,) class index into names
    names: tuple[str, ...]  # the model's class names (K)
    scores: torch.Tensor  # (N,) class probability
    stuff: torch.Tensor  # (N,) bool: a stuff region (background, table), not a thing
    mask_logits: torch.Tensor  # (N, Hm, Wm) on the model input

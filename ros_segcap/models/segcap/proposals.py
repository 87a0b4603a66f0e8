"""Object proposals from a centre heatmap, for objects no learnable query found.

Mask2Former-style queries start from content, not place: small objects next to a larger one
of the same kind are often left without a query of their own, or share one. A model with
`proposals=N` also predicts, on the mask features, a heatmap of object centres (CenterNet
style: a Gaussian per object, peak 1 at its inner-most cell). At inference its N best peaks
become point-prompt queries, also peaks inside a kept mask (that mask may hold two objects).
The mask features hardly tell apart two objects of one kind, so a point query's mask (like a
learnable query's) may cover several look-alikes: a proposal keeps only the connected part
of its mask that holds its peak. Each proposal whose mask is then new (IoU < 0.5 with every
kept mask and earlier proposal) joins the frame's queries, so it becomes an object token like
any other, and its pixels are taken out of the other queries' masks.
"""
from __future__ import annotations

import math
import cv2
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ros_segcap.core.preprocess import inner_cell

PROPOSAL_THRESHOLD = 0.3  # heatmap peak probability to try a proposal
PROPOSAL_MAX_IOU = 0.5  # a proposal's mask must overlap every kept mask less than this
OUTSIDE = -10.0  # mask logit given to pixels a proposal leaves out or takes away
CENTRE_PRIOR = 0.1  # initial peak probability everywhere (bias of the last conv)


class CentreHead(nn.Module):
    """Mask features (B, D, Hm, Wm) -> centre logits (B, Hm, Wm)."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 1, 1)
        nn.init.constant_(self.out.bias, math.log(CENTRE_PRIOR / (1 - CENTRE_PRIOR)))

    def forward(self, mask_features: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.conv(mask_features)))[:, 0]


def centre_targets(masks: torch.Tensor) -> torch.Tensor:
    """(G, Hm, Wm) bool object masks -> (Hm, Wm) heatmap: per object a Gaussian (sigma
    grows with the object's size) with value exactly 1 at its inner-most cell; max over
    objects. Empty masks are skipped."""
    hm, wm = masks.shape[-2:]
    heat = torch.zeros(hm, wm)
    rows = torch.arange(hm, dtype=torch.float32)[:, None]
    cols = torch.arange(wm, dtype=torch.float32)[None, :]
    for mask in masks.cpu().numpy().astype(bool):
        area = int(mask.sum())
        if area == 0:
            continue
        r, c = inner_cell(mask)
        sigma = max(0.8, 0.15 * math.sqrt(area))
        g = torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma * sigma))
        heat = torch.maximum(heat, g)
        heat[r, c] = 1.0
    return heat


def centre_loss(logits: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """CenterNet's focal loss of centre logits (Hm, Wm) against a target heatmap, per object."""
    logits = logits.float()
    pos = heat >= 1.0
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logits.sigmoid()
    pos_loss = -((1 - p) ** 2 * log_p)[pos].sum()
    neg_loss = -((1 - heat) ** 4 * p ** 2 * log_q)[~pos].sum()
    return (pos_loss + neg_loss) / max(1, int(pos.sum()))


def peak_cells(logits: torch.Tensor, limit: int, threshold: float = PROPOSAL_THRESHOLD
               ) -> list[tuple[int, int]]:
    """Local maxima (3x3) of the centre heatmap (Hm, Wm) above threshold, best first, at
    most `limit`: [(row, col)]."""
    p = logits.float().sigmoid()
    local = F.max_pool2d(p[None, None], 3, stride=1, padding=1)[0, 0]
    peaks = (p >= local) & (p >= threshold)
    idx = peaks.flatten().nonzero()[:, 0]
    order = torch.argsort(p.flatten()[idx], descending=True)[:limit]
    wm = p.shape[1]
    return [(int(i) // wm, int(i) % wm) for i in idx[order]]


def new_masks(candidates: torch.Tensor, kept: torch.Tensor,
              max_iou: float = PROPOSAL_MAX_IOU) -> list[int]:
    """Indices of the candidate masks (P, Hm, Wm) bool that are non-empty and overlap every
    kept mask (K, Hm, Wm) and every earlier accepted candidate with IoU < max_iou."""
    chosen: list[int] = []
    others = kept.flatten(1)
    for i, m in enumerate(candidates.flatten(1)):
        if not bool(m.any()):
            continue
        iou = (m & others).sum(1) / (m | others).sum(1).clamp(min=1)
        if bool((iou >= max_iou).any()):
            continue
        chosen.append(i)
        others = torch.cat([others, m[None]])
    return chosen


def component_at(mask: torch.Tensor, cell: tuple[int, int]) -> torch.Tensor:
    """The 8-connected component of the bool mask (Hm, Wm) that holds `cell` (all False when
    the cell is outside the mask)."""
    if not bool(mask[cell]):
        return torch.zeros_like(mask)
    _, labels = cv2.connectedComponents(mask.cpu().numpy().astype(np.uint8), connectivity=8)
    return torch.from_numpy(labels == labels[cell]).to(mask.device)


def cell_points(cells: list[tuple[int, int]], hm: int) -> list[tuple[float, float]]:
    """Grid cells (row, col) -> their centres (x, y) in 0..1 of the padded square."""
    return [((c + 0.5) / hm, (r + 0.5) / hm) for r, c in cells]

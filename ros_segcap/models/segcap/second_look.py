"""Second look: the kind of a query's object, read again from a crop around its mask.

The decoder names kinds from the whole frame's features at stride 16-32, where a small
object is a few cells. The second look cuts a square around a query's mask out of
the letterboxed image, resizes it to `size` x `size`, runs the backbone's frozen front
(stem and blocks up to stride 8) and its own copy of the stride-16 blocks (trained), and
reads the kind from the features pooled under the mask and over the whole crop. Its
log-probabilities are added to the decoder's over the thing kinds; the query's total thing
probability against table, background and void stays the decoder's.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

FRONT_BLOCKS = 5  # backbone blocks 0-4 (to stride 8) are shared and frozen
OWN_BLOCKS = range(5, 11)  # blocks 5-10 (to stride 16, 112 channels) are the second look's
CHANNELS = 112
MARGIN = 1.3  # crop side = MARGIN x the mask box's longer side (+ MIN_PAD pixels)
MIN_PAD = 8


def mask_boxes(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """Boolean masks (N, Hm, Wm) -> boxes (N, 4) x0, y0, x1, y1 in image pixels (a mask's
    cells at `stride`); an empty mask gives the whole image."""
    _, hm, wm = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    ar_h = torch.arange(hm, device=masks.device)
    ar_w = torch.arange(wm, device=masks.device)
    y0 = torch.where(rows, ar_h, hm).min(1).values
    y1 = torch.where(rows, ar_h, -1).max(1).values + 1
    x0 = torch.where(cols, ar_w, wm).min(1).values
    x1 = torch.where(cols, ar_w, -1).max(1).values + 1
    empty = ~rows.any(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float() * stride
    boxes[empty] = torch.tensor([0.0, 0.0, wm * stride, hm * stride], device=masks.device)
    return boxes


def square_crops(image: torch.Tensor, boxes: torch.Tensor, size: int,
                 margin: float = MARGIN) -> torch.Tensor:
    """Square crops (N, C, size, size) of image (1 or N, C, H, W) around boxes (N, 4) in
    pixels of that image, side margin x the longer box side + MIN_PAD x H / 512; outside
    the image reads as zero."""
    _, _, h, w = image.shape
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * margin + \
        MIN_PAD * h / 512
    theta = torch.zeros(len(boxes), 2, 3, device=image.device, dtype=image.dtype)
    theta[:, 0, 0] = side / w
    theta[:, 0, 2] = 2 * centre_x / w - 1
    theta[:, 1, 1] = side / h
    theta[:, 1, 2] = 2 * centre_y / h - 1
    grid = F.affine_grid(theta, [len(boxes), image.shape[1], size, size], align_corners=False)
    return F.grid_sample(image.expand(len(boxes), -1, -1, -1), grid, mode='bilinear',
                         padding_mode='zeros', align_corners=False)


class SecondLook(nn.Module):
    """Kind logits (N, num_kinds) of crops around masks; see the module docstring."""

    def __init__(self, backbone: nn.Module, num_kinds: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.blocks = nn.ModuleList(copy.deepcopy(backbone._blocks[i]) for i in OWN_BLOCKS)
        self.head = nn.Linear(2 * CHANNELS, num_kinds)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, backbone: nn.Module, crops: torch.Tensor,
                crop_masks: torch.Tensor) -> torch.Tensor:
        """crops (N, 3, size, size), normalised as the backbone's input; crop_masks
        (N, 1, size, size) in 0..1 -> kind logits (N, num_kinds)."""
        with torch.no_grad():  # the shared front stays frozen
            x = F.relu6(backbone._bn0(backbone._conv_stem(crops)))
            for block in backbone._blocks[:FRONT_BLOCKS]:
                x = block(x)
        for block in self.blocks:
            x = block(x)
        weight = F.interpolate(crop_masks, size=x.shape[-2:], mode='area')
        under = (x * weight).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-3)
        return self.head(torch.cat([under, x.mean((2, 3))], 1))


def fuse_kinds(class_logits: torch.Tensor, kind_logits: torch.Tensor,
               first_kind: int, num_kinds: int) -> torch.Tensor:
    """Decoder class logits (N, K+1) with the kind logits (N, num_kinds) of classes
    first_kind.. added in log space; the queries' thing mass is kept."""
    kinds = slice(first_kind, first_kind + num_kinds)
    head = class_logits[:, kinds]
    mass = torch.logsumexp(head, -1, keepdim=True)
    joint = head.log_softmax(-1) + kind_logits.to(head.dtype).log_softmax(-1)
    out = class_logits.clone()
    out[:, kinds] = joint.log_softmax(-1) + mass
    return out

"""A panoptic reading of a frame: every object the decoder keeps, as one result (no LLM).

Each pixel belongs to at most one object: the one with the highest mask logit there, if its
probability passes the threshold. Stuff regions of one class (two 'table' queries, say) are
merged into one entry. Entries are stuff first, then things in the decoder's query order;
ids number them 1..N on this frame (the instance-id image uses them).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .frames import FrameObjects
from .types import SegCapResult


def panoptic_result(objects: FrameObjects, logits: torch.Tensor, threshold: float
                    ) -> SegCapResult:
    """objects of a frame + their mask logits (N, H, W) on the image -> one SegCapResult."""
    from .pipeline import mask_box  # the pipeline imports this module

    n = logits.shape[0]
    result = SegCapResult(answer='')
    if n == 0:
        result.answer = 'no objects'
        return result
    cut = math.log(threshold / (1.0 - threshold)) if 0.0 < threshold < 1.0 else \
        (-math.inf if threshold <= 0.0 else math.inf)
    best, owner = logits.float().max(0)  # (H, W)
    owner = torch.where(best > cut, owner, torch.full_like(owner, -1)).cpu().numpy()
    classes = objects.classes.tolist()
    scores = objects.scores.tolist()
    stuff = objects.stuff.tolist()
    groups: list[list[int]] = []  # stuff of one class together, each thing alone
    by_class: dict[int, list[int]] = {}
    for i in range(n):
        if stuff[i]:
            if classes[i] not in by_class:
                by_class[classes[i]] = []
                groups.append(by_class[classes[i]])
            by_class[classes[i]].append(i)
    groups += [[i] for i in range(n) if not stuff[i]]
    for group in groups:
        mask = np.isin(owner, group)
        if not mask.any():
            continue
        first = group[0]
        result.phrases.append(objects.names[classes[first]].replace('_', ' '))
        result.masks.append(mask)
        result.scores.append(float(max(scores[i] for i in group)))
        result.boxes.append(mask_box(mask))
        result.stuff.append(bool(stuff[first]))
        result.ids.append(len(result.ids) + 1)
    things = [p for p, s in zip(result.phrases, result.stuff) if not s]
    result.answer = f'{len(things)} objects: ' + ', '.join(things) if things else 'no objects'
    return result

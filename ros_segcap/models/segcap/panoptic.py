"""Panoptic reading of a segcap frame: its kept queries as classes, scores and masks."""
from __future__ import annotations

import torch

from ros_segcap.core.frames import FrameFeatures, FrameObjects

from .config import STUFF_NAMES


def frame_objects(keep: torch.Tensor, frame: FrameFeatures, class_names: tuple[str, ...]
                  ) -> FrameObjects:
    """The kept queries `keep` (N,) of a frame whose best class is not void.

    Scores are the best non-void class probability; classes named in STUFF_NAMES
    (background, table) are flagged as stuff.
    """
    probs = frame.class_logits[0, keep].float().softmax(-1)  # (N, K+1)
    real = probs.argmax(-1) < probs.shape[-1] - 1
    keep, (scores, classes) = keep[real], probs[real, :-1].max(-1)
    names = tuple(class_names)
    stuff = torch.tensor([names[c] in STUFF_NAMES for c in classes.tolist()], dtype=torch.bool)
    return FrameObjects(classes, names, scores, stuff, frame.mask_logits[0, keep])

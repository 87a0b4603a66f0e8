"""The answer guides of segcap models (core.guide): what the heads fix in an answer.

- presence (presence.py): a plain request's first token.
- places: about one prompted region, the words after "at" are its place on the table
  ('at the front left of the table'), from its mask's base against the table's far edge
  (core.places). The LLM itself does not learn places well: it says one place for nearly
  every object (measured: docs/experiments.md).
- nearer: "Which is closer, <region> or <mark>?" starts "The <colour> <kind>" of the region
  whose base is lower in the image, named by the colour and class heads (the words the LLM
  copies from its object tokens); the LLM ends the sentence.
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ros_segcap.core.frames import DecoderOutput
from ros_segcap.core.places import base_point, far_edge, nearer, place_phrase
from ros_segcap.core.preprocess import Letterbox

from .config import STUFF_NAMES

NEARER_QUESTION = re.compile(r'\bwhich\b.*\b(?:closer|nearer)\b', re.IGNORECASE)
TABLE = 'table'


def binary(mask_logits: torch.Tensor) -> np.ndarray:
    """Mask logits (..., Hm, Wm) -> bool numpy masks (logit > 0)."""
    return (mask_logits.detach().float() > 0).cpu().numpy()


def table_mask(class_logits: torch.Tensor, mask_logits: torch.Tensor,
               class_names: Sequence[str]) -> np.ndarray:
    """Union of the masks whose best class is the table: class_logits (N, K+1) with the
    void class last, mask_logits (N, Hm, Wm) -> bool (Hm, Wm)."""
    table = class_names.index(TABLE)
    rows = class_logits.argmax(-1) == table
    return binary(mask_logits[rows]).any(0) if bool(rows.any()) else \
        np.zeros(mask_logits.shape[-2:], dtype=bool)


def place_words(region: np.ndarray, table: np.ndarray, box: Letterbox) -> Optional[str]:
    """'the front left of the table' for a region mask on a frame with this table mask;
    None for an empty region."""
    point = base_point(region, box)
    if point is None:
        return None
    return f'{place_phrase(*point, far_edge(table, box))} of the table'


def thing_name(class_logits: torch.Tensor, colour_logits: torch.Tensor,
               class_names: Sequence[str], colour_names: Sequence[str]) -> str:
    """'purple teapot': the best colour and the best thing class (never table/background)
    of one query, class_logits (K+1,) with the void class last, colour_logits (C,)."""
    scores = class_logits[:len(class_names)].float().clone()
    for i, name in enumerate(class_names):
        if name in STUFF_NAMES:
            scores[i] = -torch.inf
    kind = class_names[int(scores.argmax())].replace('_', ' ')
    return f'{colour_names[int(colour_logits.argmax())]} {kind}'


def nearer_start(out: DecoderOutput, colour_logits: torch.Tensor,
                 class_names: Sequence[str], colour_names: Sequence[str],
                 encode: Callable[[str], list[int]]) -> Optional[list[int]]:
    """Token ids of 'The <colour> <kind>' of the nearer of two prompted regions; None when
    the masks cannot tell."""
    masks = binary(out.mask_logits[-1][0])
    which = nearer(masks[0], masks[1])
    if which is None:
        return None
    name = thing_name(out.class_logits[-1][0, which], colour_logits[which], class_names,
                      colour_names)
    return encode(f'The {name}')

"""Where things are on the table, from masks: place words and which object is nearer.

The words follow one rule, shared with the tabletop world's captions: an object's place is
its base point (the bottom of its silhouette, x at the middle of that bottom) against the
table's far edge. From the far edge (`horizon`) to the image bottom, the top 30% is 'back'
and the bottom 40% 'front'; the left and right 38% of the image width are 'left' and
'right'; nothing on either axis is 'the centre'. On a table seen from a camera above it,
the object whose base is lower in the image stands nearer the camera.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:  # numpy only at run time: the tabletop world uses place_phrase
    from .preprocess import Letterbox


def place_phrase(x: float, y: float, horizon: float) -> str:
    """Base point (x, y) and far edge row, fractions of the image -> 'the front left'."""
    t = (y - horizon) / max(1e-6, 1.0 - horizon)
    depth = 'front' if t > 0.6 else 'back' if t < 0.3 else ''
    side = 'left' if x < 0.38 else 'right' if x > 0.62 else ''
    words = ' '.join(w for w in (depth, side) if w)
    return f'the {words or "centre"}'


def _to_image(row: float, col: float, hm: int, box: 'Letterbox') -> tuple[float, float]:
    """A place on an hm x hm mask grid of the padded square -> (x, y) image fractions."""
    eh, ew = box.extent
    x = (col / hm - box.left / box.size) / ew
    y = (row / hm - box.top / box.size) / eh
    return min(1.0, max(0.0, x)), min(1.0, max(0.0, y))


def base_point(mask: np.ndarray, box: 'Letterbox') -> Optional[tuple[float, float]]:
    """(x, y) image fractions of a mask's base (bool (Hm, Hm) on the model input): its
    lowest row, at the middle of the mask's cells in its two lowest rows; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    bottom = int(rows.max())
    middle = float(cols[rows >= bottom - 1].mean())
    return _to_image(bottom + 1.0, middle + 0.5, mask.shape[-1], box)


def far_edge(table: np.ndarray, box: 'Letterbox') -> float:
    """Image row (fraction) of the table's far edge from its mask (bool (Hm, Hm)): the 10th
    percentile of the top row of each of its columns (objects hide parts of the edge);
    0 without a table (a view from above)."""
    cols = np.nonzero(table.any(0))[0]
    if cols.size == 0:
        return 0.0
    first = table[:, cols].argmax(0)  # first table row of each column
    return _to_image(float(np.quantile(first, 0.1)), 0.0, table.shape[-1], box)[1]


def nearer(a: np.ndarray, b: np.ndarray) -> Optional[int]:
    """0 if mask a's base is lower in the image (nearer the camera) than mask b's, 1 if
    b's is; None if either mask is empty or both bases are on the same row."""
    if not a.any() or not b.any():
        return None
    ya, yb = int(np.nonzero(a)[0].max()), int(np.nonzero(b)[0].max())
    return None if ya == yb else (0 if ya > yb else 1)

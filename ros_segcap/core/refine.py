"""Edge refinement of mask probabilities with the image as guide (a colour guided filter).

Masks come from a grid of 8 x 8 px cells on the model input (about 10 x 10 px of a 640 x 480
frame), so their edges are cell-sized blurs. The guided filter (He, Sun and Tang, "Guided
Image Filtering", ECCV 2010) fits, in every window, the mask probability as an affine
function of the pixel colours, so a probability edge snaps to the colour edge under it. On
test scenes of the tabletop world it raises the mean IoU of the decoder's object masks from
0.82 to 0.94 (`python -m training.decoder_eval --n 40`, with and without
`--no-refine-edges`). Work is limited to each mask's box.
"""
from __future__ import annotations

import cv2
import numpy as np

RADIUS_CELLS = 1.2  # filter radius in mask cells (12 px of a 640 x 480 frame)
EPS = 3e-4  # regularisation: colour variance (0..1 scale) below which a window stays smooth
MIN_PROB = 0.05  # pixels below this probability bound the box that is refined
FIT_RADIUS = 3  # the coefficients are fitted on the image shrunk until the radius is ~3 px
MIN_KEPT = 0.5  # a refined mask under this share of the grid mask's area is not used


def radius_px(cell_px: float) -> int:
    """Filter radius in original pixels for mask cells of cell_px pixels."""
    return max(1, int(round(RADIUS_CELLS * cell_px)))


def _mean(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float = EPS,
                  step: int = 1) -> np.ndarray:
    """guide (H, W, 3) float32 0..1, p (H, W) float32 -> filtered p (H, W) float32.

    step > 1: the fast guided filter (He and Sun, 2015): the per-window affine coefficients
    are fitted on images shrunk step times (radius r / step) and resized back, and only
    their application runs at full resolution.
    """
    full = guide
    h, w = p.shape
    if step > 1:
        size = (max(1, w // step), max(1, h // step))
        guide = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
        p = cv2.resize(p, size, interpolation=cv2.INTER_AREA)
        r = max(1, int(round(r / step)))
    mean_i, mean_p = _mean(guide, r), _mean(p, r)
    cov = np.empty(p.shape + (3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            c = _mean(guide[..., a] * guide[..., b], r) - mean_i[..., a] * mean_i[..., b]
            cov[..., a, b] = cov[..., b, a] = c
    cov += np.float32(eps) * np.eye(3, dtype=np.float32)
    cov_ip = np.stack([_mean(guide[..., a] * p, r) - mean_i[..., a] * mean_p
                       for a in range(3)], -1)
    coef = np.linalg.solve(cov, cov_ip[..., None])[..., 0]  # (H, W, 3)
    offset = mean_p - (coef * mean_i).sum(-1)
    coef, offset = _mean(coef, r), _mean(offset, r)
    if step > 1:
        coef = cv2.resize(coef, (w, h), interpolation=cv2.INTER_LINEAR)
        offset = cv2.resize(offset, (w, h), interpolation=cv2.INTER_LINEAR)
    return (coef * full).sum(-1) + offset


def refine(image: np.ndarray, probs: np.ndarray, r: int, eps: float = EPS) -> np.ndarray:
    """image (H, W, 3) uint8 RGB, probs (H, W) float 0..1 -> refined probs (H, W) float32.

    Only the box around the pixels with probability >= MIN_PROB, grown by 2r, is filtered;
    outside it the probabilities are kept. An empty mask comes back unchanged. The filter's
    coefficients are fitted at 1 / (r // FIT_RADIUS) of the size (the fast guided filter).
    Where the colours do not explain the mask (weak masks, textured real photos), the filter
    can shrink or scatter it, so: parts of the refined mask (p > 0.5) that do not touch the
    grid's mask keep their grid probability, and if the refined mask keeps less than MIN_KEPT
    of the grid mask's area, the grid's probabilities come back unchanged.
    """
    probs = np.asarray(probs, np.float32)
    ys = np.flatnonzero((probs >= MIN_PROB).any(1))
    if len(ys) == 0:
        return probs.copy()
    xs = np.flatnonzero((probs >= MIN_PROB).any(0))
    h, w = probs.shape
    y0, y1 = max(0, ys[0] - 2 * r), min(h, ys[-1] + 2 * r + 1)
    x0, x1 = max(0, xs[0] - 2 * r), min(w, xs[-1] + 2 * r + 1)
    guide = image[y0:y1, x0:x1].astype(np.float32) / 255.0
    step = max(1, r // FIT_RADIUS)
    before = probs[y0:y1, x0:x1]
    after = np.clip(guided_filter(guide, before, r, eps, step), 0.0, 1.0)
    coarse, fine = before > 0.5, after > 0.5
    if coarse.any():
        n, parts = cv2.connectedComponents(fine.astype(np.uint8))
        touches = np.zeros(n, bool)
        touches[parts[coarse & fine]] = True  # part 0 (background) is never `fine`
        stray = fine & ~touches[parts]
        after[stray] = before[stray]
        if (after > 0.5).sum() < MIN_KEPT * coarse.sum():
            return probs.copy()
    out = probs.copy()
    out[y0:y1, x0:x1] = after
    return out

"""Edge refinement (core/refine.py): mask edges from the coarse mask grid snap to the image."""
from __future__ import annotations

import numpy as np
import torch

from ros_segcap.core.preprocess import Letterbox, unletterbox
from ros_segcap.core.refine import radius_px, refine


def disc_scene(rng: np.random.Generator, h: int = 120, w: int = 160
               ) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a noisy grey-brown table: (image uint8, true mask)."""
    yy, xx = np.mgrid[:h, :w]
    truth = (yy - 57.3) ** 2 + (xx - 71.6) ** 2 < 23.5 ** 2
    image = np.empty((h, w, 3), np.float32)
    image[:] = (140, 120, 100)
    image[truth] = (200, 40, 40)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def coarse_probs(truth: np.ndarray, size: int, hm: int) -> tuple[np.ndarray, float]:
    """The truth as the mask grid sees it (cell fractions as logits), back at image size."""
    h, w = truth.shape
    box = Letterbox(h, w, size, size / max(h, w))
    cell = size // hm
    sq = np.zeros((size, size), np.float32)
    ys, xs = np.nonzero(truth)
    sq[(ys * box.scale).astype(int), (xs * box.scale).astype(int)] = 1.0
    frac = torch.from_numpy(sq).reshape(hm, cell, hm, cell).mean((1, 3))
    logits = torch.logit(frac.clamp(1e-3, 1 - 1e-3))[None]
    return unletterbox(logits, box)[0].sigmoid().numpy(), size / (box.scale * hm)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_refined_edges_follow_the_object() -> None:
    rng = np.random.default_rng(0)
    image, truth = disc_scene(rng)
    probs, cell_px = coarse_probs(truth, 128, 16)  # 10 px cells, as at 640 x 480
    coarse = iou(probs > 0.5, truth)
    refined = refine(image, probs, radius_px(cell_px))
    assert refined.shape == truth.shape and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    got = iou(refined > 0.5, truth)
    assert coarse < 0.97 and 1 - got <= (1 - coarse) / 3, (coarse, got)  # a third of the error


def test_refine_keeps_what_it_does_not_touch() -> None:
    rng = np.random.default_rng(1)
    image, truth = disc_scene(rng)
    empty = np.zeros(truth.shape, np.float32)
    assert np.array_equal(refine(image, empty, 12), empty)
    probs, _ = coarse_probs(truth, 128, 16)
    r = 3
    out = refine(image, probs, r)
    ys, xs = np.nonzero(probs >= 0.05)
    far = np.ones(truth.shape, bool)
    far[max(0, ys.min() - 2 * r):ys.max() + 2 * r + 1,
        max(0, xs.min() - 2 * r):xs.max() + 2 * r + 1] = False
    assert far.any() and np.array_equal(out[far], probs[far])


def test_pipeline_refines_edges_unless_told_not_to(tiny_pipeline) -> None:
    rng = np.random.default_rng(2)
    image, truth = disc_scene(rng)
    box = Letterbox(*truth.shape, 64, 64 / max(truth.shape))
    logits = torch.logit(torch.from_numpy(coarse_probs(truth, 64, 8)[0]).clamp(1e-4, 1 - 1e-4))
    refined = tiny_pipeline.probabilities(logits[None], image, box)[0]
    assert iou(refined > 0.5, truth) > iou(logits.numpy() > 0, truth)
    assert tiny_pipeline.set_option('refine_edges', False) is None
    try:
        plain = tiny_pipeline.probabilities(logits[None], image, box)[0]
        np.testing.assert_allclose(plain, logits.sigmoid().numpy(), rtol=0, atol=1e-6)
    finally:
        tiny_pipeline.set_option('refine_edges', True)


def test_weak_mask_on_texture_is_kept() -> None:
    """No colour edge explains a faint blob on pure texture: the grid's mask comes back
    rather than a shrunken or vanished one."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:120, :160]
    probs = (0.62 * np.exp(-((yy - 60) ** 2 + (xx - 80) ** 2) / (2 * 12.0 ** 2))
             ).astype(np.float32)
    coarse = probs > 0.5
    out = refine(image, probs, 12) > 0.5
    assert coarse.sum() > 50 and out.sum() >= 0.5 * coarse.sum()


def test_refined_mask_has_no_parts_away_from_the_grid_mask() -> None:
    """On texture, the filter's output is noisy around a mask; any refined part that does
    not touch the grid's mask keeps its grid probability (below 0.5)."""
    import cv2
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:120, :160]
    dist = np.sqrt((yy - 60) ** 2 + (xx - 80) ** 2)
    probs = (0.98 / (1 + np.exp((dist - 20) / 6))).astype(np.float32)
    coarse = probs > 0.5
    out = refine(image, probs, 12) > 0.5
    n, parts = cv2.connectedComponents(out.astype(np.uint8))
    assert n > 1 and all((coarse & (parts == k)).any() for k in range(1, n))

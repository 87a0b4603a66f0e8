"""The perception prior checked against a direct numpy computation of prior.py's formulas.

    s_q      = max over non-void classes of softmax(c_q)
    P_q(x)   = (0.5 s_q + 0.5) * sigmoid(M_q(x)), resized (bilinear) to the token grid
    w(x)     = softmax over q of P(x)
    prior(x) = sum_q w_q(x) [f_q ; e_q]
    foreground: queries owning >= 1 pixel of argmax_q P at mask resolution
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ros_segcap.models.segcap.prior import (
    mask_pool,
    foreground_queries, perception_prior, prior_probability, query_scores,
)


def np_scores(class_logits: np.ndarray) -> np.ndarray:
    """(N, K+1) -> (N,): loop over queries."""
    out = np.zeros(class_logits.shape[0])
    for q, row in enumerate(class_logits):
        e = np.exp(row - row.max())
        p = e / e.sum()
        out[q] = p[:-1].max()
    return out


def np_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of (H, W) with half-pixel centres (align_corners=False), in loops."""
    h, w = image.shape
    out = np.zeros((out_h, out_w))
    for i in range(out_h):
        sy = max((i + 0.5) * h / out_h - 0.5, 0.0)
        y0 = min(int(math.floor(sy)), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(out_w):
            sx = max((j + 0.5) * w / out_w - 0.5, 0.0)
            x0 = min(int(math.floor(sx)), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


def np_probability(class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """(N, K+1), (N, Hm, Wm) -> P (N, Hm, Wm)."""
    s = np_scores(class_logits)
    p = np.zeros_like(mask_logits)
    for q in range(mask_logits.shape[0]):
        p[q] = (0.5 * s[q] + 0.5) / (1 + np.exp(-mask_logits[q]))
    return p


def np_prior(class_logits, mask_logits, feat, pos, grid) -> np.ndarray:
    """One image: (N, K+1), (N, Hm, Wm), (N, D), (N, D) -> (grid*grid, 2D), pixel by pixel."""
    p = np_probability(class_logits, mask_logits)
    small = np.stack([np_bilinear(p[q], grid, grid) for q in range(p.shape[0])])
    embed = np.concatenate([feat, pos], -1)  # (N, 2D)
    out = np.zeros((grid * grid, embed.shape[1]))
    for y in range(grid):
        for x in range(grid):
            logits = small[:, y, x]
            w = np.exp(logits - logits.max())
            w /= w.sum()
            for q in range(len(w)):
                out[y * grid + x] += w[q] * embed[q]
    return out


def np_foreground(class_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    p = np_probability(class_logits, mask_logits)
    n, hm, wm = p.shape
    owns = np.zeros(n, bool)
    for y in range(hm):
        for x in range(wm):
            owns[int(np.argmax(p[:, y, x]))] = True
    return owns


def _random_inputs(seed: int, b: int, n: int, k: int, hm: int, d: int):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(b, n, k + 1, generator=g) * 3
    masks = torch.randn(b, n, hm, hm, generator=g) * 4
    feat = torch.randn(b, n, d, generator=g)
    pos = torch.randn(b, n, d, generator=g)
    return cls, masks, feat, pos


@pytest.mark.parametrize('b, n, k, hm, d, grid', [
    (1, 8, 10, 16, 32, 2),  # tiny-random sizes
    (2, 5, 3, 16, 8, 4),
    (1, 6, 4, 12, 4, 5),  # non-integer scale
    (1, 3, 2, 8, 4, 8),  # same size: no resize
])
def test_prior_matches_numpy(b: int, n: int, k: int, hm: int, d: int, grid: int) -> None:
    cls, masks, feat, pos = _random_inputs(b * 100 + grid, b, n, k, hm, d)
    got = perception_prior(cls, masks, feat, pos, grid)
    assert got.shape == (b, grid * grid, 2 * d)
    for i in range(b):
        want = np_prior(cls[i].numpy(), masks[i].numpy(), feat[i].numpy(), pos[i].numpy(), grid)
        np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-5, atol=1e-5)


def test_scores_and_probability_match_numpy() -> None:
    cls, masks, _, _ = _random_inputs(7, 1, 6, 5, 8, 2)
    cls[0, 0, -1] = 50.0  # void dominates query 0: s_0 is still a non-void probability
    np.testing.assert_allclose(query_scores(cls)[0].numpy(), np_scores(cls[0].numpy()),
                               rtol=1e-5, atol=1e-7)
    assert float(query_scores(cls)[0, 0]) < 1e-10
    np.testing.assert_allclose(prior_probability(cls, masks)[0].numpy(),
                               np_probability(cls[0].numpy(), masks[0].numpy()), rtol=1e-5,
                               atol=1e-7)


def test_prior_weights_follow_the_probability() -> None:
    """Where one query's P is much larger, the prior is (almost) that query's embedding."""
    n, hm, d = 4, 8, 3
    cls = torch.zeros(1, n, 3)
    cls[0, :, 0] = 20.0  # every query confident: s = 1, P = sigmoid(M)
    masks = torch.full((1, n, hm, hm), -30.0)
    masks[0, 2] = 30.0  # query 2 everywhere
    feat, pos = torch.randn(1, n, d), torch.randn(1, n, d)
    prior = perception_prior(cls, masks, feat, pos, 2)
    # P is 1 vs 0, softmax weight e / (e + 3) for query 2: a visible but bounded pull
    w2 = math.e / (math.e + n - 1)
    others = torch.cat([feat, pos], -1)[0, [0, 1, 3]].sum(0) * (1 - w2) / (n - 1)
    want = torch.cat([feat, pos], -1)[0, 2] * w2 + others
    torch.testing.assert_close(prior[0], want.expand(4, -1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_foreground_matches_numpy(seed: int) -> None:
    cls, masks, _, _ = _random_inputs(seed, 2, 7, 4, 6, 2)
    masks[:, 3] = -40.0  # query 3 never owns a pixel
    got = foreground_queries(cls, masks)
    assert got.shape == (2, 7) and got.dtype == torch.bool
    for i in range(2):
        want = np_foreground(cls[i].numpy(), masks[i].numpy())
        assert got[i].tolist() == want.tolist()
        assert not want[3]


def test_foreground_owner_of_a_region() -> None:
    """Two queries split the image; a third one is weaker everywhere and owns nothing."""
    cls = torch.zeros(1, 3, 3)
    cls[0, :, 0] = 10.0
    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 0, :, :2] = 5.0
    masks[0, 1, :, 2:] = 5.0
    masks[0, 2] = 1.0
    assert foreground_queries(cls, masks)[0].tolist() == [True, True, False]


def test_mask_pool_averages_under_the_soft_mask() -> None:
    fine = torch.zeros(1, 2, 4, 4)
    fine[0, 0, :, :2] = 3.0  # channel 0: 3 on the left half, 0 on the right
    fine[0, 1] = torch.arange(16.0).view(4, 4)
    masks = torch.full((1, 2, 4, 4), -30.0)
    masks[0, 0, :, :2] = 30.0  # query 0 covers the left half
    masks[0, 1, 1, 3] = 30.0  # query 1 covers one pixel
    pooled = mask_pool(fine, masks)
    torch.testing.assert_close(pooled[0, 0], torch.tensor([3.0, fine[0, 1, :, :2].mean()]))
    torch.testing.assert_close(pooled[0, 1], torch.tensor([0.0, 7.0]))
    assert mask_pool(fine, torch.full((1, 1, 4, 4), -30.0)).abs().max() < 1e-3  # empty: ~0


def test_fine_pool_reaches_the_object_tokens(tiny_model, tiny_frame) -> None:
    """pool_proj starts at zero (old behaviour) and, once trained, object tokens depend on it."""
    model, (frame, _) = tiny_model, tiny_frame
    proj = model.projectors.pool_proj
    assert frame.fine is not None and proj is not None and not proj.weight.any()
    f, e = frame.query_feat[0, :2], frame.query_pos[0, :2]
    n_queries, c8 = frame.query_feat.shape[1], model.config.backbone_channels[0]
    assert model.pooled(frame, frame.mask_logits).shape == (n_queries, c8)
    pooled = torch.ones(2, frame.fine.shape[1])  # (random backbone: its features are tiny)
    with torch.no_grad():
        base = model.projectors.object_tokens(f, e, pooled)
        saved = proj.weight.clone()
        proj.weight.normal_()
        try:
            moved = model.projectors.object_tokens(f, e, pooled)
        finally:
            proj.weight.copy_(saved)
    assert (moved - base).abs().max() > 1e-3
    with pytest.raises(ValueError, match='fine features'):
        model.projectors.object_tokens(f, e)


def test_visual_block_uses_prior_and_foreground(tiny_model, tiny_frame,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Pixel tokens carry the prior; object tokens are the best foreground queries."""
    model, (frame, _) = tiny_model, tiny_frame
    cfg = model.config
    with torch.no_grad():
        prior = perception_prior(frame.class_logits, frame.mask_logits, frame.query_feat,
                                 frame.query_pos, cfg.token_grid)
        want_pixel = model.projectors.pixel_tokens(frame.pixel_tokens, prior)[0]
        fg = foreground_queries(frame.class_logits, frame.mask_logits)[0]
        scores = query_scores(frame.class_logits)[0]
        n_fg = int(fg.sum())
        assert n_fg >= 2  # (seeded model) so that the cap below really drops a query
        cap = n_fg - 1
        monkeypatch.setattr(model, 'config', cfg.replace(max_object_tokens=cap))
        block = model.visual_block(frame)
    t = cfg.token_grid ** 2
    assert block.shape == (t + 1 + cap, cfg.llm_hidden)
    torch.testing.assert_close(block[:t], want_pixel)
    torch.testing.assert_close(block[t], model.projectors.separator.detach())
    idx = [q for q in range(fg.numel()) if fg[q]]
    kept = sorted(sorted(idx, key=lambda q: -float(scores[q]))[:cap])
    with torch.no_grad():
        pooled = mask_pool(frame.fine, frame.mask_logits)[0, kept]
        want_obj = model.projectors.object_tokens(frame.query_feat[0, kept],
                                                  frame.query_pos[0, kept], pooled)
    torch.testing.assert_close(block[t + 1:], want_obj)

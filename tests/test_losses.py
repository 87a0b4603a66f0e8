"""Stage-0 set losses: Hungarian matching and the size weighting of small objects."""
from __future__ import annotations

import torch

from training.losses import set_losses, size_weights


def _scene():
    """One big and one small target on a 16x16 grid; 3 queries, 4 classes + void."""
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8, :] = True  # 128 cells
    masks[1, 12:14, 12:14] = True  # 4 cells
    classes = torch.tensor([1, 2])
    g = torch.Generator().manual_seed(0)
    class_logits = [torch.randn(1, 3, 5, generator=g) for _ in range(2)]
    mask_logits = [torch.randn(1, 3, 16, 16, generator=g) for _ in range(2)]
    return class_logits, mask_logits, classes, masks


def test_size_weights() -> None:
    _, _, _, masks = _scene()
    w = size_weights(masks, ref_cells=64.0, max_weight=3.0)
    assert torch.allclose(w, torch.tensor([1.0, 3.0]))  # sqrt(64/128) -> 1, sqrt(16) -> 3
    assert torch.allclose(size_weights(masks, 64.0, 10.0), torch.tensor([1.0, 4.0]))
    assert torch.all(size_weights(masks, 64.0, 1.0) == 1.0)


def _losses(small_weight: float, **over):
    cl, ml, classes, masks = _scene()
    args = dict(class_weight=2.0, bce_weight=5.0, dice_weight=5.0, void_weight=0.1)
    args.update(over)
    return set_losses(cl, ml, classes, masks, small_weight=small_weight, **args)


def test_unit_weights_match_plain_means() -> None:
    """small_weight=1 gives the usual Mask2Former terms (matched means, void-weighted CE)."""
    from training.losses import bce_loss, dice_loss, hungarian_match
    cl, ml, classes, masks = _scene()
    out = _losses(1.0)
    want = {'class': 0.0, 'mask_bce': 0.0, 'mask_dice': 0.0}
    for c, m in zip(cl, ml):
        rows, cols = hungarian_match(c[0], m[0], classes, masks, (2.0, 5.0, 5.0))
        target = torch.full((3,), 4)
        target[rows] = classes[cols]
        weight = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.1])
        want['class'] += torch.nn.functional.cross_entropy(c[0], target, weight=weight)
        want['mask_bce'] += bce_loss(m[0][rows], masks[cols])
        want['mask_dice'] += dice_loss(m[0][rows], masks[cols])
    for k, v in want.items():
        assert torch.allclose(out[k], v, atol=1e-6), k


def test_small_weight_leans_on_the_small_object() -> None:
    """With small_weight the loss moves towards the small target's own loss."""
    from training.losses import _dice_each, hungarian_match
    cl, ml, classes, masks = _scene()
    plain, leaned = _losses(1.0), _losses(3.0)
    rows, cols = hungarian_match(cl[0][0], ml[0][0], classes, masks, (2.0, 5.0, 5.0))
    last_rows, last_cols = hungarian_match(cl[1][0], ml[1][0], classes, masks, (2.0, 5.0, 5.0))
    small = [_dice_each(m[0][r[c == 1]], masks[1:2])[0] for m, r, c in
             ((ml[0], rows, cols), (ml[1], last_rows, last_cols))]
    big = [_dice_each(m[0][r[c == 0]], masks[0:1])[0] for m, r, c in
           ((ml[0], rows, cols), (ml[1], last_rows, last_cols))]
    # dice per layer = (1 * big + 3 * small) / 4 instead of (big + small) / 2
    assert torch.allclose(leaned['mask_dice'], sum((b + 3 * s) / 4 for b, s in zip(big, small)),
                          atol=1e-6)
    assert not torch.allclose(plain['mask_dice'], leaned['mask_dice'])

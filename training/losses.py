"""Losses: mask BCE / Dice, Hungarian matching (Mask2Former), next-token CE with a shift."""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Dice loss of N masks: logits (N, Hm, Wm), target (N, Hm, Wm) in {0, 1}."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1).to(p.dtype)
    num = 2 * (p * t).sum(1) + 1
    den = p.sum(1) + t.sum(1) + 1
    return (1 - num / den).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of N masks."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def mask_losses(layers: list[torch.Tensor], target: torch.Tensor, bce_weight: float,
                dice_weight: float) -> torch.Tensor:
    """Sum over decoder layers of bce_weight * BCE + dice_weight * Dice.

    layers[l]: (N, Hm, Wm) logits of layer l; target (N, Hm, Wm).
    """
    total = layers[0].new_zeros(())
    for logits in layers:
        logits = logits.float()
        total = total + bce_weight * bce_loss(logits, target) + \
            dice_weight * dice_loss(logits, target)
    return total


@torch.no_grad()
def hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                    classes: torch.Tensor, masks: torch.Tensor, weights: tuple[float, float, float]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Match Nq predictions to G targets (one image).

    class_logits (Nq, K+1), mask_logits (Nq, Hm, Wm), classes (G,), masks (G, Hm, Wm).
    Cost = w_cls * (-p(class)) + w_bce * pairwise BCE + w_dice * pairwise Dice.
    Returns (query indices, target indices).
    """
    w_cls, w_bce, w_dice = weights
    prob = class_logits.float().softmax(-1)[:, classes]  # (Nq, G)
    x = mask_logits.float().flatten(1)  # (Nq, P)
    t = masks.float().flatten(1)  # (G, P)
    pos = F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction='none')
    neg = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction='none')
    bce = (pos @ t.T + neg @ (1 - t).T) / x.shape[1]
    p = x.sigmoid()
    dice = 1 - (2 * p @ t.T + 1) / (p.sum(1)[:, None] + t.sum(1)[None, :] + 1)
    cost = -w_cls * prob + w_bce * bce + w_dice * dice
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return rows, cols


def set_losses(class_logits: list[torch.Tensor], mask_logits: list[torch.Tensor],
               classes: torch.Tensor, masks: torch.Tensor, *, class_weight: float,
               bce_weight: float, dice_weight: float, void_weight: float
               ) -> dict[str, torch.Tensor]:
    """Hungarian-matched class CE + mask BCE + Dice, summed over decoder layers (batch 1).

    class_logits[l]: (1, Nq, K+1); mask_logits[l]: (1, Nq, Hm, Wm); the last class is void.
    """
    n_cls = class_logits[0].shape[-1]
    cls_w = torch.ones(n_cls, device=classes.device)
    cls_w[-1] = void_weight
    out = {'class': 0.0, 'mask_bce': 0.0, 'mask_dice': 0.0}
    for cl, ml in zip(class_logits, mask_logits):
        cl, ml = cl[0].float(), ml[0].float()
        rows, cols = hungarian_match(cl, ml, classes, masks,
                                     (class_weight, bce_weight, dice_weight))
        target_cls = torch.full((cl.shape[0],), n_cls - 1, dtype=torch.long,
                                device=cl.device)
        target_cls[rows] = classes[cols]
        out['class'] = out['class'] + F.cross_entropy(cl, target_cls, weight=cls_w)
        pred, tgt = ml[rows], masks[cols]
        out['mask_bce'] = out['mask_bce'] + bce_loss(pred, tgt)
        out['mask_dice'] = out['mask_dice'] + dice_loss(pred, tgt)
    return out


def shifted_ce(hidden: torch.Tensor, labels: torch.Tensor, head) -> torch.Tensor:
    """Next-token CE: hidden (1, T, H) at t predicts labels[t + 1]; -100 is ignored.

    The LM head runs only at the positions that have a label (saves a (T, vocab) matmul).
    """
    target = labels[1:]
    keep = target != -100
    if not bool(keep.any()):
        return hidden.new_zeros(())
    logits = head(hidden[0, :-1][keep])
    return F.cross_entropy(logits.float(), target[keep])


def mask_iou_matrix(pred_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (G, N) of G target masks (G, Hm, Wm) with N predicted masks (logits > 0)."""
    p = (pred_logits > 0).flatten(1).float()
    t = target.flatten(1).float()
    inter = t @ p.T
    union = t.sum(1)[:, None] + p.sum(1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def pointer_losses(queries: torch.Tensor, keys: torch.Tensor, key_masks: torch.Tensor,
                   target: torch.Tensor, temperature: float, min_iou: float
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Which frame object does each [SEG] query mean? (CE, MSE, number of scored queries).

    queries (G, 2D): text2vision outputs of G [SEG] states; keys (N, 2D): the frame's object
    queries [f; e]; key_masks (N, Hm, Wm) their mask logits; target (G, Hm, Wm). The
    positive of query g is the object query whose mask overlaps target g best (IoU >=
    min_iou, else g is skipped). CE over cosine similarities / temperature, MSE to it.
    """
    keys = keys.detach()
    iou = mask_iou_matrix(key_masks.detach(), target)  # (G, N)
    best, idx = iou.max(1)
    use = best >= min_iou
    if not bool(use.any()):
        zero = queries.sum() * 0.0
        return zero, zero, 0
    q, pos = queries[use], idx[use]
    sim = F.normalize(q, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    ce = F.cross_entropy(sim, pos)
    mse = F.mse_loss(q, keys[pos])
    return ce, mse, int(use.sum())

"""Mask metrics (pure numpy): IoU, referring cIoU / gIoU / no-target accuracy, GCG scores.

Masks are (H, W) arrays, read as bool (nonzero = inside). A missing prediction (None, an
empty list, an all-false mask) means "no object".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np

from training.eval.text_metrics import phrase_similarity

MaskLike = Union[None, np.ndarray, Sequence[np.ndarray]]
NAN = float('nan')


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two (H, W) masks; 0.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f'mask shapes differ: prediction {pred.shape}, target {gt.shape}')
    p, g = pred.astype(bool), gt.astype(bool)
    union = np.count_nonzero(p | g)
    return np.count_nonzero(p & g) / union if union else 0.0


def iou_matrix(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise IoU (P, G) between P predicted and G target masks of one image (0 if empty)."""
    if len(preds) == 0 or len(gts) == 0:
        return np.zeros((len(preds), len(gts)))
    p = np.stack([np.asarray(m, dtype=bool).ravel() for m in preds]).astype(np.float64)
    g = np.stack([np.asarray(m, dtype=bool).ravel() for m in gts]).astype(np.float64)
    if p.shape[1] != g.shape[1]:
        raise ValueError(f'mask sizes differ: {np.shape(preds[0])} vs {np.shape(gts[0])}')
    inter = p @ g.T
    union = p.sum(1)[:, None] + g.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _as_mask(m: MaskLike, shape: Optional[tuple]) -> Optional[np.ndarray]:
    """Union of a mask or a list of masks as one bool mask; None stays None."""
    if m is None:
        return None
    if isinstance(m, np.ndarray) and m.ndim == 2:
        return m.astype(bool)
    masks = [np.asarray(x, dtype=bool) for x in m]
    if not masks:
        return None if shape is None else np.zeros(shape, dtype=bool)
    return np.logical_or.reduce(masks)


@dataclass(frozen=True)
class ReferringScores:
    """Referring segmentation scores over a dataset (gRefCOCO conventions)."""

    ciou: float  # sum of intersections / sum of unions over samples with a target
    giou: float  # mean per-sample IoU; a no-target sample scores 1 if predicted empty, else 0
    n_samples: int
    n_no_target: int
    no_target_acc: float  # no-target samples predicted empty / no-target samples
    false_empty_rate: float  # samples with a target predicted empty / samples with a target


class ReferringMeter:
    """Accumulate referring predictions one sample at a time; `compute()` gives the scores.

    A sample's target (and prediction) may be one mask, a list of masks (their union is
    used, for multi-object expressions) or None / empty / all-false for "no target".
    A no-target sample adds nothing to cIoU's sums, whatever was predicted.
    """

    def __init__(self) -> None:
        self.inter = 0
        self.union = 0
        self.ious: list[float] = []
        self.no_target_correct = 0
        self.n_no_target = 0
        self.false_empty = 0

    def update(self, pred: MaskLike, gt: MaskLike) -> float:
        """Add one sample and return its IoU as counted in gIoU."""
        g = _as_mask(gt, None)
        p = _as_mask(pred, None if g is None else g.shape)
        pred_empty = p is None or not p.any()
        if g is None or not g.any():
            self.n_no_target += 1
            self.no_target_correct += pred_empty
            self.ious.append(1.0 if pred_empty else 0.0)
            return self.ious[-1]
        p = np.zeros_like(g) if p is None else p
        if p.shape != g.shape:
            raise ValueError(f'mask shapes differ: prediction {p.shape}, target {g.shape}')
        inter, union = int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))
        self.inter += inter
        self.union += union
        self.false_empty += pred_empty
        self.ious.append(inter / union)
        return self.ious[-1]

    def compute(self) -> ReferringScores:
        """Return the scores over every sample added so far (NaN where undefined)."""
        n = len(self.ious)
        n_pos = n - self.n_no_target
        return ReferringScores(
            ciou=self.inter / self.union if self.union else NAN,
            giou=float(np.mean(self.ious)) if n else NAN, n_samples=n,
            n_no_target=self.n_no_target,
            no_target_acc=self.no_target_correct / self.n_no_target if self.n_no_target else NAN,
            false_empty_rate=self.false_empty / n_pos if n_pos else NAN)


def referring_scores(preds: Sequence[MaskLike], gts: Sequence[MaskLike]) -> ReferringScores:
    """Compute the referring scores of a whole dataset at once (see ReferringMeter)."""
    if len(preds) != len(gts):
        raise ValueError(f'{len(preds)} predictions but {len(gts)} targets')
    meter = ReferringMeter()
    for p, g in zip(preds, gts):
        meter.update(p, g)
    return meter.compute()


def greedy_pairs(score: np.ndarray, ok: Optional[np.ndarray] = None) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) taken greedily by decreasing score[i, j] > 0 where ok[i, j]."""
    allowed = (score > 0) if ok is None else (score > 0) & ok
    order = np.argsort(-score, axis=None, kind='stable')
    used_i, used_j, pairs = set(), set(), []
    for flat in order:
        i, j = np.unravel_index(flat, score.shape)
        if allowed[i, j] and i not in used_i and j not in used_j:
            pairs.append((int(i), int(j)))
            used_i.add(i)
            used_j.add(j)
    return pairs


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_gt: int) -> float:
    """COCO-style AP: precision envelope sampled at 101 recall points (NaN if n_gt is 0)."""
    if n_gt == 0:
        return NAN
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind='mergesort')
    tp = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    fp = np.cumsum(~np.asarray(is_tp, dtype=bool)[order])
    recall = tp / n_gt
    precision = np.maximum.accumulate((tp / (tp + fp))[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side='left')
    sampled = np.zeros(101)
    reached = idx < len(precision)
    sampled[reached] = precision[idx[reached]]
    return float(sampled.mean())


@dataclass(frozen=True)
class GcgScores:
    """Grounded caption mask scores over a dataset."""

    ap50: float  # mask AP at IoU 0.5 (one class, COCO 101-point interpolation)
    miou: float  # mean over images of the mean IoU of greedily paired pred/target masks
    recall: float  # targets matched with IoU >= 0.5 and a similar phrase / all targets
    n_images: int
    n_gt: int
    n_pred: int


class GcgMeter:
    """Accumulate GCG predictions image by image (GLaMM's evaluation, without BERT).

    AP50: per image, predictions in decreasing score order each take the unmatched target
    of highest IoU if that IoU >= iou_threshold (TP), else count as FP; then COCO AP over
    all images. mIoU: per image, pairs are taken greedily by highest IoU (one-to-one, IoU >
    0) and their IoUs averaged; an image without any pair scores 0. Recall: pairs taken by
    highest IoU among those with IoU >= iou_threshold and phrase similarity >=
    text_threshold; matched targets / all targets. GLaMM stops at the first highest-IoU pair
    whose phrases differ and uses BERT embeddings; here every admissible pair is considered
    and `similarity` defaults to token overlap (`phrase_similarity`), so numbers are not
    comparable with the paper's.
    """

    def __init__(self, *, iou_threshold: float = 0.5, text_threshold: float = 0.5,
                 similarity: Callable[[str, str], float] = phrase_similarity) -> None:
        self.iou_threshold = iou_threshold
        self.text_threshold = text_threshold
        self.similarity = similarity
        self.scores: list[float] = []
        self.is_tp: list[bool] = []
        self.mious: list[float] = []
        self.n_gt = 0
        self.n_recalled = 0

    def update(self, pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray],
               pred_phrases: Sequence[str], gt_phrases: Sequence[str],
               scores: Optional[Sequence[float]] = None) -> None:
        """Add one image: predicted masks/phrases (+ optional scores, default 1) and targets."""
        if len(pred_masks) != len(pred_phrases) or len(gt_masks) != len(gt_phrases):
            raise ValueError(f'{len(pred_masks)} predicted masks for {len(pred_phrases)} '
                             f'phrases, {len(gt_masks)} target masks for {len(gt_phrases)}')
        scores = [1.0] * len(pred_masks) if scores is None else list(scores)
        if len(scores) != len(pred_masks):
            raise ValueError(f'{len(scores)} scores for {len(pred_masks)} predicted masks')
        ious = iou_matrix(pred_masks, gt_masks)  # (P, G)
        self._match_for_ap(ious, scores)
        pairs = greedy_pairs(ious)
        self.mious.append(float(np.mean([ious[i, j] for i, j in pairs])) if pairs else 0.0)
        sims = np.array([[self.similarity(p, g) for g in gt_phrases] for p in pred_phrases])
        ok = (ious >= self.iou_threshold) & (sims.reshape(ious.shape) >= self.text_threshold)
        self.n_recalled += len(greedy_pairs(ious, ok))
        self.n_gt += len(gt_masks)

    def _match_for_ap(self, ious: np.ndarray, scores: list[float]) -> None:
        matched = np.zeros(ious.shape[1], dtype=bool)
        for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind='mergesort'):
            hit = False
            if ious.shape[1]:
                free = np.where(matched, -1.0, ious[i])
                j = int(np.argmax(free))
                hit = bool(free[j] >= self.iou_threshold)
                matched[j] |= hit
            self.scores.append(float(scores[i]))
            self.is_tp.append(hit)

    def compute(self) -> GcgScores:
        """Return the scores over every image added so far (NaN where undefined)."""
        return GcgScores(
            ap50=average_precision(np.array(self.scores), np.array(self.is_tp), self.n_gt),
            miou=float(np.mean(self.mious)) if self.mious else NAN,
            recall=self.n_recalled / self.n_gt if self.n_gt else NAN,
            n_images=len(self.mious), n_gt=self.n_gt, n_pred=len(self.scores))

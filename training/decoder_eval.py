"""How well the decoder's own object masks cover the true objects (the ceiling of seg_pointer).

    python -m training.decoder_eval --model checkpoints/segcap-tiny-dec-wip --split test --n 30

A seg_pointer model answers a [SEG] with the mask of one of the frame's kept queries (the
object tokens the LLM reads), so its masks can be no better than the best kept query per
true object. For every object of >= MIN_PIXELS visible pixels this prints the best IoU
over all decoder queries and over the kept ones (mean, and the share with IoU >= 0.5),
also for small objects alone (< SMALL_PIXELS at 640x480, where the decoder is weakest).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from ros_segcap.core.pipeline import Pipeline, PipelineConfig
from ros_segcap.core.preprocess import unletterbox
from ros_segcap.world import render, sample_scene, split_seed
from training.eval.cli import model_command
from training.eval.metrics import iou_matrix

IMAGE_SIZE = (480, 640)
MIN_PIXELS = 50
SMALL_PIXELS = 1500  # e.g. a cup ~30 x 40 px across the room


def best_ious(pred: np.ndarray, truth: Sequence[np.ndarray], kept: Sequence[int]
              ) -> list[tuple[float, float]]:
    """pred (N, H, W) bool query masks, truth: (H, W) bool masks -> per true mask
    (best IoU over all queries, best IoU over the kept queries; 0 when none is kept)."""
    iou = iou_matrix(list(pred), list(truth))  # (queries, true masks)
    kept = list(kept)
    return [(float(col.max(initial=0.0)), float(col[kept].max(initial=0.0)))
            for col in iou.T]


def decoder_coverage(model: str, split: str = 'test', n: int = 30) -> dict:
    """Best-any and best-kept IoU statistics over the objects of n rendered scenes."""
    pipe = Pipeline(PipelineConfig(model=model))
    pairs, kept_counts, small = [], [], []
    for i in tqdm(range(n), desc='scenes'):
        spec = sample_scene(split_seed(split, i))
        scene = render(spec, *IMAGE_SIZE)
        frame, box = pipe.encode(scene.image)
        pred = (unletterbox(frame.mask_logits[0], box).sigmoid() > 0.5).cpu().numpy()
        kept = pipe.model.kept_queries(frame).tolist()
        kept_counts.append(len(kept))
        truth = [t for t in (scene.mask(k) for k in range(len(spec.objects)))
                 if t.sum() >= MIN_PIXELS]
        pairs += best_ious(pred, truth, kept)
        small += [bool(t.sum() < SMALL_PIXELS) for t in truth]
    best_any = np.array([p[0] for p in pairs])
    best_kept = np.array([p[1] for p in pairs])
    small_kept = best_kept[np.array(small, bool)]
    return dict(model=model, split=split, scenes=n, objects=len(pairs),
                best_any_iou=float(best_any.mean()), best_any_recall50=float(
                    (best_any >= 0.5).mean()),
                best_kept_iou=float(best_kept.mean()),
                best_kept_recall50=float((best_kept >= 0.5).mean()),
                small_objects=int(len(small_kept)),
                small_best_kept_iou=float(small_kept.mean()) if len(small_kept) else None,
                small_best_kept_recall50=float((small_kept >= 0.5).mean())
                if len(small_kept) else None,
                kept_per_scene=float(np.mean(kept_counts)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    model_command(__doc__, decoder_coverage, 30, 'scenes', argv)


if __name__ == '__main__':
    main()

"""How well the decoder's own object masks cover the true objects (the ceiling of seg_pointer).

    python -m training.decoder_eval --model ros_segcap/weights/segcap-tiny --split test --n 30

A seg_pointer model answers a [SEG] with the mask of one of the frame's kept queries (the
object tokens the LLM reads), so its masks can be no better than the best kept query per
true object. For every object of >= MIN_PIXELS visible pixels this prints the best IoU
over all decoder queries and over the kept ones (mean, and the share with IoU >= 0.5),
also for small objects alone (< SMALL_PIXELS at 640x480, where the decoder is weakest).
It also puts one point prompt on each object (its innermost pixel) and gives the IoU of the
prompt's mask: from the point query alone ('point_alone') and as the runtime answers it
('point': a point on a kept object stands for that object, SegCapModel.visual_prompts).
'kind_named' is the share of covered objects whose covering kept query's best class is the
object's kind (with the second look, for models that have one: the kind a region prompt on
the object is given).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ros_segcap.core.pipeline import Pipeline
from ros_segcap.runtime import PipelineConfig, open_pipeline
from ros_segcap.core.preprocess import (Letterbox, innermost_point, prompt_queries,
                                        unletterbox)
from ros_segcap.core.types import VisualPrompt
from training.data.tabletop import world_scene
from training.eval.cli import model_command
from training.eval.metrics import iou_matrix

IMAGE_SIZE = (480, 640)
MIN_PIXELS = 50
SMALL_PIXELS = 1500  # e.g. a cup ~30 x 40 px across the room
# object sizes in visible pixels at 640x480 for the recall by size: (name, upper bound)
SIZE_BINS = (('tiny', 500), ('small', SMALL_PIXELS), ('medium', 10000), ('large', 640 * 480))


def best_ious(pred: np.ndarray, truth: Sequence[np.ndarray], kept: Sequence[int]
              ) -> list[tuple[float, float]]:
    """pred (N, H, W) bool query masks, truth: (H, W) bool masks -> per true mask
    (best IoU over all queries, best IoU over the kept queries; 0 when none is kept)."""
    iou = iou_matrix(list(pred), list(truth))  # (queries, true masks)
    kept = list(kept)
    return [(float(col.max(initial=0.0)), float(col[kept].max(initial=0.0)))
            for col in iou.T]


def kinds_named(pred: np.ndarray, truth: Sequence[np.ndarray], kept: Sequence[int],
                best_class: Sequence[str], kinds: Sequence[str]) -> list[Optional[bool]]:
    """Per true mask: whether the kept query that covers it best (IoU >= 0.5) has its kind
    as best class other than void (best_class, per query); None when no kept query does."""
    kept = list(kept)
    if not kept:
        return [None] * len(truth)
    iou = iou_matrix(list(pred[kept]), list(truth))
    out: list[Optional[bool]] = []
    for col, kind in zip(iou.T, kinds):
        q = int(col.argmax())
        out.append(best_class[kept[q]] == kind if col[q] >= 0.5 else None)
    return out


def point_ious(pipe: Pipeline, frame, box: Letterbox, truth: Sequence[np.ndarray],
               image: np.ndarray) -> list[tuple[float, float]]:
    """Per true mask: IoU of the mask of a point prompt on its innermost pixel, from the
    point query alone and as the runtime answers it (snapped to a kept object)."""
    model, out = pipe.model, []
    for t in truth:
        q = prompt_queries([VisualPrompt('point', point=innermost_point(t))], box,
                           model.config.mask_size)
        with torch.no_grad():
            alone = model.decode_prompts(frame, q.kinds, q.boxes, q.restrict)
            snapped = model.visual_prompts(frame, q, decode=lambda *_: alone)
        ious = []
        for dec in (alone, snapped):
            m = pipe.probabilities(unletterbox(dec.mask_logits[-1][0, :1], box), image,
                                   box)[0] > 0.5
            ious.append(float(iou_matrix([m], [t])[0, 0]))
        out.append((ious[0], ious[1]))
    return out


def _recall(ious: np.ndarray) -> Optional[float]:
    return float((ious >= 0.5).mean()) if len(ious) else None


def recall_by_size(ious: np.ndarray, pixels: np.ndarray) -> dict[str, dict]:
    """{size bin: {objects, recall50}} of best IoUs over objects of given pixel areas."""
    out, low = {}, 0
    for name, high in SIZE_BINS:
        pick = (pixels >= low) & (pixels < high)
        out[name] = dict(pixels=f'{low}-{high}', objects=int(pick.sum()),
                         recall50=_recall(ious[pick]))
        low = high
    return out


def decoder_coverage(model: str, split: str = 'test', n: int = 30, seed_offset: int = 0,
                     refine_edges: bool = True, world: str = 'default',
                     styles: str = 'train') -> dict:
    """Best-any and best-kept IoU statistics over the objects of n rendered scenes, with
    the masks as the runtime gives them (edges refined unless refine_edges is False)."""
    pipe = open_pipeline(PipelineConfig(model=model, refine_edges=refine_edges))
    pairs, points, kept_counts, areas, named = [], [], [], [], []
    names = pipe.model.config.class_names
    for i in tqdm(range(n), desc='scenes'):
        scene = world_scene(split, seed_offset + i, *IMAGE_SIZE, world, styles)
        frame, box = pipe.encode(scene.image)
        pred = pipe.probabilities(unletterbox(frame.mask_logits[0], box), scene.image, box) > 0.5
        kept = pipe.model.kept_queries(frame).tolist()
        kept_counts.append(len(kept))
        shown = [(t, o.kind) for t, o in ((scene.mask(k), o) for k, o in
                                          enumerate(scene.objects)) if t.sum() >= MIN_PIXELS]
        truth = [t for t, _ in shown]
        pairs += best_ious(pred, truth, kept)
        logits = frame.class_logits[0].clone()
        if hasattr(pipe.model, 'looked_again'):
            logits[kept] = pipe.model.looked_again(frame, logits[kept], frame.mask_logits[0, kept])
        best_class = [names[int(c)] for c in logits[:, :-1].argmax(-1)]
        named += kinds_named(pred, truth, kept, best_class, [k for _, k in shown])
        points += point_ious(pipe, frame, box, truth, scene.image)
        areas += [int(t.sum()) for t in truth]
    best_any = np.array([p[0] for p in pairs])
    best_kept = np.array([p[1] for p in pairs])
    areas = np.array(areas)
    small = areas < SMALL_PIXELS
    small_kept = best_kept[small]
    alone, point = (np.array([p[k] for p in points]) for k in (0, 1))
    return dict(model=model, world=world, styles=styles, split=split, seed_offset=seed_offset,
                refine_edges=refine_edges, scenes=n, objects=len(pairs),
                best_kept_recall50_by_size=recall_by_size(best_kept, areas),
                best_any_iou=float(best_any.mean()), best_any_recall50=_recall(best_any),
                best_kept_iou=float(best_kept.mean()), best_kept_recall50=_recall(best_kept),
                small_objects=int(len(small_kept)),
                small_best_kept_iou=float(small_kept.mean()) if len(small_kept) else None,
                small_best_kept_recall50=_recall(small_kept),
                kept_per_scene=float(np.mean(kept_counts)),
                kind_named=float(np.mean([k for k in named if k is not None]))
                if any(k is not None for k in named) else None,
                point_alone_iou=float(alone.mean()), point_alone_recall50=_recall(alone),
                point_iou=float(point.mean()), point_recall50=_recall(point),
                small_point_alone_recall50=_recall(alone[small]),
                small_point_recall50=_recall(point[small]))


def main(argv: Optional[Sequence[str]] = None) -> None:
    model_command(__doc__, decoder_coverage, 30, 'scenes', argv)


if __name__ == '__main__':
    main()

"""Picture of mask edges on a tabletop test scene: as the mask grid gives them, and refined.

    .venv/bin/python benchmarks/plot_edges.py [--model segcap-tiny] [--scene 5028] \
        [--out docs/edges.png]

Left: the masks of "segment all the objects" with refine_edges off; right: with it on.
Each answer mask is outlined in its colour, the true object outlines in white, and the
title gives the mean IoU of every answer mask with its best-matching true object.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from ros_segcap.core.pipeline import mask_iou
from ros_segcap.runtime import PipelineConfig, open_pipeline
from ros_segcap.core.overlay import colour
from ros_segcap.world import render, sample_scene, split_seed

PROMPT = 'Please segment all the objects in this image.'


def outline(img: np.ndarray, mask: np.ndarray, col, width: int = 2) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, contours, -1, tuple(int(c) for c in col), width, cv2.LINE_AA)


def panel(image: np.ndarray, masks: list[np.ndarray], truth: list[np.ndarray],
          title: str, crop: tuple[slice, slice]) -> np.ndarray:
    img = image.copy()
    for t in truth:
        outline(img, t, (255, 255, 255), 1)
    ious = []
    for i, m in enumerate(masks):
        outline(img, m, colour(i))
        ious.append(max(mask_iou(m, t) for t in truth))
    img = np.ascontiguousarray(img[crop])
    text = f'{title}: mean IoU {np.mean(ious):.2f}' if ious else f'{title}: no mask'
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2,
                cv2.LINE_AA)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='segcap-tiny')
    ap.add_argument('--scene', type=int, default=5028, help='test-split scene index')
    ap.add_argument('--out', default='docs/edges.png')
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = sample_scene(split_seed('test', args.scene))
    scene = render(spec, 480, 640)
    truth = [scene.mask(k) for k in range(len(spec.objects))]
    truth = [t for t in truth if t.any()]
    ys, xs = np.nonzero(np.logical_or.reduce(truth))  # the part of the table with objects
    crop = (slice(max(0, ys.min() - 40), ys.max() + 20),
            slice(max(0, xs.min() - 20), xs.max() + 20))
    panels = []
    for refine, title in ((False, 'mask grid'), (True, 'edges refined')):
        pipe = open_pipeline(PipelineConfig(model=args.model, refine_edges=refine))
        result = pipe.run(scene.image, PROMPT)
        panels.append(panel(scene.image, result.masks, truth, title, crop))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate(panels, 1), cv2.COLOR_RGB2BGR))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()

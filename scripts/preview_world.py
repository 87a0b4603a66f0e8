#!/usr/bin/env python3
"""Write a grid PNG of tabletop scenes: image, mask overlay, and one annotation each.

Usage: python scripts/preview_world.py [--n=6] [--split=val] [--size=384x512] [--out=PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from ros_segcap.world import TASKS, annotate, render, sample_scene, split_seed  # noqa: E402
from ros_segcap.world.render import FIRST_OBJECT_ID  # noqa: E402


def overlay(scene, seg_ids) -> np.ndarray:
    """Image with the annotation's masks (or all instances) tinted and outlined."""
    out = scene.image.astype(np.float32)
    ids = list(seg_ids) or [FIRST_OBJECT_ID + i for i in range(len(scene.objects))]
    for k, sid in enumerate(ids):
        mask = scene.panoptic == sid
        hue = int(180 * k / max(len(ids), 1))
        tint = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
        out[mask] = 0.6 * out[mask] + 0.4 * tint
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out.astype(np.uint8)


def text_panel(lines: list[str], width: int, height: int) -> np.ndarray:
    """White panel with wrapped black text."""
    panel = np.full((height, width, 3), 255, np.uint8)
    chars = max(20, width // 7)
    wrapped = [w for line in lines for w in textwrap.wrap(line, chars)]
    for k, line in enumerate(wrapped[:height // 14]):
        cv2.putText(panel, line, (4, 12 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return panel


def tile(split: str, index: int, h: int, w: int) -> np.ndarray:
    """One column: the image, the overlay of one annotation, and its text."""
    seed = split_seed(split, index)
    scene = render(sample_scene(seed), h, w)
    task = TASKS[index % len(TASKS)]
    ann = annotate(scene, task, np.random.default_rng([seed, 1]), fixed=split != 'train')
    over = overlay(scene, ann.seg_ids)
    for p in ann.prompts:
        if p.point is not None:
            cv2.circle(over, (int(p.point[0]), int(p.point[1])), 5, (255, 0, 255), -1)
        if p.box is not None:
            x1, y1, x2, y2 = (int(v) for v in p.box)
            cv2.rectangle(over, (x1, y1), (x2, y2), (255, 0, 255), 2)
    names = ', '.join(f'{o.colour} {o.kind}' for o in scene.objects)
    lines = [f'seed {seed} [{task}] objects: {names}', f'Q: {ann.question}', f'A: {ann.answer}']
    return np.vstack([scene.image, over, text_panel(lines, w, 170)])


def main() -> None:
    """Parse arguments and write the grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=6)
    parser.add_argument('--split', default='val')
    parser.add_argument('--start', type=int, default=0)
    parser.add_argument('--size', default='384x512', help='HxW')
    parser.add_argument('--out', default='out/preview_world.png')
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split('x'))
    cols = [tile(args.split, args.start + i, h, w) for i in range(args.n)]
    grid = np.hstack([np.pad(c, ((0, 0), (0, 4), (0, 0)), constant_values=255) for c in cols])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f'could not write {args.out}')
    print(args.out)


if __name__ == '__main__':
    main()

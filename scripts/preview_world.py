#!/usr/bin/env python3
"""Write a grid PNG of tabletop scenes: image, mask overlay, and one annotation each.

Usage: python scripts/preview_world.py [--n=6] [--split=val] [--size=384x512] [--out=PATH]
       python scripts/preview_world.py --world varied [--n=8] [--size=240x320] [--out=PATH]

--world varied writes a contact sheet of the varied world instead: the first rows are
train-style scenes, the last rows held-out-style scenes (test split), each image labelled
with its camera, table, shading and kinds.
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
from ros_segcap.world.varied import render_varied, sample_varied_split  # noqa: E402


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


def varied_tile(styles: str, index: int, h: int, w: int) -> np.ndarray:
    """One labelled varied scene: the image with its style line under it."""
    spec = sample_varied_split('test', index, styles, aspect=w / h)
    scene = render_varied(spec, h, w)
    kinds = ', '.join(f'{o.colour} {o.kind}' for o in spec.objects[:4])
    lines = [f'{styles}: {spec.camera_family} camera, {spec.table_material} table, '
             f'{spec.shading}', kinds]
    return np.vstack([scene.image, text_panel(lines, w, 34)])


def contact_sheet(n: int, h: int, w: int, cols: int = 4) -> np.ndarray:
    """n train-style and n held-out-style varied scenes, `cols` per row."""
    tiles = [varied_tile(s, i, h, w) for s in ('train', 'held_out') for i in range(n)]
    pad = [np.pad(t, ((0, 3), (0, 3), (0, 0)), constant_values=255) for t in tiles]
    pad += [np.full_like(pad[0], 255)] * (-len(pad) % cols)
    return np.vstack([np.hstack(pad[r:r + cols]) for r in range(0, len(pad), cols)])


def main() -> None:
    """Parse arguments and write the grid."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=6)
    parser.add_argument('--split', default='val')
    parser.add_argument('--start', type=int, default=0)
    parser.add_argument('--size', default='384x512', help='HxW')
    parser.add_argument('--out', default='out/preview_world.png')
    parser.add_argument('--world', default='default', choices=('default', 'varied'))
    parser.add_argument('--palette', action='store_true',
                        help='write a 256-colour PNG (about 4x smaller; needs Pillow)')
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.lower().split('x'))
    if args.world == 'varied':
        grid = contact_sheet(args.n, h, w)
    else:
        cols = [tile(args.split, args.start + i, h, w) for i in range(args.n)]
        grid = np.hstack([np.pad(c, ((0, 0), (0, 4), (0, 0)), constant_values=255)
                          for c in cols])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.palette:
        from PIL import Image  # only this option needs Pillow
        Image.fromarray(grid).quantize(256, method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE).save(args.out, optimize=True)
    elif not cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f'could not write {args.out}')
    print(args.out)


if __name__ == '__main__':
    main()

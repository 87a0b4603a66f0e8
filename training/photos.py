"""Real photos with hand-drawn masks: "segment the <phrase>" per outlined object, and one
request per photo for something it does not have.

    python -m training.photos --model ros_segcap/weights/segcap-tiny --sheet out/photos.png

The photos are scikit-image's skimage.data images and Debian's opencv-doc examples (apt
install opencv-doc); the outlines are polygons in training/data/photos.json. Photos that are
not installed are skipped and named. Reports referring cIoU and gIoU over the outlined
objects, the share found (IoU >= 0.5), no-target accuracy over the absent requests, and
every answer; --sheet draws each request with its outline (green) and mask (red).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from ros_segcap.core.files import read_json_object
from ros_segcap.runtime import PipelineConfig, open_pipeline
from ros_segcap.world.backdrops import backdrop_photo
from training.eval.metrics import ReferringMeter

PHOTOS = Path(__file__).with_name('data') / 'photos.json'
TEMPLATE = 'Please segment the {} in this image.'


def load_photos(path: str | Path = PHOTOS) -> tuple[list[dict[str, Any]], list[str]]:
    """(photos that are installed, with 'pixels' (H, W, 3) RGB; names of missing photos).

    ValueError in one line for a file that is not a JSON object with a 'photos' list."""
    try:
        entries = read_json_object(path)['photos']
        if not isinstance(entries, list):
            raise ValueError("'photos' must be a list")
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: {exc if not isinstance(exc, KeyError) else 'no photos list'}"
                         ) from None
    found, missing = [], []
    for entry in entries:
        pixels = backdrop_photo(entry['image'])
        if pixels is None:
            missing.append(entry['image'])
        else:
            found.append(dict(entry, pixels=pixels))
    return found, missing


def polygon_mask(polygon: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """A filled polygon (x, y pixel corners) as an (H, W) bool mask."""
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon, np.float64)).astype(np.int32)], 1)
    return mask.astype(bool)


def _panel(image: np.ndarray, truth: Optional[np.ndarray], pred: Optional[np.ndarray],
           title: str, answer: str, height: int = 240) -> np.ndarray:
    out = image.copy()
    if pred is not None:
        out[pred] = (0.45 * out[pred] + 0.55 * np.array([255, 40, 40])).astype(np.uint8)
    if truth is not None:
        contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (40, 255, 40), max(2, image.shape[1] // 200))
    width = round(out.shape[1] * height / out.shape[0])
    out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    bar = np.full((44, width, 3), 255, np.uint8)
    cv2.putText(bar, title[:48], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(bar, answer[:48], (4, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (90, 90, 90), 1)
    return np.vstack([out, bar])


def contact_sheet(panels: Sequence[np.ndarray], columns: int = 4) -> np.ndarray:
    """Panels of one height in rows of `columns`, padded white."""
    rows, width = [], max(p.shape[1] for p in panels) * columns
    for i in range(0, len(panels), columns):
        row = np.hstack(panels[i:i + columns])
        rows.append(np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)),
                           constant_values=255))
    return np.vstack(rows)


def photo_report(model: str, photos: Sequence[dict[str, Any]], refine_edges: bool = True
                 ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Scores over the photos and one picture panel per request."""
    pipe = open_pipeline(PipelineConfig(model=model, refine_edges=refine_edges))
    meter, rows, panels = ReferringMeter(), [], []
    for k, photo in enumerate(photos):
        image = photo['pixels']
        h, w = image.shape[:2]
        requests = [(o['phrase'], polygon_mask(o['polygon'], h, w)) for o in photo['objects']]
        requests += [(phrase, None) for phrase in photo.get('absent', [])]
        for phrase, truth in requests:
            result = pipe.run(image, TEMPLATE.format(phrase), frame_key=k)
            pred = np.logical_or.reduce(result.masks) if result.masks else None
            iou = meter.update(result.masks or None, [truth] if truth is not None else None)
            rows.append({'image': photo['image'], 'request': phrase,
                         'present': truth is not None, 'iou': round(float(iou), 3),
                         'answer': result.answer})
            score = f'IoU {iou:.2f}' if truth is not None else 'absent'
            panels.append(_panel(image, truth, pred, f'{photo["image"]}: {phrase} ({score})',
                                 result.answer))
    ref = meter.compute()
    present = [r for r in rows if r['present']]
    scores = {'referring_ciou': ref.ciou, 'referring_giou': ref.giou,
              'found': sum(r['iou'] >= 0.5 for r in present) / max(1, len(present)),
              'no_target_acc': ref.no_target_acc, 'n_objects': len(present),
              'n_absent': len(rows) - len(present), 'rows': rows}
    return scores, panels


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line of `photo_report`; prints the scores as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='segcap-tiny', help='model directory or name')
    ap.add_argument('--photos', default=str(PHOTOS), help='JSON file of photos and outlines')
    ap.add_argument('--sheet', default='', help='write a contact sheet PNG here')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--no-refine-edges', dest='refine_edges', action='store_false')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        photos, missing = load_photos(args.photos)
    except ValueError as exc:
        ap.exit(2, f'{ap.prog}: error: {exc}\n')
    for name in missing:
        print(f'photos: {name} is not installed; skipped (opencv: apt install opencv-doc)',
              file=sys.stderr)
    if not photos:
        ap.exit(2, f'{ap.prog}: error: none of the photos of {args.photos} is installed\n')
    scores, panels = photo_report(args.model, photos, args.refine_edges)
    scores.update(model=args.model, missing=missing)
    print(json.dumps(scores, indent=2))
    if args.sheet:
        Path(args.sheet).parent.mkdir(parents=True, exist_ok=True)
        sheet = contact_sheet(panels)
        cv2.imwrite(args.sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


if __name__ == '__main__':
    main()

"""COCO panoptic loader for stage 0 (panoptic_{split}2017.json + its PNG folder).

The json has `images` (id, file_name, height, width), `annotations` (image_id, file_name of
the PNG, segments_info [{id, category_id, iscrowd, ...}]) and `categories` (id, name,
isthing). In a PNG, the segment id of a pixel is R + 256 * G + 256^2 * B; 0 is void.

Each Sample has task 'panoptic', empty question/answer, panoptic_masks (N, H, W) bool and
panoptic_classes (N,) int64: the COCO category ids mapped to 0..K-1 in the order of
`categories` sorted by id. The mapping and the thing/stuff flags are on the returned
dataset (`coco_ids`, `class_names`, `isthing`). Crowd segments are left out by default (as
Mask2Former does); a listed segment with no pixel in the PNG is dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from training.data.common import DataFormatError, LazySamples, load_json, read_image_rgb, require
from training.data.sample import Sample


@dataclass(frozen=True)
class PanopticRecord:
    """One image of the panoptic json, without pixels."""

    image_path: str
    png_path: str
    height: int
    width: int
    segment_ids: tuple[int, ...]
    classes: tuple[int, ...]  # contiguous class index per segment
    source: str


class PanopticSamples(LazySamples[PanopticRecord]):
    """LazySamples plus the class table: index k <-> coco_ids[k], class_names[k], isthing[k]."""

    coco_ids: np.ndarray  # (K,) int64 COCO category id per contiguous class
    class_names: list[str]
    isthing: np.ndarray  # (K,) bool


def rgb_to_id(png_rgb: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) int64 from a panoptic PNG as (H, W, 3) RGB: R + 256 G + 256^2 B."""
    c = png_rgb.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def read_segment_ids(path: str, height: int, width: int) -> np.ndarray:
    """Read a panoptic PNG into an (H, W) int64 segment id map; check its size."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise FileNotFoundError(f'{path}: cannot read the panoptic PNG (missing or not a PNG); '
                                f'check the PNG folder')
    if bgr.shape[:2] != (height, width):
        raise ValueError(f'{path}: PNG is {bgr.shape[1]}x{bgr.shape[0]} but the json says '
                         f'{width}x{height}')
    return rgb_to_id(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def build_panoptic_sample(rec: PanopticRecord) -> Sample:
    """Read the image and the PNG of one PanopticRecord into a checked Sample."""
    image = read_image_rgb(rec.image_path, (rec.height, rec.width))
    ids = read_segment_ids(rec.png_path, rec.height, rec.width)
    masks = np.stack([ids == s for s in rec.segment_ids]) if rec.segment_ids else \
        np.zeros((0, rec.height, rec.width), dtype=bool)
    keep = masks.reshape(len(masks), -1).any(axis=1)
    classes = np.asarray(rec.classes, dtype=np.int64)
    return Sample(image=image, question='', answer='', task='panoptic', source=rec.source,
                  panoptic_masks=masks[keep], panoptic_classes=classes[keep])


def _class_table(data: dict, path: str) -> tuple[dict[int, int], list[dict]]:
    cats = data['categories']
    for i, cat in enumerate(cats):
        require(cat, ('id', 'name'), path, f'categories[{i}]')
    cats = sorted(cats, key=lambda c: c['id'])
    return {c['id']: k for k, c in enumerate(cats)}, cats


def _segments(infos: list, to_contig: dict[int, int], include_crowd: bool, path: str,
              where: str) -> tuple[list[int], list[int]]:
    seg_ids, classes = [], []
    for j, seg in enumerate(infos):
        require(seg, ('id', 'category_id'), path, f'{where} segment #{j}')
        if seg['category_id'] not in to_contig:
            raise DataFormatError(path, f'{where} segment {seg["id"]} has unknown category '
                                        f'{seg["category_id"]}')
        if seg.get('iscrowd', 0) and not include_crowd:
            continue
        seg_ids.append(int(seg['id']))
        classes.append(to_contig[seg['category_id']])
    return seg_ids, classes


def load_coco_panoptic(json_path: str, png_root: str, image_root: str, *,
                       include_crowd: bool = False,
                       name: Optional[str] = None) -> PanopticSamples:
    """Load COCO panoptic annotations as lazy Samples with task 'panoptic'.

    json_path: panoptic_{split}2017.json; png_root: its PNG folder (panoptic_{split}2017/);
    image_root: the RGB images ({split}2017/). include_crowd keeps iscrowd segments.
    """
    data = load_json(json_path)
    require(data, ('images', 'annotations', 'categories'), json_path, 'the top level')
    to_contig, cats = _class_table(data, json_path)
    images = {}
    for i, img in enumerate(data['images']):
        require(img, ('id', 'file_name', 'height', 'width'), json_path, f'images[{i}]')
        images[img['id']] = img
    name = name or os.path.splitext(os.path.basename(json_path))[0]
    records = []
    for i, ann in enumerate(data['annotations']):
        require(ann, ('image_id', 'file_name', 'segments_info'), json_path, f'annotations[{i}]')
        img = images.get(ann['image_id'])
        if img is None:
            raise DataFormatError(json_path, f'annotations[{i}] is for image {ann["image_id"]}, '
                                             f'which "images" lacks')
        seg_ids, classes = _segments(ann['segments_info'], to_contig, include_crowd,
                                     json_path, f'annotations[{i}]')
        records.append(PanopticRecord(
            os.path.join(image_root, img['file_name']), os.path.join(png_root, ann['file_name']),
            int(img['height']), int(img['width']), tuple(seg_ids), tuple(classes),
            f'{name}:img{ann["image_id"]}'))
    out = PanopticSamples(records, build_panoptic_sample, name)
    out.coco_ids = np.array([c['id'] for c in cats], dtype=np.int64)
    out.class_names = [str(c['name']) for c in cats]
    out.isthing = np.array([bool(c.get('isthing', 0)) for c in cats], dtype=bool)
    return out

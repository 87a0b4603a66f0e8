"""Shared pieces of the real-dataset loaders: lazy sample sequences, image and mask decoding.

Every loader reads its annotation file eagerly (so format errors show up at load time, with
the file name) and keeps one small record per sample; images are read and masks decoded only
when a sample is indexed, through `LazySamples`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar, Union, overload

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from training.data.sample import Sample

SEGMENT_QUESTION = 'Please segment {expr} in this image.'
GCG_QUESTION = ('Could you please give me a detailed description of the image? Please respond '
                'with interleaved segmentation masks for the corresponding parts of the answer.')
ABSENT_ANSWER = 'There is no {expr} in this image.'

R = TypeVar('R')


class DataFormatError(ValueError):
    """A dataset file does not have the expected structure. The message names the file."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f'{path}: {what}')
        self.path = path


def referring_answer(phrase: str) -> str:
    """Return the unified-format answer for one referred object: '<p> phrase </p> [SEG].'."""
    return f'<p> {phrase} </p> [SEG].'


def load_json(path: str) -> Any:
    """Read a JSON file; a missing file or a syntax error raises one line naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    try:
        with open(path, 'r', encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f'not valid JSON ({err.msg} at line {err.lineno}, '
                                    f'column {err.colno})') from None
    except UnicodeDecodeError:
        raise DataFormatError(path, 'not a UTF-8 text file (is it a pickle or a binary '
                                    'file?)') from None


def require(item: Any, keys: Sequence[str], path: str, where: str) -> None:
    """Raise DataFormatError if `item` is not a dict holding every key of `keys`."""
    if not isinstance(item, dict):
        raise DataFormatError(path, f'{where} should be an object, got {type(item).__name__}')
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataFormatError(path, f'{where} has no {", ".join(map(repr, missing))} '
                                    f'(it has {", ".join(map(repr, sorted(item)))})')


def read_image_rgb(path: str, expect_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, in stored pixel order (EXIF ignored).

    COCO-style annotations refer to the pixels as stored, so the EXIF orientation is not
    applied. If `expect_hw` is given, a different size raises a ValueError naming both.
    """
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise FileNotFoundError(f'{path}: cannot read the image (missing, or not an image '
                                f'file); check the image root')
    if expect_hw is not None and image.shape[:2] != tuple(expect_hw):
        raise ValueError(f'{path}: image is {image.shape[1]}x{image.shape[0]} but the '
                         f'annotation says {expect_hw[1]}x{expect_hw[0]}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_segmentation(seg: Any, height: int, width: int, where: str) -> np.ndarray:
    """Decode a COCO segmentation (polygon list, compressed or uncompressed RLE) to a mask.

    Returns an (height, width) bool array. Polygons with fewer than 3 points are skipped
    (pycocotools would read a 4-number list as a box). `where` prefixes error messages.
    """
    if isinstance(seg, list):
        if any(not isinstance(p, (list, tuple)) for p in seg):
            raise ValueError(f'{where}: a polygon segmentation must be a list of '
                             f'[x1, y1, x2, y2, ...] lists')
        polys = [[float(v) for v in p] for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and 'counts' in seg and 'size' in seg:
        size = [int(v) for v in seg['size']]
        if size != [height, width]:
            raise ValueError(f'{where}: RLE size {size[1]}x{size[0]} (w x h) differs from the '
                             f'image size {width}x{height}')
        counts = seg['counts']
        if isinstance(counts, list):
            rle = mask_utils.frPyObjects(dict(seg), height, width)
        elif isinstance(counts, (str, bytes)):
            rle = {'size': size, 'counts': counts.encode() if isinstance(counts, str) else counts}
        else:
            raise ValueError(f'{where}: RLE counts must be a string or a list of ints')
    else:
        raise ValueError(f'{where}: segmentation must be a polygon list or an RLE dict '
                         f'with "size" and "counts", got {type(seg).__name__}')
    return mask_utils.decode(rle).astype(bool)


def decode_union(segs: Sequence[Any], height: int, width: int, where: str) -> np.ndarray:
    """Decode several segmentations of one object and return their union (H, W) bool."""
    out = np.zeros((height, width), dtype=bool)
    for seg in segs:
        out |= decode_segmentation(seg, height, width, where)
    return out


class LazySamples(Sequence[Sample], Generic[R]):
    """A read-only sequence of Samples built on access from small per-sample records.

    `records[i]` is what the loader parsed for sample i (no pixels); `build(record)` reads
    the image, decodes the masks and returns a checked Sample. Slicing gives another
    LazySamples over the same records.
    """

    def __init__(self, records: Sequence[R], build: Callable[[R], Sample], name: str) -> None:
        self.records = list(records)
        self._build = build
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> 'LazySamples[R]': ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Sample, 'LazySamples[R]']:
        if isinstance(index, slice):
            return LazySamples(self.records[index], self._build, self.name)
        sample = self._build(self.records[index])
        sample.check()
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f'LazySamples({self.name!r}, {len(self)} samples)'

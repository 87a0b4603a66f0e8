"""GranD-f / GCG (grounded caption) loaders in the unified answer format (GLaMM's json files).

Supported layouts, detected from the file's structure (or forced with `variant=`):
- 'grandf': `GranDf_HA_GCG_train.json` and `OpenPsgGCG_{train,val}.json`: a list of
  {'file_name', 'caption', 'groundings': {phrase: {'token_positives': [start, end],
  'rle_masks': [RLE, ...]}}}. The masks of one phrase are merged.
- 'refcocog': `RefCOCOg_GCG_{train,val}.json`: a list of one-key dicts
  {key: {'img_file_name', 'caption', 'refs': [{'sentence', 'segmentation'}]}} (a bare
  inner dict is accepted too). Each ref sentence is looked up in the caption, ignoring case,
  at its first place not already taken; a sentence not found in the caption is dropped.
- 'flickr': `flickr_mergedGT_GCG_{train,val}.json`: COCO style, `images` with 'caption'
  and `annotations` with 'tokens_positive' ([[start, end], ...], the first span is used),
  'sam_mask' (RLE) and optional 'ignore'. Annotations sharing a span are merged into one
  mask, so each phrase gets one [SEG].
Not supported: the evaluation files `*_gcg_coco_{mask,caption}_gt.json` (COCO results
format, for the metrics) and the GranD pretraining shards.

Answer: the caption with each grounded span replaced by '<p> span </p> [SEG]', spans in
caption order; a span overlapping an earlier one is dropped with its mask. Question: the
fixed GCG question. Images without any grounding are skipped.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Optional

from training.data.common import (DataFormatError, GCG_QUESTION, LazySamples, decode_union,
                                  load_json, read_image_rgb, require)
from training.data.sample import Sample

VARIANTS = ('grandf', 'refcocog', 'flickr')


@dataclass(frozen=True)
class GcgRecord:
    """One grounded caption without pixels: spans (start, end) index `caption`."""

    image_path: str
    caption: str
    spans: tuple[tuple[int, int], ...]
    segmentations: tuple[tuple[Any, ...], ...]  # per span, the segmentations to merge
    source: str


def tag_caption(caption: str, spans: list[tuple[int, int]]) -> str:
    """Insert '<p> ... </p> [SEG]' around each (start, end) span (sorted, non-overlapping)."""
    out, last = [], 0
    for start, end in spans:
        out.append(caption[last:start])
        out.append(f'<p> {caption[start:end].strip()} </p> [SEG]')
        last = end
    out.append(caption[last:])
    return ''.join(out)


def _clean_spans(caption: str, spans: list[tuple[int, int]], segs: list[tuple], path: str,
                 key: str) -> tuple[list[tuple[int, int]], list[tuple]]:
    """Sort spans by start, drop empty/overlapping ones; check they lie in the caption."""
    for start, end in spans:
        if not (0 <= start <= end <= len(caption)):
            raise DataFormatError(path, f'entry {key}: span [{start}, {end}] is outside the '
                                        f'caption ({len(caption)} characters)')
    kept_spans, kept_segs, last_end = [], [], -1
    for i in sorted(range(len(spans)), key=lambda k: spans[k]):
        start, end = spans[i]
        if start >= last_end and caption[start:end].strip() and segs[i]:
            kept_spans.append((start, end))
            kept_segs.append(segs[i])
            last_end = end
    return kept_spans, kept_segs


def _span(value: Any, path: str, where: str) -> tuple[int, int]:
    """Read [start, end] or [[start, end], ...] (first span) as a tuple of ints."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        value = value[0]
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) for v in value)):
        raise DataFormatError(path, f'{where}: a token span must be [start, end], got {value!r}')
    return int(value[0]), int(value[1])


def _same_text(a: str, b: str) -> bool:
    return ' '.join(a.lower().split()) == ' '.join(b.lower().split())


def _resolve_span(caption: str, phrase: str, span: tuple[int, int]) -> tuple[int, int]:
    """Return where `phrase` is in `caption`, checking the span given in the file.

    Tried in order: the span as given, the span shifted past leading quotes/spaces (GLaMM
    strips them before indexing), a search for the phrase, else the span as given.
    """
    shift = len(caption) - len(caption.lstrip('" '))
    for start, end in (span, (span[0] + shift, span[1] + shift)):
        if _same_text(caption[start:end], phrase):
            return start, end
    found = _find_free(caption, phrase.strip(), [])
    return span if found is None else found  # not found: trust the file (checked later)


def _grandf_items(data: Any, path: str) -> list[tuple[str, str, list, list, str]]:
    items = []
    for i, entry in enumerate(data):
        require(entry, ('file_name', 'caption', 'groundings'), path, f'entry #{i}')
        if not isinstance(entry['groundings'], dict) or not isinstance(entry['caption'], str):
            raise DataFormatError(path, f'entry #{i}: needs a "caption" string and "groundings" '
                                        f'mapping phrase -> {{token_positives, rle_masks}}')
        spans, segs = [], []
        for phrase, g in entry['groundings'].items():
            require(g, ('token_positives', 'rle_masks'), path, f'entry #{i} grounding {phrase!r}')
            span = _span(g['token_positives'], path, f'entry #{i} {phrase!r}')
            spans.append(_resolve_span(entry['caption'], phrase, span))
            segs.append(tuple(g['rle_masks']))
        items.append((entry['file_name'], entry['caption'], spans, segs, f'#{i}'))
    return items


def _find_free(caption: str, phrase: str, taken: list[tuple[int, int]]) -> Optional[tuple]:
    """Find `phrase` in `caption` (ignoring case) at its first place not overlapping `taken`."""
    if not phrase:
        return None
    for m in re.finditer(re.escape(phrase), caption, flags=re.IGNORECASE):
        if all(m.end() <= s or m.start() >= e for s, e in taken):
            return m.start(), m.end()
    return None


def _refcocog_items(data: Any, path: str) -> list[tuple[str, str, list, list, str]]:
    items = []
    for i, entry in enumerate(data):
        key = f'#{i}'
        if isinstance(entry, dict) and len(entry) == 1 and 'refs' not in entry:
            key, entry = next(iter(entry.items()))
        require(entry, ('img_file_name', 'caption', 'refs'), path, f'entry {key}')
        caption = entry['caption']
        if not isinstance(caption, str):
            raise DataFormatError(path, f'entry {key}: "caption" should be a string')
        spans, segs = [], []
        for j, ref in enumerate(entry['refs']):
            require(ref, ('sentence', 'segmentation'), path, f'entry {key} ref #{j}')
            found = _find_free(caption, ref['sentence'].strip(), spans)
            if found is not None:
                spans.append(found)
                segs.append((ref['segmentation'],))
        items.append((entry['img_file_name'], caption, spans, segs, str(key)))
    return items


def _flickr_items(data: Any, path: str) -> list[tuple[str, str, list, list, str]]:
    by_image: dict[Any, dict[tuple[int, int], list]] = {}
    for i, ann in enumerate(data['annotations']):
        require(ann, ('image_id', 'tokens_positive', 'sam_mask'), path, f'annotations[{i}]')
        if ann.get('ignore', False):
            continue
        span = _span(ann['tokens_positive'], path, f'annotations[{i}]')
        by_image.setdefault(ann['image_id'], {}).setdefault(span, []).append(ann['sam_mask'])
    items = []
    for i, img in enumerate(data['images']):
        require(img, ('id', 'file_name', 'caption'), path, f'images[{i}]')
        groups = by_image.get(img['id'], {})
        items.append((img['file_name'], img['caption'], list(groups),
                      [tuple(v) for v in groups.values()], f'img{img["id"]}'))
    return items


def detect_variant(data: Any, path: str) -> str:
    """Tell which GCG layout a parsed json holds ('grandf', 'refcocog' or 'flickr')."""
    if isinstance(data, dict) and 'images' in data and 'annotations' in data:
        return 'flickr'
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first = data[0]
        if 'groundings' in first:
            return 'grandf'
        inner = next(iter(first.values())) if len(first) == 1 else first
        if isinstance(inner, dict) and 'refs' in inner:
            return 'refcocog'
    raise DataFormatError(path, 'not a known GCG layout: expected a list of {file_name, caption, '
                                'groundings} (GranD-f/OpenPSG), a list of {id: {img_file_name, '
                                'caption, refs}} (RefCOCOg) or COCO-style images+annotations '
                                '(Flickr30k)')


def build_gcg_sample(rec: GcgRecord) -> Sample:
    """Read the image and decode the phrase masks of one GcgRecord into a checked Sample."""
    image = read_image_rgb(rec.image_path)
    h, w = image.shape[:2]
    masks = [decode_union(segs, h, w, f'{rec.source} phrase {i}')
             for i, segs in enumerate(rec.segmentations)]
    return Sample(image=image, question=GCG_QUESTION, task='gcg', masks=masks,
                  answer=tag_caption(rec.caption, list(rec.spans)).strip('" '),
                  source=rec.source)


def load_gcg(path: str, image_root: str, *, variant: str = 'auto',
             name: Optional[str] = None) -> LazySamples[GcgRecord]:
    """Load a GLaMM GCG json as lazy Samples (task 'gcg'), one per image with groundings.

    path: the annotation json; image_root: the folder the file names are relative to.
    variant: 'auto' (detected from the structure) or one of 'grandf', 'refcocog', 'flickr'.
    """
    data = load_json(path)
    if variant == 'auto':
        variant = detect_variant(data, path)
    if variant not in VARIANTS:
        raise ValueError(f'GCG variant must be auto or one of {VARIANTS}, got {variant!r}')
    if variant == 'flickr':
        require(data, ('images', 'annotations'), path, 'the top level')
    elif not isinstance(data, list):
        raise DataFormatError(path, f'the {variant} GCG layout is a list, got '
                                    f'{type(data).__name__}')
    parse = {'grandf': _grandf_items, 'refcocog': _refcocog_items, 'flickr': _flickr_items}
    name = name or os.path.splitext(os.path.basename(path))[0]
    records = []
    for file_name, caption, spans, segs, key in parse[variant](data, path):
        if not isinstance(caption, str):
            raise DataFormatError(path, f'entry {key}: caption should be a string')
        spans, segs = _clean_spans(caption, spans, segs, path, key)
        if spans:
            records.append(GcgRecord(os.path.join(image_root, file_name), caption,
                                     tuple(spans), tuple(segs), f'{name}:{key}'))
    return LazySamples(records, build_gcg_sample, name)

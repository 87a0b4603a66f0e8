"""RefCOCO / RefCOCO+ / RefCOCOg (and gRefCOCO) loaders in the unified answer format.

Files, as distributed by the `refer` API (lichengunc/refer):
- `refs(unc).p`, `refs(umd).p`, `refs(google).p`: a pickled list of refs, each a dict with
  `ref_id`, `ann_id`, `image_id`, `split`, `sentences` ([{'sent': ..., 'sent_id': ...}]).
  A pickle can run code when loaded, so it is read only with `allow_pickle=True`
  (CLI: --allow-pickle). A JSON file with the same list (or {'refs': [...]}) needs no flag.
- `instances.json`: COCO annotations (`images` with file_name/height/width, `annotations`
  with id/image_id/segmentation as polygons or RLE).
gRefCOCO's `grefs(unc).json` also works: `ann_id` is a list (masks are merged) and a ref
with `no_target` true (or ann_id [-1]) gives an 'absent' sample with a plain-text answer.

One Sample per sentence: question 'Please segment {sent} in this image.', answer
'<p> {sent} </p> [SEG].' with the ref's mask. Images are read from `image_root` on access.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

from training.data.common import (ABSENT_ANSWER, DataFormatError, LazySamples, SEGMENT_QUESTION,
                                  decode_union, load_json, read_image_rgb, referring_answer,
                                  require)
from training.data.sample import Sample

REF_KEYS = ('ann_id', 'image_id', 'split', 'sentences')


@dataclass(frozen=True)
class RefRecord:
    """One sentence of one ref, without pixels (what `LazySamples.records` holds)."""

    image_path: str
    height: int
    width: int
    sentence: str
    segmentations: tuple  # COCO segmentations of the target annotation(s); () if absent
    split: str
    source: str


def load_refs(path: str, *, allow_pickle: bool = False) -> list[dict]:
    """Read a refs file: a pickle (`.p`/`.pkl`, only with allow_pickle) or a JSON export."""
    if path.endswith('.json'):
        data = load_json(path)
        refs = data.get('refs') if isinstance(data, dict) else data
    else:
        if not allow_pickle:
            raise ValueError(f'{path}: the refs file is a Python pickle, which can run code when '
                             f'loaded; pass --allow-pickle (allow_pickle=True) if you trust it, '
                             f'or give a JSON export of the refs')
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path}: no such file')
        refs = _unpickle(path)
    if not isinstance(refs, list):
        raise DataFormatError(path, f'expected a list of refs, got {type(refs).__name__}')
    for i, ref in enumerate(refs):
        require(ref, REF_KEYS, path, f'ref #{i}')
    return refs


def _unpickle(path: str) -> Any:
    # The original files were written by Python 2; its byte strings need an encoding.
    for encoding in ('ASCII', 'latin1'):
        try:
            with open(path, 'rb') as f:
                return pickle.load(f, encoding=encoding)
        except UnicodeDecodeError:
            continue
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
            raise DataFormatError(path, f'not a readable pickle ({err})') from None
    raise DataFormatError(path, 'cannot decode the strings in the pickle')


def _index_instances(path: str) -> tuple[dict, dict]:
    data = load_json(path)
    require(data, ('images', 'annotations'), path, 'the top level')
    images = {}
    for i, img in enumerate(data['images']):
        require(img, ('id', 'file_name', 'height', 'width'), path, f'images[{i}]')
        images[img['id']] = img
    anns = {}
    for i, ann in enumerate(data['annotations']):
        require(ann, ('id', 'image_id', 'segmentation'), path, f'annotations[{i}]')
        anns[ann['id']] = ann
    return images, anns


def _target_ann_ids(ref: dict) -> list:
    ann_ids = ref['ann_id'] if isinstance(ref['ann_id'], list) else [ref['ann_id']]
    if ref.get('no_target', False):
        return []
    return [a for a in ann_ids if a != -1]


def _normalise_splits(splits: Union[str, Iterable[str], None]) -> Optional[set[str]]:
    if splits is None:
        return None
    return {splits} if isinstance(splits, str) else set(splits)


def _records_of_ref(ref: dict, images: dict, anns: dict, files: tuple[str, str],
                    image_root: str, name: str) -> list[RefRecord]:
    refs_path, instances_path = files
    ref_id = ref.get('ref_id', '?')
    if ref['image_id'] not in images:
        raise DataFormatError(refs_path, f'ref {ref_id} points to image {ref["image_id"]}, '
                                         f'which {os.path.basename(instances_path)} lacks')
    img = images[ref['image_id']]
    segs = []
    for ann_id in _target_ann_ids(ref):
        if ann_id not in anns:
            raise DataFormatError(refs_path, f'ref {ref_id} points to annotation {ann_id}, '
                                             f'which {os.path.basename(instances_path)} lacks')
        segs.append(anns[ann_id]['segmentation'])
    if not isinstance(ref['sentences'], list):
        raise DataFormatError(refs_path, f'ref {ref_id}: "sentences" should be a list')
    out = []
    for j, sent in enumerate(ref['sentences']):
        text = (sent.get('sent') if isinstance(sent, dict) else sent)
        if not isinstance(text, str):
            raise DataFormatError(refs_path, f'ref {ref_id}: sentence #{j} has no "sent" text')
        text = ' '.join(text.split())
        if not text:
            continue
        sent_id = sent.get('sent_id', j) if isinstance(sent, dict) else j
        out.append(RefRecord(image_path=os.path.join(image_root, img['file_name']),
                             height=int(img['height']), width=int(img['width']), sentence=text,
                             segmentations=tuple(segs), split=str(ref['split']),
                             source=f'{name}:{ref["split"]}:ref{ref_id}:sent{sent_id}'))
    return out


def build_ref_sample(rec: RefRecord) -> Sample:
    """Read the image and decode the mask of one RefRecord into a checked Sample."""
    image = read_image_rgb(rec.image_path, (rec.height, rec.width))
    question = SEGMENT_QUESTION.format(expr=rec.sentence)
    if not rec.segmentations:
        return Sample(image=image, question=question, task='absent', source=rec.source,
                      answer=ABSENT_ANSWER.format(expr=rec.sentence))
    mask = decode_union(rec.segmentations, rec.height, rec.width, rec.source)
    return Sample(image=image, question=question, answer=referring_answer(rec.sentence),
                  task='referring', masks=[mask], source=rec.source)


def load_refcoco(refs_path: str, instances_path: str, image_root: str, *,
                 splits: Union[str, Iterable[str], None] = None, allow_pickle: bool = False,
                 name: Optional[str] = None) -> LazySamples[RefRecord]:
    """Load RefCOCO / RefCOCO+ / RefCOCOg / gRefCOCO as one lazy Sample per sentence.

    refs_path: `refs(unc).p` etc. (pickle, needs allow_pickle=True) or a JSON export.
    instances_path: the COCO `instances.json` of the same dataset.
    image_root: folder holding the COCO images named by `file_name` (e.g. train2014/).
    splits: keep refs whose `split` is in it ('train', 'val', 'testA', ...); None keeps all.
    A requested split that the file lacks raises a ValueError listing the splits it has.
    """
    refs = load_refs(refs_path, allow_pickle=allow_pickle)
    images, anns = _index_instances(instances_path)
    name = name or os.path.basename(os.path.dirname(os.path.abspath(refs_path))) or 'refcoco'
    wanted = _normalise_splits(splits)
    present = sorted({str(r['split']) for r in refs})
    if wanted is not None and not wanted <= set(present):
        raise ValueError(f'{refs_path}: no refs in split(s) {sorted(wanted - set(present))} '
                         f'(splits in the file: {", ".join(present)})')
    records: list[RefRecord] = []
    for ref in refs:
        if wanted is None or str(ref['split']) in wanted:
            records += _records_of_ref(ref, images, anns, (refs_path, instances_path),
                                       image_root, name)
    return LazySamples(records, build_ref_sample, name)

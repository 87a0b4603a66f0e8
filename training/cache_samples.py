"""Feature cache from real datasets: RefCOCO/+/g, GranD-f/GCG, LLaVA, COCO panoptic.

The same cache as `training.cache` builds for tabletop scenes, but from any stream of
`training.data.sample.Sample`: consecutive samples on the same image share one cached scene
(one backbone pass), their masks and visual prompts are mapped to the model's mask grid,
and a sample's panoptic segments (COCO panoptic) become the stage-0 targets with one
box/mask prompt each. Build, then train any stage with `--cache=DIR`:

    python -m training.cache_samples --format refcoco --ann refcoco/refs(unc).p \
        --instances refcoco/instances.json --images coco/train2014 --split train \
        --allow-pickle --out runs/cache/refcoco
    python -m training.cache_samples --format gcg --ann GranDf_HA_GCG_train.json \
        --images grandf/images --out runs/cache/gcg

Shards are written one at a time (temp file, rename), so a stopped build resumes where it
stopped. Stage 0 needs panoptic samples (--format coco-panoptic); stages 1 and 2 use all.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
import sys
import time
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ros_segcap.models.segcap.config import SegCapConfig, get_config
from ros_segcap.models.segcap.encoder import build_backbone, normalize_image
from ros_segcap.core.preprocess import letterbox, prompt_queries
from ros_segcap.core.types import VisualPrompt
from training.cache import _masks_grid, CachedSample, CachedScene, MIN_MASK_CELLS
from training.data.sample import Sample

FORMATS = ('refcoco', 'gcg', 'llava', 'coco-panoptic')


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def group_by_image(samples: Iterable[Sample]) -> Iterator[list[Sample]]:
    """Runs of consecutive samples whose images are identical (same pixels)."""
    group: list[Sample] = []
    key = None
    for s in samples:
        k = _image_key(s.image)
        if group and k != key:
            yield group
            group = []
        group.append(s)
        key = k
    if group:
        yield group


def _segment_prompt(mask: np.ndarray, k: int) -> VisualPrompt:
    """Alternate box and mask prompts over the segments of an image."""
    if k % 2:
        return VisualPrompt('mask', mask=mask)
    ys, xs = np.nonzero(mask)
    return VisualPrompt('box', box=(float(xs.min()), float(ys.min()),
                                    float(xs.max() + 1), float(ys.max() + 1)))


@torch.no_grad()
def cache_group(config: SegCapConfig, backbone: torch.nn.Module, group: Sequence[Sample],
                index: int, local: int = 0) -> CachedScene:
    """One backbone pass over the shared image of `group` -> a CachedScene with its samples."""
    image = group[0].image
    tensor, box = letterbox(image, config.image_size)
    feats = backbone.forward_features(normalize_image(config, tensor))
    hm = config.mask_size
    pan = next((s for s in group if s.panoptic_masks is not None), None)
    if pan is not None and len(pan.panoptic_masks):
        pan_grid = _masks_grid(list(pan.panoptic_masks), box, hm)
        keep = pan_grid.flatten(1).sum(1) >= MIN_MASK_CELLS
        pan_grid = pan_grid[keep]
        pan_classes = torch.as_tensor(np.asarray(pan.panoptic_classes), dtype=torch.long)[keep]
        kept = [m for m, k in zip(pan.panoptic_masks, keep.tolist()) if k]
        q = prompt_queries([_segment_prompt(m, k) for k, m in enumerate(kept)], box, hm)
        targets = torch.arange(len(kept), dtype=torch.long)
    else:
        pan_grid = torch.zeros((0, hm, hm), dtype=torch.bool)
        pan_classes = torch.zeros((0,), dtype=torch.long)
        q = prompt_queries([], box, hm)
        targets = torch.zeros((0,), dtype=torch.long)
    samples = []
    for s in group:
        if s.task == 'panoptic':
            continue  # its segments are the stage-0 targets above
        s.check()
        sq = prompt_queries(s.prompts, box, hm)
        samples.append(CachedSample(local, s.task, s.question, s.answer,
                                    _masks_grid(s.masks, box, hm), sq.kinds, sq.boxes,
                                    sq.restrict))
    return CachedScene(index, {k: feats[k].half() for k in ('s8', 's16', 's32')}, pan_grid,
                       pan_classes, q.kinds, q.boxes, q.restrict, targets, samples, box.extent)


def load_samples(args: argparse.Namespace) -> Sequence[Sample]:
    """The Sample sequence of one dataset, from the command-line options."""
    if args.format == 'refcoco':
        from training.data.refcoco import load_refcoco
        if not args.instances:
            raise ValueError('--format refcoco needs --instances=instances.json')
        return load_refcoco(args.ann, args.instances, args.images, splits=args.split,
                            allow_pickle=args.allow_pickle)
    if args.format == 'gcg':
        from training.data.grandf import load_gcg
        return load_gcg(args.ann, args.images)
    if args.format == 'llava':
        from training.data.llava import load_llava
        return load_llava(args.ann, args.images)
    from training.data.coco_panoptic import load_coco_panoptic
    if not args.png_root:
        raise ValueError('--format coco-panoptic needs --png-root=DIR of the panoptic PNGs')
    return load_coco_panoptic(args.ann, args.png_root, args.images)


def write_cache(config: SegCapConfig, samples: Iterable[Sample], out: Path,
                shard_size: int = 50, limit: Optional[int] = None) -> int:
    """Cache scenes into out/shard-*.pt; existing shards are skipped. Returns scene count."""
    out.mkdir(parents=True, exist_ok=True)
    backbone = build_backbone(config).eval()
    shard: list[CachedScene] = []
    n = 0
    for group in tqdm(group_by_image(samples), desc='caching images', unit='img'):
        if limit is not None and n >= limit:
            break
        start = n - len(shard)
        target = out / f'shard-{start:07d}.pt'
        if target.exists():  # resume: skip the work of a finished shard
            shard.append(None)  # type: ignore[arg-type]
        else:
            shard.append(cache_group(config, backbone, group, n, len(shard)))
        n += 1
        if len(shard) == shard_size:
            _save(shard, target)
            shard = []
    if shard:
        _save(shard, out / f'shard-{n - len(shard):07d}.pt')
    return n


def _save(shard: list, target: Path) -> None:
    if target.exists():
        return
    tmp = target.with_suffix('.tmp')
    torch.save(shard, tmp)
    tmp.replace(target)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: build a feature cache from one dataset."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--format', required=True, choices=FORMATS)
    ap.add_argument('--ann', required=True, help='annotation file (refs*.p / *.json)')
    ap.add_argument('--images', required=True, help='folder the image file names are in')
    ap.add_argument('--instances', help='refcoco: instances.json of the same images')
    ap.add_argument('--png-root', help='coco-panoptic: folder of the panoptic PNGs')
    ap.add_argument('--split', help='refcoco: split(s), e.g. train or testA,testB')
    ap.add_argument('--allow-pickle', action='store_true',
                    help='refcoco: read a pickled refs file (only from a source you trust)')
    ap.add_argument('--model', default='segcap-tiny')
    ap.add_argument('--out', required=True)
    ap.add_argument('--shard-size', type=int, default=50)
    ap.add_argument('--limit', type=int, help='cache at most this many images')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.split and ',' in args.split:
        args.split = args.split.split(',')
    t0 = time.time()
    try:
        n = write_cache(get_config(args.model), load_samples(args), Path(args.out),
                        args.shard_size, args.limit)
    except (ValueError, FileNotFoundError) as e:
        print(f'training.cache_samples: {e}', file=sys.stderr)
        return 2
    print(f'{args.out}: {n} images in {time.time() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    from training.cache_samples import main as _main  # pickle classes under training.*
    sys.exit(_main())

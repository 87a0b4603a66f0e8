"""Feature cache: tabletop scenes with frozen-backbone features and letterboxed targets.

The backbone is frozen in every stage, so each training scene is rendered once, letterboxed
to the model input and pushed through the backbone once. A cache shard holds, per scene,
the fp16 backbone features, the panoptic targets at mask resolution, stage-0 prompt queries
and several annotated samples (question, answer, [SEG] masks, visual prompts) whose masks
and prompts are already mapped to the model's mask grid. Build with

    python -m training.cache --model segcap-tiny --scenes 1000 --out runs/cache/train
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
import time
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from ros_segcap.models.segcap.config import SegCapConfig, get_config
from ros_segcap.models.segcap.encoder import build_backbone, normalize_image
from ros_segcap.core.preprocess import Letterbox, letterbox, prompt_queries
from ros_segcap.world import annotate, split_seed
from ros_segcap.world.annotate import make_prompt
from ros_segcap.world.palette import DEFAULT_VOCAB, Vocabulary
from ros_segcap.world.render import FIRST_OBJECT_ID
from training.data.tabletop import WORLDS, to_visual_prompt, world_scene

# (task, how many annotations per scene): the product's main uses first.
DEFAULT_MIX = (('referring', 2), ('absent', 1), ('gcg', 1), ('region', 2), ('caption', 1),
               ('vqa', 1))
SIZES = ((480, 640), (512, 512), (384, 512), (512, 384))  # (H, W) cycled over scenes
MIN_MASK_CELLS = 2  # stage-0 prompt targets smaller than this on the mask grid are skipped


@dataclass
class CachedSample:
    """One annotated question about a cached scene (masks and prompts on the mask grid)."""

    scene: int  # index of the scene in its shard
    task: str
    question: str
    answer: str
    masks: torch.Tensor  # (n_seg, Hm, Wm) bool, one per [SEG]
    kinds: torch.Tensor  # (1, n_prompt) int64
    boxes: torch.Tensor  # (1, n_prompt, 4) cxcywh in 0..1
    restrict: torch.Tensor  # (1, n_prompt, Hm, Wm) bool


@dataclass
class CachedScene:
    """Backbone features and panoptic / prompt targets of one scene."""

    seed: int
    feats: dict[str, torch.Tensor]  # 's8', 's16', 's32': (1, C, h, w) fp16
    pan_masks: torch.Tensor  # (N, Hm, Wm) bool
    pan_classes: torch.Tensor  # (N,) int64
    prompt_kinds: torch.Tensor  # (1, P) int64 stage-0 prompts on segments
    prompt_boxes: torch.Tensor  # (1, P, 4)
    prompt_restrict: torch.Tensor  # (1, P, Hm, Wm) bool
    prompt_targets: torch.Tensor  # (P,) index into pan_masks
    samples: list[CachedSample] = field(default_factory=list)
    # (height, width) of the image in the padded square (Letterbox.extent); None in shards
    # written before it was stored (scene_extent reads it off the panoptic masks then)
    extent: Optional[tuple[float, float]] = None


def letterbox_mask(mask: np.ndarray, box: Letterbox, hm: int) -> np.ndarray:
    """(H, W) bool on the original image -> (hm, hm) bool on the model's padded mask grid."""
    vh = max(1, round(box.height * box.scale / box.size * hm))
    vw = max(1, round(box.width * box.scale / box.size * hm))
    small = cv2.resize(mask.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA)
    grid = np.zeros((hm, hm), bool)
    grid[:vh, :vw] = small >= 0.5
    return grid


def _masks_grid(masks: Sequence[np.ndarray], box: Letterbox, hm: int) -> torch.Tensor:
    if not len(masks):
        return torch.zeros((0, hm, hm), dtype=torch.bool)
    return torch.from_numpy(np.stack([letterbox_mask(m, box, hm) for m in masks]))


def _stage0_prompts(scene, pan_ids: list[int], pan_grid: torch.Tensor, box: Letterbox,
                    hm: int, rng: np.random.Generator):
    """One random-kind prompt (point / box / mask) per object segment visible on the grid."""
    prompts, targets = [], []
    for k, seg in enumerate(pan_ids):
        if seg < FIRST_OBJECT_ID or int(pan_grid[k].sum()) < MIN_MASK_CELLS:
            continue
        kind = ('point', 'box', 'mask')[int(rng.integers(3))]
        prompts.append(to_visual_prompt(make_prompt(scene, seg, kind, rng)))
        targets.append(k)
    q = prompt_queries(prompts, box, hm)
    return q, torch.tensor(targets, dtype=torch.long)


def _annotations(scene, box: Letterbox, hm: int, rng: np.random.Generator,
                 mix: Sequence[tuple[str, int]], index: int) -> list[CachedSample]:
    out = []
    for task, count in mix:
        for _ in range(count):
            ann = annotate(scene, task, rng, fixed=False)
            masks = [scene.panoptic == s for s in ann.seg_ids]
            q = prompt_queries([to_visual_prompt(p) for p in ann.prompts], box, hm)
            out.append(CachedSample(index, ann.task, ann.question, ann.answer,
                                    _masks_grid(masks, box, hm), q.kinds, q.boxes, q.restrict))
    return out


@torch.no_grad()
def cache_scene(config: SegCapConfig, backbone: torch.nn.Module, split: str, index: int,
                mix: Sequence[tuple[str, int]] = DEFAULT_MIX, local: int = 0,
                world: str = 'default') -> CachedScene:
    """Render scene `index` of `split` of a world, run the backbone and build every target."""
    seed = split_seed(split, index)
    h, w = SIZES[index % len(SIZES)]
    scene = world_scene(split, index, h, w, world)  # varied: its train style families
    tensor, box = letterbox(scene.image, config.image_size)
    feats = backbone.forward_features(normalize_image(config, tensor))
    hm = config.mask_size
    pan_masks, pan_classes = scene.panoptic_segments()
    pan_ids = [int(np.bincount(scene.panoptic[m].ravel()).argmax()) for m in pan_masks]
    pan_grid = _masks_grid(list(pan_masks), box, hm)
    keep = pan_grid.flatten(1).any(1)
    rng = np.random.default_rng([seed, 4242])
    q, targets = _stage0_prompts(scene, pan_ids, pan_grid, box, hm, rng)
    # targets index pan_grid before dropping empty segments: remap to the kept ones
    remap = torch.cumsum(keep.long(), 0) - 1
    return CachedScene(
        seed, {k: feats[k].half() for k in ('s8', 's16', 's32')}, pan_grid[keep],
        torch.from_numpy(pan_classes)[keep], q.kinds, q.boxes, q.restrict, remap[targets],
        _annotations(scene, box, hm, rng, mix, local), box.extent)


def build_shard(config: SegCapConfig, split: str, start: int, count: int,
                mix: Sequence[tuple[str, int]] = DEFAULT_MIX,
                backbone: Optional[torch.nn.Module] = None,
                world: str = 'default') -> list[CachedScene]:
    """Scenes start .. start+count-1 of a split."""
    backbone = backbone or build_backbone(config).eval()
    return [cache_scene(config, backbone, split, start + i, mix, i, world)
            for i in range(count)]


def parse_mix(text: str) -> tuple[tuple[str, int], ...]:
    """'referring=3,region=3' -> the annotations per scene (tasks not named keep their
    DEFAULT_MIX count; 0 drops a task). Unknown tasks and bad counts raise ValueError."""
    counts = dict(DEFAULT_MIX)
    for part in (p for p in text.split(',') if p.strip()):
        task, eq, value = part.strip().partition('=')
        if task not in counts or not eq or not value.isdigit():
            raise ValueError(f'--mix takes task=count pairs of {", ".join(counts)}, '
                             f'got {part.strip()!r}')
        counts[task] = int(value)
    if not any(counts.values()):
        raise ValueError('--mix leaves no annotation per scene')
    return tuple((t, n) for t, n in counts.items() if n)


# Shards are read with torch.load(weights_only=True): only tensors, plain containers and the
# two dataclasses below can come back (no arbitrary code). Shards written before the module
# name was fixed name the classes __main__.*; the same classes are allowed under that name.
_SAFE_CLASSES = [CachedScene, CachedSample, (CachedScene, '__main__.CachedScene'),
                 (CachedSample, '__main__.CachedSample')]


SIMPLE_TEMPLATES = ('Please segment the {} in this image.', 'Segment the {}.', 'Show the {}.')


def simple_referring(scene: CachedScene, per_scene: int = 1) -> list[CachedSample]:
    """'Please segment the red cup in this image.' samples for objects present in a scene.

    Built from the scene's grounded caption: phrases that occur once (one such object) and
    are not the table. They balance the absent-target samples, whose expressions always
    have this simple colour + kind form.
    """
    from ros_segcap.core.answer import parse_answer
    out: list[CachedSample] = []
    for a in scene.samples:
        if a.task != 'gcg':
            continue
        phrases = parse_answer(a.answer).phrases
        once = [i for i, p in enumerate(phrases)
                if phrases.count(p) == 1 and 'table' not in p and a.masks[i].any()]
        for k in once[:per_scene]:
            phrase = phrases[k]
            q = SIMPLE_TEMPLATES[(scene.seed + k) % len(SIMPLE_TEMPLATES)].format(phrase)
            out.append(CachedSample(a.scene, 'referring', q, f'<p> the {phrase} </p> [SEG].',
                                    a.masks[k:k + 1], a.kinds, a.boxes, a.restrict))
    return out


def simple_absent(scene: CachedScene, per_scene: int = 1,
                  vocab: Vocabulary = DEFAULT_VOCAB) -> list[CachedSample]:
    """'Please segment the pink ball in this image.' samples for colour + kind pairs that are
    not in the scene: near misses first (its colour or its kind is there).

    The objects present are read off the grounded caption, which names every object. These
    balance simple_referring, so that echoing the expression is never the right answer.
    """
    from ros_segcap.core.answer import parse_answer
    colour_names, kind_names = vocab.colours, vocab.kinds
    gcg = next((a for a in scene.samples if a.task == 'gcg'), None)
    if gcg is None or per_scene <= 0:
        return []
    present = set()
    for phrase in parse_answer(gcg.answer).phrases:
        words = phrase.split()
        if len(words) >= 2 and words[0] in colour_names and words[-1] in kind_names:
            present.add((words[0], words[-1]))
    colours, kinds = {c for c, _ in present}, {k for _, k in present}
    pairs = [(c, k) for c in colour_names for k in kind_names if (c, k) not in present]
    near = [p for p in pairs if p[0] in colours or p[1] in kinds]
    pool = near or pairs
    rng = np.random.default_rng(scene.seed + 7919)
    picks = rng.choice(len(pool), size=min(per_scene, len(pool)), replace=False)
    empty = gcg.masks[:0]
    out = []
    for j, i in enumerate(picks):
        c, k = pool[int(i)]
        q = SIMPLE_TEMPLATES[(scene.seed + j) % len(SIMPLE_TEMPLATES)].format(f'{c} {k}')
        out.append(CachedSample(gcg.scene, 'absent', q, f'There is no {c} {k} in this image.',
                                empty, gcg.kinds[:, :0], gcg.boxes[:, :0], gcg.restrict[:, :0]))
    return out


PLURAL_TEMPLATES = ('Please segment all the {} in this image.', 'Segment all the {}.',
                    'Show all the {}.')


def join_targets(phrases: Sequence[str]) -> str:
    """['red cup', 'blue ball', 'green cone'] -> '<p> the red cup </p> [SEG], <p> the blue
    ball </p> [SEG] and <p> the green cone </p> [SEG].' (the world's list format)."""
    items = [f'<p> the {p} </p> [SEG]' for p in phrases]
    body = items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]
    return body + '.'


def plural_referring(scene: CachedScene, per_scene: int = 1, min_targets: int = 3,
                     vocab: Vocabulary = DEFAULT_VOCAB) -> list[CachedSample]:
    """'Please segment all the objects / cups / red objects in this image.' samples with
    min_targets or more targets, listed left to right.

    The world's own plural expressions mostly have two targets, and a model trained on them
    stops its lists after two. These are built from the scene's grounded caption (every
    object, with its mask): all the objects first, then kinds, then colours with enough
    members.
    """
    from ros_segcap.core.answer import parse_answer
    from ros_segcap.world.refer import noun
    gcg = next((a for a in scene.samples if a.task == 'gcg'), None)
    if gcg is None or per_scene <= 0:
        return []
    phrases = parse_answer(gcg.answer).phrases
    objs = [(p, m) for p, m in zip(phrases, gcg.masks) if 'table' not in p and m.any()]
    cols = torch.arange(gcg.masks.shape[-1], dtype=torch.float32)
    objs.sort(key=lambda o: float((o[1].float().sum(0) * cols).sum() / o[1].sum()))
    groups = [('objects', objs)]
    groups += [(noun(None, k, plural=True), [o for o in objs if o[0].split()[-1] == k])
               for k in vocab.kinds]
    groups += [(noun(c, None, plural=True), [o for o in objs if o[0].split()[0] == c])
               for c in vocab.colours]
    out = []
    for name, members in groups:
        if len(out) >= per_scene:
            break
        if len(members) < min_targets:
            continue
        q = PLURAL_TEMPLATES[(scene.seed + len(out)) % len(PLURAL_TEMPLATES)].format(name)
        out.append(CachedSample(gcg.scene, 'referring', q, join_targets([p for p, _ in members]),
                                torch.stack([m for _, m in members]), gcg.kinds, gcg.boxes,
                                gcg.restrict))
    return out


def load_cache(path: str | Path, limit: Optional[int] = None) -> list[CachedScene]:
    """All scenes of the shards in a cache directory (sorted by name), up to `limit`."""
    path = Path(path)
    files = sorted(path.glob('shard-*.pt'))
    if not files:
        raise FileNotFoundError(f'no cache shards in {path}; build them with '
                                f'python -m training.cache --out {path}')
    scenes: list[CachedScene] = []
    for f in files:
        with torch.serialization.safe_globals(_SAFE_CLASSES):
            scenes.extend(torch.load(f, weights_only=True))
        if limit is not None and len(scenes) >= limit:
            return scenes[:limit]
    return scenes


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build a cache directory shard by shard (existing shards are kept: resumable)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='segcap-tiny')
    ap.add_argument('--split', default='train')
    ap.add_argument('--scenes', type=int, default=1000)
    ap.add_argument('--start', type=int, default=0)
    ap.add_argument('--shard-size', type=int, default=50)
    ap.add_argument('--out', required=True)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--world', default='default', choices=WORLDS,
                    help='varied: the domain-randomised world (its train style families)')
    ap.add_argument('--mix', default='', help='annotations per scene, e.g. referring=3,region=3 '
                    f'(default {",".join(f"{t}={n}" for t, n in DEFAULT_MIX)})')
    args = ap.parse_args(argv)
    try:
        mix = parse_mix(args.mix)
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(args.threads)
    config = get_config(args.model)
    torch.manual_seed(0)
    backbone = build_backbone(config).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for s in range(args.start, args.start + args.scenes, args.shard_size):
        target = out / f'shard-{s:07d}.pt'
        if target.exists():
            continue
        t0 = time.time()
        n = min(args.shard_size, args.start + args.scenes - s)
        shard = build_shard(config, args.split, s, n, mix, backbone=backbone, world=args.world)
        tmp = target.with_suffix('.tmp')
        torch.save(shard, tmp)
        tmp.replace(target)
        print(f'{target}: {n} scenes in {time.time() - t0:.1f} s', flush=True)


if __name__ == '__main__':
    from training.cache import main as _main  # pickle the classes under training.cache
    _main()

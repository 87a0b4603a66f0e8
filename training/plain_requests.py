"""The product's main command, measured alone: "Please segment the <colour> <kind> in this
image." for an object the scene has (once, so the request is unambiguous) and for a near
miss it lacks (the same kind in a colour the scene has none of). With --form kind:
"Please segment the <kind> in this image." for a kind the scene has once and for a kind it
has none of.

    python -m training.plain_requests --model ros_segcap/weights/segcap-tiny --n 40

Per scene one present and one absent request. Reports the share of present requests whose
mask has IoU >= 0.5 with the object, the share answered without a mask ("There is no
..."), their mean IoU, and the share of absent requests that still get a mask. The
referring samples of `training.evaluate` use varied expressions; this is the plain form a
robot operator types, where a model can be biased towards yes or no.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from ros_segcap.runtime import PipelineConfig, open_pipeline
from training.data.tabletop import world_scene
from training.eval.cli import add_presence_argument, model_command
from training.eval.metrics import ReferringMeter
from training.evaluate import IMAGE_SIZE

TEMPLATE = 'Please segment the {} {} in this image.'
KIND_TEMPLATE = 'Please segment the {} in this image.'
FORMS = ('colour_kind', 'kind')


def pick_requests(pairs: Sequence[tuple[str, str]], rng: np.random.Generator,
                  colours: Sequence[str]) -> tuple[Optional[int], Optional[tuple[str, str]]]:
    """(index of an object whose (colour, kind) is unique in the scene, or None;
    an absent (colour, kind) of that object's kind, or None)."""
    unique = [k for k, p in enumerate(pairs) if pairs.count(p) == 1]
    if not unique:
        return None, None
    k = unique[int(rng.integers(len(unique)))]
    kind = pairs[k][1]
    absent = [(c, kind) for c in colours if (c, kind) not in pairs]
    return k, absent[int(rng.integers(len(absent)))] if absent else None


def pick_kind_requests(kinds: Sequence[str], rng: np.random.Generator,
                       vocabulary: Sequence[str]) -> tuple[Optional[int], Optional[str]]:
    """(index of an object whose kind is unique in the scene, or None; a kind of the
    vocabulary the scene has none of, or None)."""
    unique = [k for k, kind in enumerate(kinds) if kinds.count(kind) == 1]
    if not unique:
        return None, None
    k = unique[int(rng.integers(len(unique)))]
    absent = [kind for kind in vocabulary if kind not in kinds]
    return k, absent[int(rng.integers(len(absent)))] if absent else None


def requests(scene, rng: np.random.Generator, form: str
             ) -> tuple[Optional[int], Optional[str], Optional[str]]:
    """(index of the present object or None, its request, the absent request or None)."""
    if form == 'kind':
        kinds = [o.kind for o in scene.objects]
        k, absent = pick_kind_requests(kinds, rng, scene.spec.vocab.kinds)
        if k is None:
            return None, None, None
        return k, KIND_TEMPLATE.format(kinds[k]), absent and KIND_TEMPLATE.format(absent)
    pairs = [(o.colour, o.kind) for o in scene.objects]
    k, absent = pick_requests(pairs, rng, scene.spec.vocab.colours)
    if k is None:
        return None, None, None
    return k, TEMPLATE.format(*pairs[k]), absent and TEMPLATE.format(*absent)


def plain_requests(model: str, n: int = 40, split: str = 'test', seed_offset: int = 0,
                   refine_edges: bool = True, world: str = 'default',
                   styles: str = 'train', check_presence: bool = True,
                   form: str = 'colour_kind') -> dict:
    """Present / absent plain-request scores over n scenes of a split of a world."""
    if form not in FORMS:
        raise ValueError(f'form must be one of {FORMS}, got {form!r}')
    pipe = open_pipeline(PipelineConfig(model=model, refine_edges=refine_edges,
                                        check_presence=check_presence))
    meter, ious, no_mask, false_mask = ReferringMeter(), [], [], []
    for i in tqdm(range(n), desc='scenes'):
        scene = world_scene(split, seed_offset + i, *IMAGE_SIZE, world, styles)
        k, present, absent = requests(scene, np.random.default_rng(seed_offset + i), form)
        if k is None:
            continue
        result = pipe.run(scene.image, present, frame_key=i)
        pred = np.logical_or.reduce(result.masks) if result.masks else None
        ious.append(meter.update(pred, [scene.mask(k)]))
        no_mask.append(pred is None)
        if absent is not None:
            false_mask.append(bool(pipe.run(scene.image, absent, frame_key=i).masks))
    iou = np.array(ious)
    return dict(model=model, world=world, styles=styles, split=split, seed_offset=seed_offset,
                check_presence=check_presence, form=form, scenes=n, present=len(ious),
                present_ciou=meter.compute().ciou if meter.union else None,
                present_iou50=float((iou >= 0.5).mean()) if len(iou) else None,
                present_no_mask=float(np.mean(no_mask)) if no_mask else None,
                present_mean_iou=float(iou.mean()) if len(iou) else None,
                absent=len(false_mask),
                absent_false_mask=float(np.mean(false_mask)) if false_mask else None)


def arguments(ap: argparse.ArgumentParser) -> list[str]:
    """--no-check-presence and --form."""
    add_presence_argument(ap)
    ap.add_argument('--form', default='colour_kind', choices=FORMS,
                    help='kind: "segment the <kind>" requests, without a colour')
    return ['check_presence', 'form']


def main(argv: Optional[Sequence[str]] = None) -> None:
    model_command(__doc__, plain_requests, 40, 'scenes', argv, extra=arguments)


if __name__ == '__main__':
    main()

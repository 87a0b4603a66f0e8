"""Annotations generated from a rendered scene's truth, in the unified SegCap format.

Tasks (the names of training.data.sample.TASKS):
- referring: 'Please segment the red cup in this image.' -> '<p> the red cup </p> [SEG].'
  Multi-target expressions ('all the red objects') get one '<p> ... </p> [SEG]' per object,
  left to right, each phrase a unique description of that object:
  '<p> the red cup </p> [SEG] and <p> the red ball </p> [SEG].'
- absent: an expression with no match -> a plain sentence without [SEG].
- gcg: the fixed GCG question -> a grounded caption with one [SEG] per object plus the table.
- region: questions holding '<region>' (box or mask prompt) or '<mark>' (point prompt).
- caption: a short plain caption. vqa: counting, colours, kinds, existence.
- panoptic: every visible segment (objects, table, background), one [SEG] each.
fixed=True uses the paper's fixed questions (evaluation); otherwise paraphrases are sampled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

from ros_segcap.world import captions as cap
from ros_segcap.world.refer import (Ref, absent_expressions, article, describe, noun,
                                    referring_expressions)
from ros_segcap.world.render import BACKGROUND_ID, FIRST_OBJECT_ID, TABLE_ID, Scene

TASKS = ('referring', 'absent', 'gcg', 'region', 'caption', 'vqa', 'panoptic')
PROMPT_KINDS = ('point', 'box', 'mask')
MIN_PROMPT_PIXELS = 12  # objects smaller than this (tiny renders) are not prompted
PLURAL_FRACTION = 0.25  # share of referring samples that use an 'all the ...' expression


@dataclass(frozen=True)
class PromptSpec:
    """A visual prompt on one segment, in image pixels (the fields of core VisualPrompt)."""

    kind: str  # 'point' | 'box' | 'mask'
    seg_id: int  # panoptic segment it points at
    point: Optional[tuple[float, float]] = None  # (x, y)
    box: Optional[tuple[float, float, float, float]] = None  # (x1, y1, x2, y2), x2/y2 exclusive
    mask: Optional[np.ndarray] = None  # (H, W) bool


@dataclass(frozen=True)
class Annotation:
    """One question/answer pair about a scene; masks come from scene.panoptic == seg_ids[k]."""

    task: str
    question: str
    answer: str
    seg_ids: tuple[int, ...] = ()  # segment of each [SEG] in the answer, in order
    prompts: tuple[PromptSpec, ...] = ()  # one per '<region>' / '<mark>', in order
    ref: Optional[Ref] = None  # the expression of referring / absent questions
    extra: dict = field(default_factory=dict)  # task details for tests and debugging


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _template(rng: np.random.Generator, fixed: bool, main: str, paraphrases) -> str:
    """Return the fixed template, or in training half of the time a paraphrase."""
    if fixed or rng.random() < 0.5:
        return main
    return _pick(rng, paraphrases)


def _ref_answer(scene: Scene, ref: Ref) -> tuple[str, tuple[int, ...]]:
    """'<p> the red cup </p> [SEG].' or one grounded phrase per target for plurals."""
    if not ref.plural:
        return f'{cap.grounded(ref.text)}.', (FIRST_OBJECT_ID + ref.targets[0],)
    refs = referring_expressions(scene.objects)
    phrases = [cap.grounded(describe(scene.objects, i, refs)) for i in ref.targets]
    return cap.join(phrases) + '.', tuple(FIRST_OBJECT_ID + i for i in ref.targets)


def referring(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Segment the object(s) an unambiguous expression names."""
    refs = referring_expressions(scene.objects)
    plural = [r for r in refs if r.plural]
    if plural and rng.random() < PLURAL_FRACTION:
        ref = _pick(rng, plural)
    else:
        forms = sorted({r.form for r in refs if not r.plural})
        form = _pick(rng, forms)
        ref = _pick(rng, [r for r in refs if r.form == form])
    question = _template(rng, fixed, cap.REFER_QUESTION, cap.REFER_PARAPHRASES)
    answer, seg_ids = _ref_answer(scene, ref)
    return Annotation('referring', question.format(expr=ref.text), answer, seg_ids, ref=ref)


def absent(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Ask for something that is not there; the answer is a plain sentence."""
    refs = absent_expressions(scene.objects, scene.spec.vocab)
    kinds = {o.kind for o in scene.objects}
    colours = {o.colour for o in scene.objects}
    hard = [r for r in refs if r.kind in kinds or r.colour in colours]  # near misses
    ref = _pick(rng, hard if hard and rng.random() < 0.7 else refs)
    question = _template(rng, fixed, cap.REFER_QUESTION, cap.REFER_PARAPHRASES)
    answer = _template(rng, fixed, cap.ABSENT_ANSWER, cap.ABSENT_PARAPHRASES)
    return Annotation('absent', question.format(expr=ref.text),
                      answer.format(noun=noun(ref.colour, ref.kind)), ref=ref)


def gcg(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Grounded caption: every object and the table, each with a [SEG]."""
    text, ids = cap.grounded_caption(scene.spec)
    question = _template(rng, fixed, cap.GCG_QUESTION, cap.GCG_PARAPHRASES)
    return Annotation('gcg', question, text, tuple(ids))


def caption(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Caption the scene briefly, without masks."""
    question = _template(rng, fixed, cap.CAPTION_QUESTION, cap.CAPTION_PARAPHRASES)
    return Annotation('caption', question, cap.plain_caption(scene.spec))


def panoptic(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Every visible segment: objects left to right, then the table and the background."""
    objs = scene.objects
    areas = np.bincount(scene.panoptic.ravel(), minlength=FIRST_OBJECT_ID + len(objs))
    order = sorted(range(len(objs)), key=lambda i: objs[i].x)
    items = [(noun(objs[i].colour, objs[i].kind), FIRST_OBJECT_ID + i) for i in order]
    items += [(scene.spec.table_name, TABLE_ID), ('background', BACKGROUND_ID)]
    items = [(p, s) for p, s in items if areas[s] > 0]
    answer = cap.join([cap.grounded(p) for p, _ in items]) + '.'
    return Annotation('panoptic', cap.PANOPTIC_QUESTION, answer, tuple(s for _, s in items))


def make_prompt(scene: Scene, seg_id: int, kind: str, rng: Optional[np.random.Generator]
                ) -> PromptSpec:
    """Make a point/box/mask prompt on a visible segment.

    The point is the segment's inner-most pixel (rng=None) or, in training, a random pixel
    at least half as deep inside.
    """
    mask = scene.panoptic == seg_id
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError(f'segment {seg_id} is not visible; cannot prompt it')
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if kind == 'box':
        return PromptSpec('box', seg_id, box=(float(x1), float(y1), float(x2), float(y2)))
    if kind == 'mask':
        return PromptSpec('mask', seg_id, mask=mask)
    crop = np.pad(mask[y1:y2, x1:x2], 1).astype(np.uint8)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 3)[1:-1, 1:-1]
    if rng is None:
        py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        cy, cx = np.nonzero(dist >= 0.5 * dist.max())
        k = int(rng.integers(len(cx)))
        py, px = cy[k], cx[k]
    return PromptSpec('point', seg_id, point=(float(x1 + px), float(y1 + py)))


def _placeholder(kind: str) -> str:
    return '<mark>' if kind == 'point' else '<region>'


def _visible(scene: Scene) -> list[int]:
    areas = np.bincount(scene.panoptic.ravel(), minlength=FIRST_OBJECT_ID + len(scene.objects))
    return [i for i in range(len(scene.objects))
            if areas[FIRST_OBJECT_ID + i] >= MIN_PROMPT_PIXELS]


def _region_single(scene: Scene, i: int, kind: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(question, answer, seg_ids) choices about one prompted object."""
    o, p = scene.objects[i], _placeholder(kind)
    phrase = noun(o.colour, o.kind)
    a_phrase = f'{article(phrase)} {phrase}'
    return [
        (f'What is {p}?', f'{cap.capitalise(a_phrase)}.', ()),
        (f'What colour is {p}?', f'It is {o.colour}.', ()),
        (f'What kind of object is {p}?', f'It is {article(o.kind)} {o.kind}.', ()),
        (f'Can you describe {p} briefly?', cap.region_description(scene.spec, o), ()),
        (f'Please segment {p}.', f'{cap.grounded("the " + phrase)}.', (FIRST_OBJECT_ID + i,)),
    ]


def region(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Questions about prompted regions (a point, box or mask on an object)."""
    visible = _visible(scene)
    if not visible:  # nothing big enough to prompt (tiny image): describe the scene instead
        return caption(scene, rng, fixed)
    i = _pick(rng, visible)
    kind = _pick(rng, PROMPT_KINDS)
    choices = _region_single(scene, i, kind)
    targets = [i]
    pair = _region_pair(scene, i, kind, [j for j in visible if j != i], rng)
    if pair is not None:
        choices.append(pair[0])
        targets.append(pair[1])
    k = int(rng.integers(len(choices)))
    question, answer, seg_ids = choices[k]
    n_prompts = question.count('<region>') + question.count('<mark>')
    kinds = [kind, 'point']  # the pair question's second prompt is always a <mark>
    prompts = tuple(make_prompt(scene, FIRST_OBJECT_ID + targets[j], kinds[j],
                                None if fixed else rng) for j in range(n_prompts))
    return Annotation('region', question, answer, seg_ids, prompts,
                      extra={'objects': tuple(targets[:n_prompts])})


def _region_pair(scene: Scene, i: int, kind: str, others: list[int], rng: np.random.Generator
                 ) -> Optional[tuple[tuple[str, str, tuple[int, ...]], int]]:
    """Ask 'Which is closer to the camera, <region> or <mark>?' if depths clearly differ."""
    objs = scene.objects
    others = [j for j in others if abs(objs[j].depth - objs[i].depth) >= 0.1
              and (objs[j].colour, objs[j].kind) != (objs[i].colour, objs[i].kind)]
    if not others:
        return None
    j = _pick(rng, others)
    near = i if objs[i].depth < objs[j].depth else j
    q = f'Which is closer to the camera, {_placeholder(kind)} or <mark>?'
    a = f'The {noun(objs[near].colour, objs[near].kind)} is closer.'
    return (q, a, ()), j


def _count_answer(n: int, colour: Optional[str], kind: Optional[str]) -> str:
    verb = 'is' if n == 1 else 'are'
    return f'There {verb} {cap.count_phrase(n, colour, kind)}.'


def _vqa_choices(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """One candidate (question, answer) per kind of question."""
    objs = scene.objects
    if rng.random() < 0.6:  # mostly ask about things that are there
        o = _pick(rng, objs)
        colour, kind = _pick(rng, ((o.colour, o.kind), (None, o.kind), (o.colour, None)))
    else:
        vocab = scene.spec.vocab
        colour = _pick(rng, (None,) + vocab.colours)
        kind = _pick(rng, vocab.kinds if colour is None else (None,) + vocab.kinds)
    n = sum(1 for o in objs if colour in (None, o.colour) and kind in (None, o.kind))
    plural = noun(colour, kind, plural=True)
    n_all = len(objs)
    choices = [(f'How many {plural} are there?', _count_answer(n, colour, kind)),
               ('How many objects are on the table?',
                _count_answer(n_all, None, None)[:-1] + ' on the table.')]
    phrase = noun(colour, kind)
    yes = n > 0
    choices.append((f'Is there {article(phrase)} {phrase}?',
                    f'Yes, {_count_answer(n, colour, kind)[0].lower()}'
                    f'{_count_answer(n, colour, kind)[1:]}' if yes else
                    f'No, there is no {phrase}.'))
    refs = [r for r in referring_expressions(objs) if not r.plural]
    no_colour = [r for r in refs if r.colour is None]
    if no_colour:
        r = _pick(rng, no_colour)
        choices.append((f'What colour is {r.text}?', f'It is {objs[r.targets[0]].colour}.'))
    no_kind = [r for r in refs if r.kind is None]
    if no_kind:
        r = _pick(rng, no_kind)
        k = objs[r.targets[0]].kind
        choices.append((f'What kind of object is {r.text}?', f'It is {article(k)} {k}.'))
    return choices


def vqa(scene: Scene, rng: np.random.Generator, fixed: bool) -> Annotation:
    """Ask a counting, existence, colour or kind question with a short text answer."""
    question, answer = _pick(rng, _vqa_choices(scene, rng))
    return Annotation('vqa', question, answer)


TASK_FUNCS: dict[str, Callable[[Scene, np.random.Generator, bool], Annotation]] = {
    'referring': referring, 'absent': absent, 'gcg': gcg, 'region': region,
    'caption': caption, 'vqa': vqa, 'panoptic': panoptic,
}


def annotate(scene: Scene, task: str, rng: np.random.Generator, fixed: bool = False
             ) -> Annotation:
    """Generate one annotation of `task` for a rendered scene.

    fixed=True: the paper's fixed questions and inner-most prompt points (evaluation).
    """
    if task not in TASK_FUNCS:
        raise ValueError(f'unknown task {task!r}; use one of {TASKS}')
    return TASK_FUNCS[task](scene, rng, fixed)

"""The shipped segcap-tiny weights, end to end through the Pipeline on fixed tabletop scenes.

Scenes of the varied world's test split, in its train style families and in the held-out
ones (tile / marble tables, toon / outlined shading, low / high camera poses, last shape
variants: never trained on). For each style set they are the first test scenes from index
5000 on that hold exactly one red cup of >= 1000 visible pixels at 640x480 (chosen by that
rule, not by the results): three in train styles, each of which must work, and ten in
held-out styles, of which a share must work (the level the model card reports: about half
of the held-out text requests, nearly all point prompts).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
import torch

from ros_segcap.core.pipeline import mask_iou
from ros_segcap.core.preprocess import innermost_point
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.segcap.weights import SHIPPED_DIR
from ros_segcap.world.captions import place_words
from ros_segcap.world.varied import render_varied, sample_varied_split

SHIPPED = SHIPPED_DIR / 'segcap-tiny'
RED_CUP_SCENES = {'train': (5143, 5168, 5197),
                  'held_out': (5102, 5137, 5197, 5218, 5275, 5297, 5431, 5476, 5501, 5509)}
# of 10: the red cup's mask at IoU >= 0.5 from the text request (measured 8; 7 without
# plain_pick, where scene 5476's [SEG] points at another object; 5 without the presence check
# either)
HELD_OUT_TEXT_FOUND = 7
HELD_OUT_POINT_FOUND = 7  # of 10: the same from a point on the cup
# scenes where an absent object gets a mask: in held-out styles 5102 (the class head takes a
# purple vase for a bottle) and 5476 (with the second look the best object's P(bottle) x
# P(purple) is 0.038, over the presence check's 0.03; 0.005 without it)
ABSENT_MASKED = {'train': 0, 'held_out': 2}
CUPS_PLACED = 7  # of 13: descriptions of the red cup that say its place (measured 8; 3 without
# region_places: the LLM alone says 'the front right' for most objects)
# of 13: red cups whose covering kept query is named 'cup' (measured 11; 9 without the second
# look)
CUP_QUERIES_NAMED = 10
HELD_OUT_DECIDED = 9  # of 10 (measured 10): requests whose first token the presence check fixes

pytestmark = pytest.mark.skipif(not (SHIPPED / 'model.safetensors').is_file(),
                                reason='no shipped segcap-tiny weights in ros_segcap/weights')


@pytest.fixture(scope='module')
def pipeline():
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    pipe = open_pipeline(PipelineConfig(model='segcap-tiny'))
    assert pipe.trained, 'shipped weights must be marked trained'
    return pipe


@lru_cache(maxsize=None)  # each scene is rendered once for all the tests
def _scene(styles: str, index: int):
    spec = sample_varied_split('test', index, styles, aspect=640 / 480)
    return spec, render_varied(spec, 480, 640)


def _cup(spec, scene) -> np.ndarray:
    cups = [k for k, o in enumerate(spec.objects) if (o.colour, o.kind) == ('red', 'cup')]
    assert len(cups) == 1
    return scene.mask(cups[0])


def _iou(masks: list[np.ndarray], truth: np.ndarray) -> float:
    return mask_iou(np.logical_or.reduce(masks), truth) if masks else 0.0


def _text(pipeline, styles: str, index: int):
    spec, scene = _scene(styles, index)
    result = pipeline.run(scene.image, 'Please segment the red cup in this image.')
    return _iou(result.masks, _cup(spec, scene)), result.raw_text


def _point(pipeline, styles: str, index: int):
    """'Please segment <mark>.' with a point on the cup's innermost pixel."""
    spec, scene = _scene(styles, index)
    cup = _cup(spec, scene)
    point = VisualPrompt('point', point=innermost_point(cup))
    result = pipeline.run(scene.image, 'Please segment <mark>.', visual_prompt=point)
    return _iou(result.masks, cup), result.raw_text


def test_the_scenes_follow_their_rule():
    for styles, indices in RED_CUP_SCENES.items():
        picked = []
        for index in range(5000, indices[-1] + 1):
            spec = sample_varied_split('test', index, styles, aspect=640 / 480)
            pairs = [(o.colour, o.kind) for o in spec.objects]
            if pairs.count(('red', 'cup')) == 1 and _cup(*_scene(styles, index)).sum() >= 1000:
                picked.append(index)
        assert tuple(picked) == indices, styles


@pytest.mark.parametrize('index', RED_CUP_SCENES['train'])
def test_red_cup_is_segmented_in_train_styles(pipeline, index):
    iou, answer = _text(pipeline, 'train', index)
    assert iou >= 0.5, f'IoU {iou:.2f}; answer: {answer!r}'


@pytest.mark.parametrize('index', RED_CUP_SCENES['train'])
def test_point_on_the_red_cup_segments_it_in_train_styles(pipeline, index):
    iou, answer = _point(pipeline, 'train', index)
    assert iou >= 0.5, f'IoU {iou:.2f}; answer: {answer!r}'


def test_red_cups_in_held_out_styles(pipeline):
    rows = [(index, *_text(pipeline, 'held_out', index), *_point(pipeline, 'held_out', index))
            for index in RED_CUP_SCENES['held_out']]
    report = '\n'.join(f'{i}: text IoU {t:.2f} {a!r}; point IoU {p:.2f}' for i, t, a, p, _ in rows)
    assert sum(t >= 0.5 for _, t, _, _, _ in rows) >= HELD_OUT_TEXT_FOUND, report
    assert sum(p >= 0.5 for _, _, _, p, _ in rows) >= HELD_OUT_POINT_FOUND, report


def test_the_heads_pick_the_red_cup_the_answer_names(pipeline):
    """With plain_pick, the [SEG] of "the red cup" takes the object the class and colour
    heads score best for it when they are clear; the LLM's pointer alone finds no more of
    the held-out red cups."""
    question, config = 'Please segment the red cup in this image.', pipeline.model.config
    assert config.plain_pick[0] > 0, 'segcap-tiny ships plain_pick'
    found = {True: 0, False: 0}
    try:
        for on in (True, False):
            pipeline.model.config = config if on else replace(config, plain_pick=(0.0, 0.0))
            for index in RED_CUP_SCENES['held_out']:
                spec, scene = _scene('held_out', index)
                result = pipeline.run(scene.image, question)
                found[on] += _iou(result.masks, _cup(spec, scene)) >= 0.5
    finally:
        pipeline.model.config = config
    assert found[True] >= HELD_OUT_TEXT_FOUND and found[True] >= found[False], found


@pytest.mark.parametrize('styles', list(RED_CUP_SCENES))
def test_absent_object_gives_empty_result(pipeline, styles):
    """'the purple bottle', which none of the scenes has: no [SEG] and no mask, in every
    train-style scene and in all but ABSENT_MASKED of the held-out ones."""
    masked = []
    for index in RED_CUP_SCENES[styles]:
        spec, scene = _scene(styles, index)
        assert not any((o.colour, o.kind) == ('purple', 'bottle') for o in spec.objects)
        result = pipeline.run(scene.image, 'Please segment the purple bottle in this image.')
        assert bool(result.masks) == ('[SEG]' in result.raw_text), result.raw_text
        if result.masks:
            masked.append((index, result.raw_text))
    assert len(masked) <= ABSENT_MASKED[styles], masked


def test_presence_check_decides_clear_plain_requests(pipeline):
    """Where segcap-tiny's class and colour heads are clear about the red cup (config
    presence_check), the answer starts as they say; with check_presence off the LLM decides
    alone, and finds fewer of the held-out red cups. A request without a colour is never
    made to say yes."""
    question = 'Please segment the red cup in this image.'
    llm, decided, found = pipeline.model.llm, 0, {True: 0, False: 0}
    for index in RED_CUP_SCENES['held_out']:
        spec, scene = _scene('held_out', index)
        with torch.no_grad():
            frame, _ = pipeline.encode(scene.image)
            start = pipeline.model.answer_start(frame, question)
            kind_only = pipeline.model.answer_start(frame, 'segment the cup')
        assert kind_only in (None, [llm.absent_id])  # a kind alone can only be vetoed
        for check in (True, False):
            pipeline.settings = replace(pipeline.settings, check_presence=check)
            result = pipeline.run(scene.image, question)
            found[check] += _iou(result.masks, _cup(spec, scene)) >= 0.5
            if check and start is not None:
                decided += 1
                assert llm.encode(result.raw_text)[0] == start[0], (index, result.raw_text)
    pipeline.settings = replace(pipeline.settings, check_presence=True)
    assert decided >= HELD_OUT_DECIDED, decided
    assert found[True] > found[False], found


def test_region_descriptions_place_the_red_cup(pipeline):
    """'Can you describe <mark> briefly?' with a point on each red cup: with region_places
    the answer says the cup's place as the world's captions do in most scenes; the LLM
    alone says it in fewer."""
    question, said = 'Can you describe <mark> briefly?', {True: 0, False: 0}
    for styles, indices in RED_CUP_SCENES.items():
        for index in indices:
            spec, scene = _scene(styles, index)
            cup = next(o for o in spec.objects if (o.colour, o.kind) == ('red', 'cup'))
            point = VisualPrompt('point', point=innermost_point(_cup(spec, scene)))
            place = f'at {place_words(spec, cup)} of the table'
            for on in (True, False):
                pipeline.settings = replace(pipeline.settings, region_places=on)
                answer = pipeline.run(scene.image, question, visual_prompt=point).answer
                said[on] += place in answer
    pipeline.settings = replace(pipeline.settings, region_places=True)
    assert said[True] >= CUPS_PLACED and said[True] > said[False], said


def test_the_second_look_names_the_red_cup(pipeline):
    """The kind of the kept query that covers each red cup, as a region prompt on it or the
    presence check sees it, with the second look and without it."""
    model, look = pipeline.model, pipeline.model.second_look
    assert look is not None, 'segcap-tiny ships a second look'
    named = {True: 0, False: 0}
    try:
        for styles, indices in RED_CUP_SCENES.items():
            for index in indices:
                spec, scene = _scene(styles, index)
                for on in (True, False):
                    model.second_look = look if on else None
                    named[on] += _covering_kind(pipeline, scene.image, _cup(spec, scene)) == 'cup'
    finally:
        model.second_look = look
    assert named[True] >= CUP_QUERIES_NAMED and named[True] > named[False], named


def _covering_kind(pipeline, image: np.ndarray, truth: np.ndarray):
    """The best class (looked at again, where the model does) of the kept query whose mask
    covers truth best at IoU >= 0.5; None when none does."""
    from ros_segcap.core.preprocess import unletterbox
    model = pipeline.model
    frame, box = pipeline.encode(image)
    keep = model.kept_queries(frame)
    masks = pipeline.probabilities(unletterbox(frame.mask_logits[0, keep], box), image,
                                   box) > 0.5
    ious = [mask_iou(m, truth) for m in masks]
    best = int(np.argmax(ious))
    if ious[best] < 0.5:
        return None
    logits = model.looked_again(frame, frame.class_logits[0, keep], frame.mask_logits[0, keep])
    return model.config.class_names[int(logits[best, :-1].argmax())]

"""The shipped segcap-tiny weights, end to end through the Pipeline on fixed tabletop scenes.

Scenes of the varied world's test split, in its train style families and in the held-out
ones (tile / marble tables, toon / outlined shading, low / high camera poses, last shape
variants: never trained on). For each style set they are the first three test scenes from
index 5000 on that hold exactly one red cup of >= 1000 visible pixels at 640x480 (chosen by
that rule, not by the results).
"""
from __future__ import annotations

import numpy as np
import pytest

from ros_segcap.core.preprocess import innermost_point
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.segcap.weights import SHIPPED_DIR
from ros_segcap.world.varied import render_varied, sample_varied_split

SHIPPED = SHIPPED_DIR / 'segcap-tiny'
RED_CUP_SCENES = {'train': (5143, 5168, 5197), 'held_out': (5102, 5137, 5197)}
CASES = [(styles, i) for styles, indices in RED_CUP_SCENES.items() for i in indices]

pytestmark = pytest.mark.skipif(not (SHIPPED / 'model.safetensors').is_file(),
                                reason='no shipped segcap-tiny weights in ros_segcap/weights')


@pytest.fixture(scope='module')
def pipeline():
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    pipe = open_pipeline(PipelineConfig(model='segcap-tiny'))
    assert pipe.trained, 'shipped weights must be marked trained'
    return pipe


def _scene(styles: str, index: int):
    spec = sample_varied_split('test', index, styles, aspect=640 / 480)
    return spec, render_varied(spec, 480, 640)


def _cup(spec, scene) -> np.ndarray:
    cups = [k for k, o in enumerate(spec.objects) if (o.colour, o.kind) == ('red', 'cup')]
    assert len(cups) == 1
    return scene.mask(cups[0])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_the_scenes_follow_their_rule():
    for styles, indices in RED_CUP_SCENES.items():
        picked = []
        for index in range(5000, indices[-1] + 1):
            spec = sample_varied_split('test', index, styles, aspect=640 / 480)
            pairs = [(o.colour, o.kind) for o in spec.objects]
            if pairs.count(('red', 'cup')) == 1 and \
                    _cup(spec, render_varied(spec, 480, 640)).sum() >= 1000:
                picked.append(index)
        assert tuple(picked) == indices, styles


@pytest.mark.parametrize('styles, index', CASES)
def test_red_cup_is_segmented(pipeline, styles, index):
    spec, scene = _scene(styles, index)
    cup = _cup(spec, scene)
    result = pipeline.run(scene.image, 'Please segment the red cup in this image.')
    assert len(result.masks) >= 1, f'no mask; answer: {result.raw_text!r}'
    assert _iou(np.logical_or.reduce(result.masks), cup) >= 0.5, result.raw_text


@pytest.mark.parametrize('styles', list(RED_CUP_SCENES))
def test_absent_object_gives_empty_result(pipeline, styles):
    spec, scene = _scene(styles, RED_CUP_SCENES[styles][0])
    assert not any((o.colour, o.kind) == ('purple', 'bottle') for o in spec.objects)
    result = pipeline.run(scene.image, 'Please segment the purple bottle in this image.')
    assert result.masks == [], result.raw_text
    assert '[SEG]' not in result.raw_text


@pytest.mark.parametrize('styles, index', CASES)
def test_point_on_the_red_cup_segments_it(pipeline, styles, index):
    """'Please segment <mark>.' with a point on the cup's innermost pixel."""
    spec, scene = _scene(styles, index)
    cup = _cup(spec, scene)
    point = VisualPrompt('point', point=innermost_point(cup))
    result = pipeline.run(scene.image, 'Please segment <mark>.', visual_prompt=point)
    assert len(result.masks) >= 1, f'no mask; answer: {result.raw_text!r}'
    assert _iou(np.logical_or.reduce(result.masks), cup) >= 0.5, result.raw_text

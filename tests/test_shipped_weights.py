"""The shipped segcap-tiny weights, end to end through the Pipeline on fixed tabletop scenes.

The scenes are the first three test-split scenes from index 5000 on that hold exactly one
red cup of >= 1000 visible pixels at 640x480 (chosen by that rule, not by the results).
"""
from __future__ import annotations

import numpy as np
import pytest

from ros_segcap.core.preprocess import innermost_point
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.segcap.weights import SHIPPED_DIR
from ros_segcap.world import render, sample_scene, split_seed

SHIPPED = SHIPPED_DIR / 'segcap-tiny'
RED_CUP_SCENES = (5004, 5015, 5028)  # test-split indices

pytestmark = pytest.mark.skipif(not (SHIPPED / 'model.safetensors').is_file(),
                                reason='no shipped segcap-tiny weights in ros_segcap/weights')


@pytest.fixture(scope='module')
def pipeline():
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    pipe = open_pipeline(PipelineConfig(model='segcap-tiny'))
    assert pipe.trained, 'shipped weights must be marked trained'
    return pipe


def _scene(index: int):
    spec = sample_scene(split_seed('test', index))
    return spec, render(spec, 480, 640)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize('index', RED_CUP_SCENES)
def test_red_cup_is_segmented(pipeline, index):
    spec, scene = _scene(index)
    cup = [k for k, o in enumerate(spec.objects) if (o.colour, o.kind) == ('red', 'cup')]
    assert len(cup) == 1
    result = pipeline.run(scene.image, 'Please segment the red cup in this image.')
    assert len(result.masks) >= 1, f'no mask; answer: {result.raw_text!r}'
    pred = np.logical_or.reduce(result.masks)
    assert _iou(pred, scene.mask(cup[0])) >= 0.5, result.raw_text


def test_absent_object_gives_empty_result(pipeline):
    spec, scene = _scene(RED_CUP_SCENES[0])
    assert not any((o.colour, o.kind) == ('purple', 'bottle') for o in spec.objects)
    result = pipeline.run(scene.image, 'Please segment the purple bottle in this image.')
    assert result.masks == [], result.raw_text
    assert '[SEG]' not in result.raw_text


@pytest.mark.parametrize('index', RED_CUP_SCENES)
def test_point_on_the_red_cup_segments_it(pipeline, index):
    """'Please segment <mark>.' with a point on the cup's innermost pixel."""
    spec, scene = _scene(index)
    cup = scene.mask([k for k, o in enumerate(spec.objects)
                      if (o.colour, o.kind) == ('red', 'cup')][0])
    point = VisualPrompt('point', point=innermost_point(cup))
    result = pipeline.run(scene.image, 'Please segment <mark>.', visual_prompt=point)
    assert len(result.masks) >= 1, f'no mask; answer: {result.raw_text!r}'
    assert _iou(np.logical_or.reduce(result.masks), cup) >= 0.5, result.raw_text

"""Place words and nearness from masks (core/places.py), the rule the world's captions use."""
from __future__ import annotations

import numpy as np
import pytest

from ros_segcap.core.places import base_point, far_edge, nearer, place_phrase
from ros_segcap.core.preprocess import Letterbox
from ros_segcap.world.captions import place_words
from ros_segcap.world.render import TABLE_ID
from ros_segcap.world.varied import render_varied, sample_varied_split

# a 480 x 640 image in a 64 x 64 grid of the 512 x 512 input: 8 padding rows above and below
BOX = Letterbox(height=480, width=640, size=512, scale=0.8, left=0.0, top=64.0)
HM = 64


@pytest.mark.parametrize('x, y, horizon, words', [
    (0.5, 0.9, 0.3, 'the front'), (0.1, 0.9, 0.3, 'the front left'),
    (0.9, 0.35, 0.3, 'the back right'), (0.5, 0.6, 0.3, 'the centre'),
    (0.2, 0.6, 0.3, 'the left'), (0.7, 0.5, 0.0, 'the right'),
    (0.5, 0.3, 1.0, 'the back')])  # a far edge at the bottom never divides by zero
def test_place_phrase(x, y, horizon, words):
    assert place_phrase(x, y, horizon) == words


def _grid(mask: np.ndarray) -> np.ndarray:
    """A 480 x 640 image mask -> the 64 x 64 grid of BOX (a cell is set if half is set)."""
    square = np.zeros((640, 640), dtype=np.float32)
    square[80:560] = mask
    return square.reshape(HM, 10, HM, 10).mean((1, 3)) >= 0.5


@pytest.mark.parametrize('styles', ['train', 'held_out'])
def test_exact_masks_give_the_worlds_place_words(styles):
    """The varied world's region descriptions say place_words(spec, object); from the exact
    masks on the model's mask grid, base_point and far_edge give the same words for nearly
    every clearly visible object."""
    agree, total = 0, 0
    for index in range(12):
        spec = sample_varied_split('test', index, styles, aspect=640 / 480)
        scene = render_varied(spec, 480, 640)
        table = _grid(scene.panoptic == TABLE_ID)
        for i, o in enumerate(spec.objects):
            mask = _grid(scene.mask(i))
            if mask.sum() < 4:
                continue
            total += 1
            words = place_phrase(*base_point(mask, BOX), far_edge(table, BOX))
            agree += words == place_words(spec, o)
    assert total >= 20 and agree >= 0.9 * total, (agree, total)


def _rect(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((HM, HM), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_base_point_is_the_bottom_middle_in_image_fractions():
    # rows 20..39, columns 4..11: bottom edge at grid row 40 = image row (40*8 - 64) / 384
    x, y = base_point(_rect(20, 40, 4, 12), BOX)
    assert x == pytest.approx(8 / 64) and y == pytest.approx((40 * 8 - 64) / 384)
    assert base_point(np.zeros((HM, HM), dtype=bool), BOX) is None


def test_far_edge_ignores_a_few_columns_hidden_by_objects():
    table = _rect(24, 56, 0, 64)
    table[24:40, 30:34] = False  # an object in front of the far edge
    assert far_edge(table, BOX) == pytest.approx((24 * 8 - 64) / 384)
    assert far_edge(np.zeros((HM, HM), dtype=bool), BOX) == 0.0  # seen from above


def test_nearer_is_the_lower_base():
    low, high = _rect(40, 50, 0, 5), _rect(20, 30, 10, 15)
    assert nearer(low, high) == 0 and nearer(high, low) == 1
    assert nearer(low, _rect(45, 50, 20, 30)) is None  # same bottom row
    assert nearer(low, np.zeros((HM, HM), dtype=bool)) is None

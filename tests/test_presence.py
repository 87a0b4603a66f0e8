"""The presence check of plain requests (models/segcap/presence.py): the answer start it fixes."""
from __future__ import annotations

import pytest
import torch

from ros_segcap.models.segcap.config import SegCapConfig, get_config
from ros_segcap.models.segcap.presence import best_score, first_tokens, plain_target

COLOURS = ('red', 'green', 'light blue')
KINDS = ('cup', 'mug', 'tea_pot')


@pytest.mark.parametrize('question, want', [
    ('Please segment the red cup in this image.', (0, 0)),
    ('segment the red cup', (0, 0)),
    ('the red cup', (0, 0)),
    ('Red cup.', (0, 0)),
    ('find a green mug', (1, 1)),
    ('Where is the light blue tea pot?', (2, 2)),
    ('segment the red cup and the green mug', None),
    ('segment the cup', (None, 0)),
    ('Please segment the tea pot in this image.', (None, 2)),
    ('segment the red', None),
    ('segment the red cup on the left', None),
    ('segment the red cups', None),
    ('segment the purple cup', None),
    ('describe the red cup', None),
])
def test_plain_target_takes_one_colour_and_one_kind(question, want):
    assert plain_target(question, COLOURS, KINDS) == want


def test_best_score_is_the_best_objects_kind_times_colour():
    classes = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])  # (N, K+1): cup, mug, void
    colours = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # red, green
    assert best_score(classes, colours, colour=0, kind=1) == pytest.approx(0.72)
    assert best_score(classes, colours, colour=1, kind=0) == pytest.approx(0.3)
    assert best_score(classes, colours, colour=None, kind=1) == pytest.approx(0.8)
    assert best_score(classes[:0], colours[:0], colour=0, kind=0) == 0.0


def test_first_tokens_fix_only_clear_cases():
    assert first_tokens(0.005, 0.01, 0.03, no_id=7, yes_id=9) == [7]
    assert first_tokens(0.02, 0.01, 0.03, no_id=7, yes_id=9) is None
    assert first_tokens(0.03, 0.01, 0.03, no_id=7, yes_id=9) == [9]
    assert first_tokens(0.9, 0.0, 0.0, no_id=7, yes_id=9) is None  # no check


@pytest.mark.parametrize('value, needs', [((0.05, 0.01), 'absent_below <= present_above'),
                                          ((-0.1, 0.2), '0 <= absent_below'),
                                          ((0.1,), 'absent_below'),
                                          ((0.01, 0.03), 'needs word_anchor')])
def test_bad_presence_check_is_refused(value, needs):
    with pytest.raises(ValueError, match='presence_check') as err:
        SegCapConfig.from_dict({'name': 'x', 'presence_check': list(value)})
    assert needs in str(err.value)


def test_segcap_tiny_checks_presence():
    assert get_config('segcap-tiny').presence_check == (0.01, 0.03)

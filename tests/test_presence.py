"""The presence check of plain requests (models/segcap/presence.py): the answer start it fixes."""
from __future__ import annotations

import pytest
import torch

from ros_segcap.models.segcap.config import SegCapConfig, get_config
from ros_segcap.models.segcap.presence import (clear_pick, first_tokens, object_scores,
                                               plain_target, segments_the_prompt)

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


def test_object_scores_are_each_objects_kind_times_colour():
    classes = torch.tensor([[0.1, 0.8, 0.1], [0.6, 0.2, 0.2]])  # (N, K+1): cup, mug, void
    colours = torch.tensor([[0.9, 0.1], [0.5, 0.5]])  # red, green
    torch.testing.assert_close(object_scores(classes, colours, 0, 1), torch.tensor([0.72, 0.1]))
    torch.testing.assert_close(object_scores(classes, colours, 1, 0), torch.tensor([0.01, 0.3]))
    torch.testing.assert_close(object_scores(classes, colours, None, 1),
                               torch.tensor([0.8, 0.2]))
    assert object_scores(classes[:0], colours[:0], 0, 0).shape == (0,)


def test_clear_pick_needs_the_score_and_the_margin():
    scores = torch.tensor([0.1, 0.5, 0.3])
    assert clear_pick(scores, 0.05, 1.0) == 1
    assert clear_pick(scores, 0.05, 1.5) == 1  # 0.5 >= 1.5 x 0.3
    assert clear_pick(scores, 0.05, 2.0) is None  # 0.5 < 2 x 0.3
    assert clear_pick(scores, 0.6, 1.0) is None  # not sure enough
    assert clear_pick(scores, 0.0, 1.0) is None  # no pick
    assert clear_pick(torch.tensor([0.2]), 0.05, 3.0) == 0  # alone: no runner-up
    assert clear_pick(torch.zeros(0), 0.05, 1.0) is None


def test_first_tokens_fix_only_clear_cases():
    assert first_tokens(0.005, 0.01, 0.03, no_id=7, yes_id=9) == [7]
    assert first_tokens(0.02, 0.01, 0.03, no_id=7, yes_id=9) is None
    assert first_tokens(0.03, 0.01, 0.03, no_id=7, yes_id=9) == [9]
    assert first_tokens(0.9, 0.0, 0.0, no_id=7, yes_id=9) is None  # no check


@pytest.mark.parametrize('key, value, needs', [
    ('presence_check', (0.05, 0.01), 'absent_below <= present_above'),
    ('presence_check', (-0.1, 0.2), '0 <= absent_below'),
    ('presence_check', (0.1,), 'absent_below'),
    ('presence_check', (0.01, 0.03), 'needs word_anchor'),
    ('plain_pick', (0.05, 0.5), 'min_ratio >= 1'),
    ('plain_pick', (1.5, 1.0), 'min_score <= 1'),
    ('plain_pick', (0.05,), 'min_score'),
    ('plain_pick', (0.05, 1.0), 'needs word_anchor')])
def test_bad_presence_check_or_plain_pick_is_refused(key, value, needs):
    with pytest.raises(ValueError, match=key) as err:
        SegCapConfig.from_dict({'name': 'x', key: list(value)})
    assert needs in str(err.value)


def test_segcap_tiny_checks_presence():
    assert get_config('segcap-tiny').presence_check == (0.01, 0.03)
    assert get_config('segcap-tiny').plain_pick == (0.05, 1.0)


@pytest.mark.parametrize('value, needs', [((0.05, 0.5), 'min_ratio >= 1'),
                                          ((1.5, 1.0), 'min_score <= 1'),
                                          ((0.05,), 'min_score'),
                                          ((0.05, 1.0), 'needs word_anchor')])
def test_bad_plain_pick_is_refused(value, needs):
    with pytest.raises(ValueError, match='plain_pick') as err:
        SegCapConfig.from_dict({'name': 'x', 'plain_pick': list(value)})
    assert needs in str(err.value)


@pytest.mark.parametrize('question, want', [('Please segment <mark>.', True),
                                            ('segment <region>', True),
                                            ('Please segment <region> in this image.', True),
                                            ('What is <mark>?', False),
                                            ('Please segment <mark> and <region>.', False),
                                            ('Please segment the red cup.', False)])
def test_segments_the_prompt_only_for_a_bare_segment_request(question, want):
    assert segments_the_prompt(question) is want

"""phrase_prior: the [SEG] pointer also scores each object by the kind and colour its phrase
names (decoder class probabilities, colour head)."""
from __future__ import annotations

import pytest
import torch

from ros_segcap.core.answer import last_phrase
from ros_segcap.models.segcap.config import VARIED_CLASSES, VARIED_COLOURS, get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.models.segcap.phrase_prior import EPS, phrase_words


@pytest.mark.parametrize('phrase, kind, colour', [
    ('the red cup', 'cup', 'red'),
    ('red cups', 'cup', 'red'),
    ('the orange orange', 'orange', 'orange'),
    ('the orange ball left of the blue bowl', 'ball', 'orange'),
    ('the cup left of the red bowl', 'cup', None),  # red is the bowl's, not the cup's
    ('all the boxes', 'box', None),
    ('the largest thing', None, None),
])
def test_phrase_words_find_the_head_kind_and_its_colour(phrase, kind, colour):
    k, c = phrase_words(phrase, VARIED_CLASSES, VARIED_COLOURS)
    assert (None if k is None else VARIED_CLASSES[k]) == kind
    assert (None if c is None else VARIED_COLOURS[c]) == colour


def test_last_phrase_is_the_phrase_a_seg_token_follows():
    assert last_phrase('Sure, <p> the red cup </p> ') == 'the red cup'
    assert last_phrase('<p> a </p> [SEG] and <p> the blue bowl </p>') == 'the blue bowl'
    assert last_phrase('<p> a </p> [SEG] and') == ''
    assert last_phrase('There is no red cup.') == ''


def test_the_prior_points_at_the_named_kind_and_colour():
    config = get_config('tiny-random').replace(seg_pointer=True, word_anchor=True,
                                               colour_from_pool=True, phrase_prior=True)
    torch.manual_seed(0)
    model = build_model(config, pretrained=False)
    frame = model.encode(torch.rand(1, 3, 128, 128) * 255)
    keep = model.kept_queries(frame)
    assert keep.numel() >= 3
    names, colours = config.class_names, config.colour_names
    cup, bowl, red = names.index('cup'), names.index('bowl'), colours.index('red')
    ball = names.index('ball')
    roles = dict(zip(keep[:3].tolist(), (cup, cup, bowl)))  # a cup, another cup, a bowl
    with torch.no_grad():  # every other query a ball; the colour head says red
        logits = torch.full_like(frame.class_logits, -20.0)
        for q in range(logits.shape[1]):
            logits[0, q, roles.get(q, ball)] = 20.0
        frame.class_logits.copy_(logits)
        model.projectors.colour_head.bias[red] = 30.0
        hidden = torch.randn(3, config.llm_hidden)
        learned, kept = model.seg_pointer(frame, hidden)
        scored, _ = model.seg_pointer(frame, hidden, ['the bowl', 'the red cup', 'a thing'])
    at = {q: i for i, q in enumerate(kept.tolist())}
    first_cup, the_bowl = at[keep[0].item()], at[keep[2].item()]
    prior = scored - learned
    torch.testing.assert_close(prior[2], torch.zeros_like(prior[2]))  # names nothing
    assert float(prior[0, the_bowl]) == pytest.approx(0.0, abs=1e-4)  # the bowl is a bowl
    assert float(prior[0, first_cup]) == pytest.approx(float(torch.tensor(EPS).log()),
                                                       abs=1e-3)
    assert float(prior[1, first_cup]) == pytest.approx(0.0, abs=1e-4)  # a red cup
    assert float(prior[1, the_bowl]) < -9.0  # red, but a bowl
    with pytest.raises(ValueError, match='phrase_prior=True: needs seg_pointer'):
        config.replace(seg_pointer=False)

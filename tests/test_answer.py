"""Parsing of generated answers (USCDF): phrases aligned with [SEG], clean text, bad input."""
from __future__ import annotations

import pytest

from ros_segcap.core.answer import clean_text, parse_answer, referring_answer
from ros_segcap.models.segcap.config import SPECIAL_TOKENS


def _no_special(text: str) -> bool:
    return not any(tok in text for tok in SPECIAL_TOKENS)


@pytest.mark.parametrize('text, phrases, clean', [
    ('<p> the red cup </p> [SEG].', ['the red cup'], 'the red cup.'),
    ('<p> the red cup </p> [SEG] and <p> the blue bowl </p> [SEG].',
     ['the red cup', 'the blue bowl'], 'the red cup and the blue bowl.'),
    ('A <p> red cup </p> [SEG] stands left of a <p> blue bowl </p> [SEG] on a '
     '<p>table</p>[SEG].', ['red cup', 'blue bowl', 'table'],
     'A red cup stands left of a blue bowl on a table.'),
])
def test_several_masks(text: str, phrases: list[str], clean: str) -> None:
    """One phrase per [SEG], in order, and the text without special tokens."""
    parsed = parse_answer(text)
    assert parsed.phrases == phrases
    assert parsed.text == clean
    assert _no_special(parsed.text)


@pytest.mark.parametrize('text', [
    'There is no such object in the image.',
    'A <p> red cup </p> stands on the table.',  # a phrase but no [SEG]: no mask
    '',
])
def test_no_seg_means_no_phrases(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.phrases == []
    assert _no_special(parsed.text)


@pytest.mark.parametrize('text, phrases', [
    ('<p> red cup [SEG] and more', ['red cup']),  # unmatched <p>: the open text is the phrase
    ('<p> red cup and nothing else', []),  # unmatched <p>, no [SEG]
    ('red cup </p> [SEG]', ['']),  # </p> without <p>: dropped, the [SEG] has no phrase
    ('[SEG] [SEG]', ['', '']),  # [SEG] without any phrase
    ('<p> a </p> [SEG] [SEG]', ['a', '']),  # a phrase is used by one [SEG] only
    ('<p> outer <p> inner </p> [SEG]', ['inner']),  # nested <p>: the innermost open wins
    ('</p></p><p><p>[SEG]', ['']),
])
def test_malformed(text: str, phrases: list[str]) -> None:
    """Malformed answers never raise, keep one phrase per [SEG] and drop stray tokens."""
    parsed = parse_answer(text)
    assert parsed.phrases == phrases
    assert len(parsed.phrases) == text.count('[SEG]')
    assert _no_special(parsed.text)


def test_clean_text() -> None:
    assert clean_text('A <p> cup </p> [SEG] , here <|im_end|>') == 'A cup, here'
    assert clean_text('  many   spaces\n\tand tabs .') == 'many spaces and tabs.'
    assert clean_text('<region> and <mark>') == 'and'


@pytest.mark.parametrize('phrases', [[], ['cup'], ['cup', 'bowl'], ['a', 'b', 'c']])
def test_referring_answer_round_trip(phrases: list[str]) -> None:
    """The training target format parses back to the same phrases."""
    text = referring_answer(phrases)
    assert text.count('[SEG]') == len(phrases)
    assert parse_answer(text).phrases == phrases


def test_repeated_list_items_are_dropped():
    """'a, b, a and b' with the same masks -> 'a and b'; a caption is left alone."""
    import numpy as np

    from ros_segcap.core.answer import referring_answer
    from ros_segcap.core.pipeline import drop_repeats
    from ros_segcap.core.types import SegCapResult

    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = ~a
    a2 = a.copy()
    a2[2, 0] = True  # IoU 8/9 with a: below REPEAT_IOU, a different object
    phrases = ['the blue cone', 'the blue ball', 'the blue cone', 'the blue ball', 'the blue cone']
    masks = [a, b, a.copy(), b.copy(), a2]
    raw = referring_answer(phrases)
    r = drop_repeats(SegCapResult(answer='x', raw_text=raw, phrases=list(phrases),
                                  masks=list(masks), scores=[.9, .8, .7, .6, .5],
                                  boxes=[(0, 0, 1, 1)] * 5))
    assert r.phrases == ['the blue cone', 'the blue ball', 'the blue cone']
    assert r.scores == [.9, .8, .5] and r.masks[2] is a2 and r.raw_text == raw
    assert r.answer == 'the blue cone, the blue ball and the blue cone.'
    caption = 'A <p> blue cone </p> [SEG] next to a <p> blue cone </p> [SEG].'
    c = drop_repeats(SegCapResult(answer='y', raw_text=caption, phrases=['blue cone'] * 2,
                                  masks=[a, a.copy()], scores=[1, 1], boxes=[(0, 0, 1, 1)] * 2))
    assert len(c.masks) == 2 and c.answer == 'y'

"""The presence check of plain requests: "segment the <colour> <kind>" or "segment the <kind>".

For a request that names one kind of the model's vocabulary, and at most one colour, the
decoder's class head and the colour head already say how likely each object of the frame
is to be that thing: P(kind) x P(colour) (P(kind) without a colour). The best object's
score decides the first token of the answer when it is clear: below `absent_below` the
answer starts "There" (There is no ...); with a colour, at or above `present_above` it
starts with the phrase (<p> ... [SEG]); otherwise the LLM decides alone. The class head
alone is not sure enough to make the answer say yes (measured: the model card). The rest of
the answer stays the LLM's. The thresholds are the model config's `presence_check` (both 0:
no check).

The same scores pick objects for the phrases of any answer: a [SEG] whose phrase ("the red
cup", a caption's "yellow apple") names one kind and at most one colour takes the object
with the best score among those the answer has not taken yet, when the heads are clear: its
score at least `plain_pick[0]` and at least `plain_pick[1]` times the runner-up's
(clear_pick; config `plain_pick`, (0, 0): the LLM's pointer always). Otherwise the [SEG]
points where the LLM's state points.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

_VERBS = r'(?:please\s+)?(?:segment|find|show(?:\s+me)?|locate|where\s+is|mask)?'
_PLAIN = re.compile(_VERBS + r'\s*(?:the\s+|an?\s+)?(?P<what>[a-z ]+?)'
                    r'(?:\s+in\s+(?:this|the)\s+(?:image|picture|scene))?\s*[.?!]?')


def plain_target(question: str, colours: Sequence[str], kinds: Sequence[str]
                 ) -> Optional[tuple[Optional[int], int]]:
    """(colour index or None, kind index) of a request naming one kind and at most one
    colour, e.g. 'Please segment the red cup in this image.', 'the red cup' or 'segment the
    cup'; None for anything else (other words, relations, plurals, several objects)."""
    match = _PLAIN.fullmatch(question.strip().lower())
    if match is None:
        return None
    words = match.group('what').split()
    for split in range(len(words)):  # split 0: no colour
        colour, kind = ' '.join(words[:split]), '_'.join(words[split:])
        if (not colour or colour in colours) and kind in kinds:
            return (colours.index(colour) if colour else None), kinds.index(kind)
    return None


_PROMPTED = re.compile(r'(?:please\s+)?(?:segment|mask|show(?:\s+me)?)\s+(?:<mark>|<region>)'
                       r'(?:\s+in\s+(?:this|the)\s+(?:image|picture|scene))?\s*[.?!]?')


def segments_the_prompt(question: str) -> bool:
    """Whether a question only asks to segment its one visual prompt: 'Please segment
    <mark>.', 'segment <region>' (not 'What is <mark>?', not two prompts)."""
    return _PROMPTED.fullmatch(question.strip().lower()) is not None


def object_scores(class_probs: torch.Tensor, colour_probs: torch.Tensor,
                  colour: Optional[int], kind: int) -> torch.Tensor:
    """P(kind) x P(colour) per object (P(kind) when colour is None): class_probs (N, K+1)
    with the void class, colour_probs (N, C) -> (N,)."""
    colour_part = colour_probs[:, colour] if colour is not None else 1.0
    return class_probs[:, kind] * colour_part


def clear_pick(scores: torch.Tensor, min_score: float, min_ratio: float) -> Optional[int]:
    """Index of the best of the objects' scores (N,) if it is at least min_score (a positive
    threshold) and at least min_ratio times the second best; else None."""
    if min_score <= 0 or scores.shape[0] == 0:
        return None
    top = torch.topk(scores, min(2, scores.shape[0]))
    best = float(top.values[0])
    second = float(top.values[1]) if scores.shape[0] > 1 else 0.0
    return int(top.indices[0]) if best >= min_score and best >= min_ratio * second else None


def first_tokens(score: float, absent_below: float, present_above: float, no_id: int,
                 yes_id: int, with_colour: bool = True) -> Optional[list[int]]:
    """The tokens the answer may start with: [no_id] below absent_below, [yes_id] at or
    above present_above (a positive threshold) if the request names a colour, else None
    (any)."""
    if score < absent_below:
        return [no_id]
    if with_colour and present_above > 0 and score >= present_above:
        return [yes_id]
    return None

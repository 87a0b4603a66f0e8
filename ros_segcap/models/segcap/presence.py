"""The presence check of plain requests: "segment the <colour> <kind>".

For a request that names exactly one colour and one kind of the model's vocabulary, the
decoder's class head and the colour head already say how likely each object of the frame
is to be that thing: P(kind) x P(colour). The best object's score decides the first token of
the answer when it is clear: below `absent_below` the answer starts "There" (There is no
...), at or above `present_above` it starts with the phrase (<p> ... [SEG]); in between the
LLM decides alone. The rest of the answer, and which object its [SEG] points at, stay the
LLM's. The thresholds are the model config's `presence_check` (both 0: no check).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

_VERBS = r'(?:please\s+)?(?:segment|find|show(?:\s+me)?|locate|where\s+is|mask)?'
_PLAIN = re.compile(_VERBS + r'\s*(?:the\s+|an?\s+)?(?P<what>[a-z ]+?)'
                    r'(?:\s+in\s+(?:this|the)\s+(?:image|picture|scene))?\s*[.?!]?')


def plain_target(question: str, colours: Sequence[str], kinds: Sequence[str]
                 ) -> Optional[tuple[int, int]]:
    """(colour index, kind index) of a request naming one colour and one kind, e.g.
    'Please segment the red cup in this image.' or 'the red cup'; None for anything else
    (other words, relations, plurals, several objects, visual prompts)."""
    match = _PLAIN.fullmatch(question.strip().lower())
    if match is None:
        return None
    words = match.group('what').split()
    for split in range(1, len(words)):
        colour, kind = ' '.join(words[:split]), '_'.join(words[split:])
        if colour in colours and kind in kinds:
            return colours.index(colour), kinds.index(kind)
    return None


def best_score(class_probs: torch.Tensor, colour_probs: torch.Tensor, colour: int,
               kind: int) -> float:
    """max over objects of P(kind) x P(colour): class_probs (N, K+1) with the void class,
    colour_probs (N, C); 0 without objects."""
    if class_probs.shape[0] == 0:
        return 0.0
    return float((class_probs[:, kind] * colour_probs[:, colour]).max())


def first_tokens(score: float, absent_below: float, present_above: float, no_id: int,
                 yes_id: int) -> Optional[list[int]]:
    """The tokens the answer may start with: [no_id] below absent_below, [yes_id] at or
    above present_above (a positive threshold), else None (any)."""
    if score < absent_below:
        return [no_id]
    if present_above > 0 and score >= present_above:
        return [yes_id]
    return None

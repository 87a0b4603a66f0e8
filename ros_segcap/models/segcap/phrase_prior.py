"""The phrase prior of the [SEG] pointer (config.phrase_prior).

A grounded phrase such as "the red cup left of the bowl" names a kind (its first kind word:
cup) and maybe a colour (the colour word right before that kind: red). The model already
scores both for every object: the decoder's class probabilities and the colour head. The
prior adds log P(kind) + log P(colour) of each object to the pointer's learned scores, so a
[SEG] points at an object that is what its phrase says before the learned part breaks ties
(which cup: the left one, the largest one).
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

EPS = 1e-4  # floor of the probabilities: log(EPS) ~ -9.2 for a kind or colour ruled out


def _singular(word: str, kinds: dict[str, int]) -> Optional[int]:
    for form in (word, word[:-1] if word.endswith('s') else None,
                 word[:-2] if word.endswith('es') else None):
        if form and form in kinds:
            return kinds[form]
    return None


def phrase_words(phrase: str, class_names: Sequence[str], colour_names: Sequence[str]
                 ) -> tuple[Optional[int], Optional[int]]:
    """(class index of the phrase's kind, index of its colour), None where it names none."""
    kinds = {n.replace('_', ' '): i for i, n in enumerate(class_names) if ' ' not in n}
    colours = {c: i for i, c in enumerate(colour_names)}
    words = re.findall(r'[a-z]+', phrase.lower())
    for i, w in enumerate(words):
        kind = _singular(w, kinds)
        if kind is None:
            continue
        nxt = _singular(words[i + 1], kinds) if i + 1 < len(words) else None
        if w in colours and nxt is not None:  # 'orange' as the colour of the next kind
            continue
        colour = colours.get(words[i - 1]) if i > 0 else None
        return kind, colour
    return None, None


def prior_scores(phrases: Sequence[str], p_class: torch.Tensor, p_colour: torch.Tensor,
                 class_names: Sequence[str], colour_names: Sequence[str]) -> torch.Tensor:
    """(G, N) log P(kind) + log P(colour) of N objects for G phrases (0 for what a phrase
    does not name). p_class (N, K) and p_colour (N, C) are probabilities."""
    out = p_class.new_zeros((len(phrases), p_class.shape[0]))
    for g, phrase in enumerate(phrases):
        kind, colour = phrase_words(phrase, class_names, colour_names)
        if kind is not None:
            out[g] += p_class[:, kind].clamp(min=EPS).log()
        if colour is not None:
            out[g] += p_colour[:, colour].clamp(min=EPS).log()
    return out


def model_prior(model, frame, keep: torch.Tensor, phrases: Sequence[str]) -> torch.Tensor:
    """prior_scores of a SegCapModel's kept objects `keep` (N,) on a frame: class
    probabilities from the decoder (void dropped), colour from its colour head."""
    config = model.config
    p_class = frame.class_logits[0, keep, :config.num_classes].float().softmax(-1)
    pooled = model.pooled(frame, frame.mask_logits[:, keep])
    tokens = None if config.colour_from_pool else model.projectors.object_tokens(
        frame.query_feat[0, keep], frame.query_pos[0, keep], pooled)
    p_colour = model.projectors.colour_logits(tokens, pooled).float().softmax(-1)
    return prior_scores(phrases, p_class, p_colour, config.class_names, config.colour_names)

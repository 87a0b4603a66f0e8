"""Guided decoding: which tokens an answer may take next, from what the model's heads see.

A Guide is called before each answer token with the tokens generated so far and returns
the only token ids allowed next, or None for any. Model families build guides from their
own heads (a presence check fixes the first token; a region's place follows "at") and
apply them with `restrict`. Text, [SEG] states and streaming stay the generation loop's.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

Guide = Callable[[Sequence[int]], Optional[Sequence[int]]]


def restrict(logits: torch.Tensor, allowed: Optional[Sequence[int]]) -> torch.Tensor:
    """logits (..., V) with every token outside `allowed` at -inf (None or empty: as is)."""
    if not allowed:
        return logits
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep[..., list(allowed)] = True
    return logits.masked_fill(~keep, -torch.inf)


def starts_with(first: Sequence[int]) -> Guide:
    """The answer's first token is one of `first`; the rest is free."""
    first = list(first)
    return lambda tokens: first if not tokens else None


class Insert:
    """The answer's next tokens are span() from the start, or after the first `after` token.

    span is called once, when its place is reached (so its cost is paid only then); an
    empty span leaves the answer free. Later `after` tokens insert nothing.
    """

    def __init__(self, span: Callable[[], Sequence[int]], after: Optional[int] = None
                 ) -> None:
        self.span, self.after = span, after
        self._start: Optional[int] = None  # index in the answer where the span begins
        self._ids: Sequence[int] = ()

    def __call__(self, tokens: Sequence[int]) -> Optional[Sequence[int]]:
        if self._start is None:
            if self.after is not None and (not tokens or tokens[-1] != self.after):
                return None
            self._start, self._ids = len(tokens), list(self.span())
        k = len(tokens) - self._start
        return [self._ids[k]] if 0 <= k < len(self._ids) else None


def chain(*guides: Optional[Guide]) -> Optional[Guide]:
    """One guide from several: the first that has an opinion decides (None: no guides)."""
    live = [g for g in guides if g is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def guide(tokens: Sequence[int]) -> Optional[Sequence[int]]:
        for g in live:
            allowed = g(tokens)
            if allowed is not None:
                return allowed
        return None
    return guide

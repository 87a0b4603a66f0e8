"""The unified answer format (MGLMM's USCDF) and parsing of generated text.

'<p> the red cup </p> [SEG] and <p> the blue bowl </p> [SEG].' -> phrases
['the red cup', 'the blue bowl'], one per [SEG], in order. A [SEG] whose phrase is missing
(no '<p> ... </p>' between it and the previous [SEG]) gets the phrase ''. An unmatched '<p>'
or '</p>' is dropped from the text and never crashes the parser. No [SEG] means no masks.
"""
from __future__ import annotations

from dataclasses import dataclass
import re

from .tokens import P_CLOSE, P_OPEN, SEG_TOKEN, SPECIAL_TOKENS

REFERRING_QUESTION = 'Please segment {expr} in this image.'
GCG_QUESTION = ('Could you please give me a detailed description of the image? Please respond '
                'with interleaved segmentation masks for the corresponding parts of the answer.')

_TOKEN_RE = re.compile('(' + '|'.join(re.escape(t) for t in (P_OPEN, P_CLOSE, SEG_TOKEN)) + ')')


@dataclass(frozen=True)
class ParsedAnswer:
    text: str  # the answer without special tokens
    phrases: list[str]  # one per [SEG], in order


def clean_text(text: str) -> str:
    """Remove the special tokens and chat end markers; tidy the spaces they leave behind."""
    for tok in SPECIAL_TOKENS + ('<|im_end|>', '<|endoftext|>'):
        text = text.replace(tok, ' ')
    text = re.sub(r'\s+', ' ', text).strip()
    return re.sub(r'\s+([.,;:!?])', r'\1', text)


def parse_answer(text: str) -> ParsedAnswer:
    """Split a generated answer into clean text and the phrase of each [SEG]."""
    phrases: list[str] = []
    pending = ''  # last closed phrase not yet given to a [SEG]
    current: list[str] | None = None  # text inside an open <p>
    for part in _TOKEN_RE.split(text):
        if part == P_OPEN:
            current = []
        elif part == P_CLOSE:
            if current is not None:
                pending = clean_text(''.join(current))
            current = None
        elif part == SEG_TOKEN:
            if current is not None:  # '<p> cup [SEG]' without '</p>': take what is open
                pending = clean_text(''.join(current))
                current = None
            phrases.append(pending)
            pending = ''
        elif current is not None:
            current.append(part)
    return ParsedAnswer(clean_text(text), phrases)


def referring_answer(phrases: list[str]) -> str:
    """'<p> a </p> [SEG] and <p> b </p> [SEG].' (empty list -> no [SEG])."""
    if not phrases:
        return 'There is no such object in the image.'
    parts = [f'{P_OPEN} {p} {P_CLOSE} {SEG_TOKEN}' for p in phrases]
    if len(parts) == 1:
        return parts[0] + '.'
    return ', '.join(parts[:-1]) + ' and ' + parts[-1] + '.'

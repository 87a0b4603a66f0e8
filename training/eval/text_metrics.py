"""Text metrics: caption BLEU-4 and CIDEr-D, phrase similarity, region answers, attributes.

All text goes through `tokenize` first: the answer-format tokens (<p>, </p>, [SEG], <region>,
<mark>) are removed, text is lowercased and every character other than a letter, digit or
apostrophe splits tokens. This stands in for the PTB tokenizer of coco-caption (which needs
Java), so scores can differ slightly from published numbers on punctuation-heavy text.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Collection, Optional, Sequence, Union

import numpy as np

SPECIAL_TOKENS = re.compile(r'<p>|</p>|\[SEG\]|<region>|<mark>|<image>')
_SPLIT = re.compile(r"[^a-z0-9']+")
_SENTENCE_END = re.compile(r'[.;:!?]+(?:\s|$)')
ARTICLES = frozenset({'a', 'an', 'the'})
NUMBER_WORDS = {'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4', 'five': '5',
                'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
COLOUR_WORDS = frozenset({
    'red', 'green', 'blue', 'yellow', 'orange', 'purple', 'violet', 'pink', 'brown', 'black',
    'white', 'grey', 'gray', 'silver', 'gold', 'golden', 'beige', 'tan', 'cyan', 'magenta',
    'navy', 'maroon', 'teal', 'turquoise'})
_SYNONYMS = {'gray': 'grey', 'golden': 'gold', 'violet': 'purple'}


def strip_special_tokens(text: str) -> str:
    """Remove <p>, </p>, [SEG], <region>, <mark>, <image> and collapse the spaces left."""
    return ' '.join(SPECIAL_TOKENS.sub(' ', text).split())


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens of `text` without answer-format tokens or punctuation."""
    return [t for t in _SPLIT.split(strip_special_tokens(text).lower()) if t.strip("'")]


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _check_pairs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f'{len(hyps)} hypotheses but {len(refs)} reference lists')
    for i, r in enumerate(refs):
        if isinstance(r, str) or not r:
            raise ValueError(f'refs[{i}] must be a non-empty list of reference strings')


def corpus_bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """Corpus-level BLEU-`max_n` (Papineni et al.) in [0, 1].

    Clipped n-gram matches and hypothesis n-gram counts are summed over the corpus; the
    brevity penalty uses the summed hypothesis length against the summed closest reference
    lengths (ties go to the shorter reference, as coco-caption and NLTK do). No smoothing:
    a corpus with no matching n-gram of some order scores 0.
    """
    _check_pairs(hyps, refs)
    matches, totals, hyp_len, ref_len = [0] * max_n, [0] * max_n, 0, 0
    for hyp, ref_list in zip(hyps, refs):
        h = tokenize(hyp)
        rs = [tokenize(r) for r in ref_list]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in _ngrams(h, n).items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def _all_ngrams(tokens: Sequence[str], max_n: int) -> Counter:
    out: Counter = Counter()
    for n in range(1, max_n + 1):
        out.update(_ngrams(tokens, n))
    return out


def _tfidf(counts: Counter, df: Counter, log_n_images: float,
           max_n: int) -> tuple[list[dict], np.ndarray, int]:
    """Tf-idf vector per n-gram order, its norms, and the length used by the penalty."""
    vec: list[dict] = [{} for _ in range(max_n)]
    for gram, tf in counts.items():
        vec[len(gram) - 1][gram] = tf * (log_n_images - math.log(max(1.0, df[gram])))
    norms = np.array([math.sqrt(sum(v * v for v in d.values())) for d in vec])
    # coco-caption takes the bigram count as the length; kept so scores match it.
    length = sum(tf for gram, tf in counts.items() if len(gram) == 2)
    return vec, norms, length


def _cider_sim(hyp: tuple, ref: tuple, sigma: float) -> np.ndarray:
    (vh, nh, lh), (vr, nr, lr) = hyp, ref
    val = np.zeros(len(vh))
    for n in range(len(vh)):
        # Clipping: a hypothesis n-gram counts at most as much as in the reference.
        val[n] = sum(min(w, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, w in vh[n].items())
        if nh[n] != 0 and nr[n] != 0:
            val[n] /= nh[n] * nr[n]
    return val * math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))


def cider_d_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], *, sigma: float = 6.0,
                   max_n: int = 4) -> np.ndarray:
    """Per-image CIDEr-D (as coco-caption computes it); `cider_d` is their mean.

    Document frequencies come from the references of all images given (so scores depend
    on the whole evaluation set; one image alone always scores 0). For each image: mean
    over n = 1..4 of the mean over its references of the clipped tf-idf cosine times the
    gaussian length penalty exp(-delta^2 / (2 sigma^2)), times 10.
    """
    _check_pairs(hyps, refs)
    ref_counts = [[_all_ngrams(tokenize(r), max_n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for counts in ref_counts:
        df.update(set().union(*counts))
    log_n = math.log(float(len(refs))) if refs else 0.0
    scores = np.zeros(len(hyps))
    for i, hyp in enumerate(hyps):
        vh = _tfidf(_all_ngrams(tokenize(hyp), max_n), df, log_n, max_n)
        total = sum(_cider_sim(vh, _tfidf(c, df, log_n, max_n), sigma) for c in ref_counts[i])
        scores[i] = 10.0 * float(np.mean(total)) / len(ref_counts[i])
    return scores


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], *, sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: the mean of `cider_d_scores` (about 0-10; 1.0 is 'good')."""
    return float(np.mean(cider_d_scores(hyps, refs, sigma=sigma))) if hyps else float('nan')


def phrase_similarity(a: str, b: str) -> float:
    """Token-overlap similarity of two phrases in [0, 1] (used by the GCG mask recall).

    Dice / F1 over the token multisets after dropping articles: 2 |A & B| / (|A| + |B|).
    'the red cup' vs 'red cup' = 1.0; 'man' vs 'man in a shirt' = 0.5; two empty = 1.0.
    """
    ta = Counter(t for t in tokenize(a) if t not in ARTICLES)
    tb = Counter(t for t in tokenize(b) if t not in ARTICLES)
    if not ta and not tb:
        return 1.0
    return 2.0 * sum((ta & tb).values()) / (sum(ta.values()) + sum(tb.values()))


def normalize_answer(text: str) -> str:
    """Normalise a short answer, VQA style.

    Lowercase; punctuation, articles and answer-format tokens removed; number words up to
    ten as digits; single spaces.
    """
    return ' '.join(NUMBER_WORDS.get(t, t) for t in tokenize(text) if t not in ARTICLES)


def _contains(words: list[str], phrase: list[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i:i + n] == phrase for i in range(len(words) - n + 1))


def region_answer_accuracy(preds: Sequence[str], refs: Sequence[Union[str, Sequence[str]]], *,
                           mode: str = 'exact') -> float:
    """Fraction of region answers judged correct, after `normalize_answer`.

    mode='exact': refs[i] is one answer or a list of accepted answers; correct if the
    normalised prediction equals one of them.
    mode='keyword': refs[i] is one keyword or a list of keywords; correct if every keyword
    occurs in the normalised prediction as whole words ('red cup' matches 'a red cup on
    the table', not 'red cupboard').
    """
    if mode not in ('exact', 'keyword'):
        raise ValueError(f"mode must be 'exact' or 'keyword', got {mode!r}")
    if len(preds) != len(refs):
        raise ValueError(f'{len(preds)} predictions but {len(refs)} references')
    if not preds:
        return float('nan')
    correct = 0
    for pred, ref in zip(preds, refs):
        options = [ref] if isinstance(ref, str) else list(ref)
        words = normalize_answer(pred).split()
        if mode == 'exact':
            correct += any(normalize_answer(o).split() == words for o in options)
        else:
            correct += all(_contains(words, normalize_answer(k).split()) for k in options)
    return correct / len(preds)


AttributeParser = Callable[[str, str], Optional[Collection[str]]]


@dataclass(frozen=True)
class AttributeScores:
    """Attribute (colour) accuracy over the ground-truth objects of a set of captions."""

    accuracy: float  # n_correct / n_mentioned: mentioned objects given a right colour
    precision: float  # n_correct / n_with_attr: right among those given any colour
    mention_rate: float  # n_mentioned / n_objects
    n_objects: int
    n_mentioned: int
    n_with_attr: int
    n_correct: int


def colour_parser(caption: str, phrase: str, *, vocabulary: Collection[str] = COLOUR_WORDS,
                  window: int = 3) -> Optional[set[str]]:
    """Return the vocabulary words the caption attaches to the object `phrase` (or None).

    The object is found by its last word (its head noun, also as a plural with -s/-es);
    None if it is not mentioned. Attribute words are taken from up to `window` words before
    each mention ('a red and white cup') and after 'is/are' right behind it ('the cup is
    red'), within the mention's sentence. Objects sharing a head noun get the union of
    all their mentions' words; pass your own parser for anything smarter.
    """
    head = tokenize(phrase)[-1:] or ['']
    forms = {head[0], head[0] + 's', head[0] + 'es'}
    found: Optional[set[str]] = None
    for sentence in _SENTENCE_END.split(strip_special_tokens(caption)):
        words = tokenize(sentence)
        for i, w in enumerate(words):
            if w not in forms:
                continue
            found = found if found is not None else set()
            found |= {t for t in words[max(0, i - window):i] if t in vocabulary}
            if words[i + 1:i + 2] in (['is'], ['are']):
                found |= {t for t in words[i + 2:i + 2 + window] if t in vocabulary}
    return found


def attribute_accuracy(captions: Sequence[str],
                       objects: Sequence[Sequence[tuple[str, Collection[str]]]], *,
                       parser: Optional[AttributeParser] = None) -> AttributeScores:
    """Score how well captions give the right colour (or other attribute) to each object.

    objects[i] lists the ground-truth (phrase, attributes) of the objects in image i.
    parser(caption, phrase) returns the attribute words the caption gives that object, or
    None if the caption does not mention it (default: `colour_parser`). An object is
    correct if it is mentioned with at least one attribute and all of them are in its
    ground truth (grey/gray, gold/golden and violet/purple count as the same).
    """
    if len(captions) != len(objects):
        raise ValueError(f'{len(captions)} captions but {len(objects)} object lists')
    parse = parser or colour_parser
    n_obj = n_men = n_attr = n_ok = 0
    for caption, objs in zip(captions, objects):
        for phrase, gt in objs:
            n_obj += 1
            said = parse(caption, phrase)
            if said is None:
                continue
            n_men += 1
            said_n = {_SYNONYMS.get(a.lower(), a.lower()) for a in said}
            gt_n = {_SYNONYMS.get(a.lower(), a.lower()) for a in gt}
            n_attr += bool(said_n)
            n_ok += bool(said_n) and said_n <= gt_n
    nan = float('nan')
    return AttributeScores(accuracy=n_ok / n_men if n_men else nan,
                           precision=n_ok / n_attr if n_attr else nan,
                           mention_rate=n_men / n_obj if n_obj else nan, n_objects=n_obj,
                           n_mentioned=n_men, n_with_attr=n_attr, n_correct=n_ok)

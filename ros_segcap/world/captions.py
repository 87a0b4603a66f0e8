"""Sentences about a scene: grounded captions, plain captions, region descriptions, templates.

Grounded text uses the unified format: each grounded phrase is '<p> phrase </p> [SEG]'.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from ros_segcap.core.places import place_phrase
from ros_segcap.world.layout import ObjectSpec, SceneSpec
from ros_segcap.world.palette import NUMBER_WORDS
from ros_segcap.world.refer import article, noun
from ros_segcap.world.render import FIRST_OBJECT_ID, TABLE_ID

# The paper's fixed questions (used for val/test) and training paraphrases.
REFER_QUESTION = 'Please segment {expr} in this image.'
REFER_PARAPHRASES = ('Segment {expr}.', 'Can you segment {expr}?', 'segment {expr}',
                     'Where is {expr}? Please show it with a mask.', 'Show me {expr}.',
                     'Find {expr} in the image.', 'Could you please segment {expr}?')
GCG_QUESTION = ('Could you please give me a detailed description of the image? Please respond '
                'with interleaved segmentation masks for the corresponding parts of the answer.')
GCG_PARAPHRASES = ('Describe the scene in detail and segment everything you mention.',
                   'Give a grounded description of this image.',
                   'Can you describe this image in detail, with a mask for each object?')
CAPTION_QUESTION = 'Please describe the image briefly.'
CAPTION_PARAPHRASES = ('What do you see?', 'Describe this image.', 'What is on the table?',
                       'Give a short caption of the image.')
PANOPTIC_QUESTION = 'Please segment everything in this image.'
ABSENT_ANSWER = 'There is no {noun} in this image.'
ABSENT_PARAPHRASES = ("I can't find any {noun} in this image.", 'There is no {noun} here.')

VERBS = {'ball': 'lies', 'bowl': 'sits', 'box': 'sits'}
# the varied world's kinds (world/varied) that do not stand
VERBS.update({k: 'lies' for k in ('plate', 'banana', 'apple', 'orange', 'pear', 'book',
                                  'phone', 'marker', 'sponge')})


def grounded(phrase: str) -> str:
    """Wrap a phrase as a grounded mention: '<p> red cup </p> [SEG]'."""
    return f'<p> {phrase} </p> [SEG]'


def join(items: Sequence[str]) -> str:
    """Join items as 'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return ''.join(items)
    return ', '.join(items[:-1]) + ' and ' + items[-1]


def capitalise(text: str) -> str:
    """Upper-case the first character only."""
    return text[:1].upper() + text[1:]


def count_phrase(n: int, colour: str | None, kind: str | None) -> str:
    """Count a noun: 'one red cup', 'two red cups', 'no red cups'."""
    number = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    return f'{number} {noun(colour, kind, plural=n != 1)}'


def _pair_relation(a: ObjectSpec, b: ObjectSpec) -> str:
    """How a (left) relates to b (right) in a caption."""
    if abs(a.x - b.x) < 0.12 and abs(a.depth - b.depth) > 0.1:
        return 'behind' if a.depth > b.depth else 'in front of'
    return 'to the left of'


def grounded_caption(spec: SceneSpec) -> tuple[str, list[int]]:
    """Return a grounded caption of the scene and the segment id of each [SEG], in order.

    Objects are described left to right in pairs, then the table:
    'A <p> red cup </p> [SEG] stands to the left of a <p> blue bowl </p> [SEG]. ...'
    """
    objs = spec.objects
    order = sorted(range(len(objs)), key=lambda i: objs[i].x)
    seen: set[str] = set()

    def mention(i: int) -> str:
        phrase = noun(objs[i].colour, objs[i].kind)
        det = 'another' if phrase in seen else article(phrase)
        seen.add(phrase)
        return f'{det} {grounded(phrase)}'

    table = grounded(spec.table_name)
    if len(order) == 1:
        i = order[0]
        text = f'{capitalise(mention(i))} {VERBS.get(objs[i].kind, "stands")} on a {table}.'
        return text, [FIRST_OBJECT_ID + i, TABLE_ID]
    sentences, ids = [], []
    for k in range(0, len(order), 2):
        pair = order[k:k + 2]
        lead = 'further right, ' if k else ''
        first = objs[pair[0]]
        if len(pair) == 2:
            rel = _pair_relation(first, objs[pair[1]])
            body = (f'{mention(pair[0])} {VERBS.get(first.kind, "stands")} {rel} '
                    f'{mention(pair[1])}')
        else:
            body = f'on the right, there is {mention(pair[0])}'
            lead = ''
        sentences.append(capitalise(lead + body) + '.')
        ids += [FIRST_OBJECT_ID + i for i in pair]
    everything = 'Both are' if len(order) == 2 else 'They are all'
    sentences.append(f'{everything} on a {table}.')
    return ' '.join(sentences), ids + [TABLE_ID]


def plain_caption(spec: SceneSpec) -> str:
    """Return a short caption without grounding, objects left to right and grouped."""
    objs = sorted(spec.objects, key=lambda o: o.x)
    if not objs:
        return f'An empty {spec.table_name}.'
    if len(objs) == 1:
        o = objs[0]
        phrase = noun(o.colour, o.kind)
        return (f'{capitalise(article(phrase))} {phrase} {VERBS.get(o.kind, "stands")} '
                f'on a {spec.table_name}.')
    counts = Counter((o.colour, o.kind) for o in objs)
    parts = []
    for (colour, kind), n in counts.items():  # insertion order = left to right
        parts.append(f'{article(noun(colour, kind))} {noun(colour, kind)}' if n == 1
                     else count_phrase(n, colour, kind))
    number = NUMBER_WORDS[len(objs)] if len(objs) < len(NUMBER_WORDS) else str(len(objs))
    return f'{capitalise(number)} objects are on a {spec.table_name}: {join(parts)}.'


def place_words(spec: SceneSpec, o: ObjectSpec) -> str:
    """Say where an object is on the table: 'the front left', 'the back', 'the centre'."""
    return place_phrase(o.x, o.y, spec.horizon)


def region_description(spec: SceneSpec, o: ObjectSpec) -> str:
    """Describe an object and its place: 'A red cup at the front left of the table.'."""
    phrase = noun(o.colour, o.kind)
    return f'{capitalise(article(phrase))} {phrase} at {place_words(spec, o)} of the table.'

"""Referring expressions that are unambiguous for a scene, computed from its attributes.

Every expression names a noun group (optional colour, optional kind: 'the red cup', 'the
cup', 'the red object', 'the object') and, when the group has several members, a selector
that singles one out with a clear margin:
- extremes: leftmost/rightmost (base x), nearest/farthest (depth), largest/smallest (area);
- ordinals: 'the second cup from the left' (groups of 3 or more);
- relations to a uniquely named anchor outside the group: 'the cup to the left of the blue
  bowl' (x), 'the cup in front of / behind the blue bowl' (depth, and roughly in line).
Plural expressions ('all the red objects') cover every member of a group of 2 or more.
Absent expressions name a colour/kind combination that is not on the table.
Margins (X_MARGIN, DEPTH_MARGIN, AREA_RATIO) keep near-ties out, so a strict comparison of
the attributes gives exactly the targets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ros_segcap.world.layout import ObjectSpec
from ros_segcap.world.palette import DEFAULT_VOCAB, ORDINALS, PLURALS, Vocabulary

X_MARGIN = 0.05  # fraction of image width between ordered objects
DEPTH_MARGIN = 0.06  # metres between ordered objects
AREA_RATIO = 1.4  # largest / runner-up (or runner-up / smallest)

# form names, roughly from simplest to most complex
FORMS = ('unique', 'extreme', 'ordinal', 'relation', 'plural', 'absent')


@dataclass(frozen=True)
class Ref:
    """A referring expression: its text (with article) and the object indices it denotes."""

    text: str  # e.g. 'the second cup from the left'
    targets: tuple[int, ...]  # indices into SceneSpec.objects, left to right for plurals
    form: str  # one of FORMS
    colour: Optional[str] = None  # noun group colour (None = any)
    kind: Optional[str] = None  # noun group kind (None = any)

    @property
    def plural(self) -> bool:
        """True for 'all the ...' expressions."""
        return self.form == 'plural'


def noun(colour: Optional[str], kind: Optional[str], plural: bool = False) -> str:
    """Return a noun phrase without article: 'red cup', 'cups', 'red objects'."""
    head = kind or 'object'
    if plural:
        head = PLURALS.get(head, head + 's')
    return f'{colour} {head}' if colour else head


def article(phrase: str) -> str:
    """Return the indefinite article of a phrase ('an' for 'orange cup')."""
    return 'an' if phrase[:1] in 'aeiou' else 'a'


def group(objects: Sequence[ObjectSpec], colour: Optional[str], kind: Optional[str]) -> list[int]:
    """Return the indices of objects matching colour and kind (None matches anything)."""
    return [i for i, o in enumerate(objects)
            if (colour is None or o.colour == colour) and (kind is None or o.kind == kind)]


def _groups(objects: Sequence[ObjectSpec]) -> list[tuple[Optional[str], Optional[str]]]:
    colours = sorted({o.colour for o in objects})
    kinds = sorted({o.kind for o in objects})
    pairs = [(c, k) for c in colours for k in kinds if group(objects, c, k)]
    return pairs + [(c, None) for c in colours] + [(None, k) for k in kinds] + [(None, None)]


# name -> (sort key, clear-margin test on the (best, runner-up) keys)
EXTREMES: dict[str, tuple[Callable[[ObjectSpec], float], Callable[[float, float], bool]]] = {
    'leftmost': (lambda o: o.x, lambda a, b: b - a >= X_MARGIN),
    'rightmost': (lambda o: -o.x, lambda a, b: b - a >= X_MARGIN),
    'nearest': (lambda o: o.depth, lambda a, b: b - a >= DEPTH_MARGIN),
    'farthest': (lambda o: -o.depth, lambda a, b: b - a >= DEPTH_MARGIN),
    'largest': (lambda o: -o.area, lambda a, b: -a >= -b * AREA_RATIO),
    'smallest': (lambda o: o.area, lambda a, b: b >= a * AREA_RATIO),
}


def _extreme(objects: Sequence[ObjectSpec], members: list[int], name: str) -> Optional[int]:
    """Return the member that is clearly the most <name>, or None on a near-tie."""
    key, clear = EXTREMES[name]
    order = sorted(members, key=lambda i: key(objects[i]))
    if len(order) < 2 or not clear(key(objects[order[0]]), key(objects[order[1]])):
        return None
    return order[0]


def _extreme_refs(objects: Sequence[ObjectSpec], members: list[int], colour: Optional[str],
                  kind: Optional[str]) -> list[Ref]:
    n = noun(colour, kind)
    refs = []
    for name in EXTREMES:
        best = _extreme(objects, members, name)
        if best is None:
            continue
        texts = [f'the {name} {n}']
        if name in ('leftmost', 'rightmost') and len(members) == 2:
            texts.append(f'the {n} on the {name[:-4]}')
        if name == 'nearest':
            texts.append(f'the {n} closest to the camera')
        refs += [Ref(t, (best,), 'extreme', colour, kind) for t in texts]
    return refs


def _ordinal_refs(objects: Sequence[ObjectSpec], members: list[int], colour: Optional[str],
                  kind: Optional[str]) -> list[Ref]:
    if len(members) < 3:
        return []
    refs = []
    for side, sign in (('left', 1.0), ('right', -1.0)):
        order = sorted(members, key=lambda i: sign * objects[i].x)
        xs = [sign * objects[i].x for i in order]
        for k in range(1, min(len(order) - 1, len(ORDINALS))):
            if xs[k] - xs[k - 1] >= X_MARGIN and xs[k + 1] - xs[k] >= X_MARGIN:
                text = f'the {ORDINALS[k]} {noun(colour, kind)} from the {side}'
                refs.append(Ref(text, (order[k],), 'ordinal', colour, kind))
    return refs


LATERAL = 0.25  # 'in front of' / 'behind' also need |x - anchor x| <= LATERAL
LATERAL_MARGIN = 0.05  # ... and every other group member |dx| >= LATERAL + LATERAL_MARGIN


def _near_x(t: ObjectSpec, a: ObjectSpec) -> bool:
    return abs(t.x - a.x) <= LATERAL


def _far_x(t: ObjectSpec, a: ObjectSpec) -> bool:
    return abs(t.x - a.x) >= LATERAL + LATERAL_MARGIN


# relation text -> (holds(target, anchor), clearly_not(target, anchor))
RELATIONS: dict[str, tuple[Callable[[ObjectSpec, ObjectSpec], bool],
                           Callable[[ObjectSpec, ObjectSpec], bool]]] = {
    'to the left of': (lambda t, a: t.x <= a.x - X_MARGIN, lambda t, a: t.x >= a.x + X_MARGIN),
    'to the right of': (lambda t, a: t.x >= a.x + X_MARGIN, lambda t, a: t.x <= a.x - X_MARGIN),
    'in front of': (lambda t, a: t.depth <= a.depth - DEPTH_MARGIN and _near_x(t, a),
                    lambda t, a: t.depth >= a.depth + DEPTH_MARGIN or _far_x(t, a)),
    'behind': (lambda t, a: t.depth >= a.depth + DEPTH_MARGIN and _near_x(t, a),
               lambda t, a: t.depth <= a.depth - DEPTH_MARGIN or _far_x(t, a)),
}


def _relation_refs(objects: Sequence[ObjectSpec], members: list[int], colour: Optional[str],
                   kind: Optional[str], anchors: list[Ref]) -> list[Ref]:
    if len(members) < 2:
        return []
    refs = []
    for anchor in anchors:
        a = anchor.targets[0]
        if a in members:  # 'the bowl to the left of the black bowl' reads oddly
            continue
        others = members
        for rel, (holds, clearly_not) in RELATIONS.items():
            sat = [i for i in others if holds(objects[i], objects[a])]
            unsat = [i for i in others if clearly_not(objects[i], objects[a])]
            if len(sat) == 1 and len(sat) + len(unsat) == len(others):
                text = f'the {noun(colour, kind)} {rel} {anchor.text}'
                refs.append(Ref(text, (sat[0],), 'relation', colour, kind))
    return refs


def _anchors(objects: Sequence[ObjectSpec]) -> list[Ref]:
    """One simple unique name per object that has one ('the blue bowl' or 'the bowl')."""
    names: dict[int, Ref] = {}
    kinds = sorted({o.kind for o in objects})  # absent kinds have no members
    for o_colour, o_kind in [(o.colour, o.kind) for o in objects] + [(None, k) for k in kinds]:
        members = group(objects, o_colour, o_kind)
        if len(members) == 1 and members[0] not in names:
            text = f'the {noun(o_colour, o_kind)}'
            names[members[0]] = Ref(text, (members[0],), 'unique', o_colour, o_kind)
    return [names[i] for i in sorted(names)]


def referring_expressions(objects: Sequence[ObjectSpec]) -> list[Ref]:
    """Return all unambiguous singular and plural expressions for the scene."""
    anchors = _anchors(objects)
    refs: list[Ref] = []
    for colour, kind in _groups(objects):
        members = group(objects, colour, kind)
        if len(members) == 1:
            refs.append(Ref(f'the {noun(colour, kind)}', tuple(members), 'unique', colour, kind))
            continue
        refs += _extreme_refs(objects, members, colour, kind)
        refs += _ordinal_refs(objects, members, colour, kind)
        refs += _relation_refs(objects, members, colour, kind, anchors)
        by_x = tuple(sorted(members, key=lambda i: objects[i].x))
        refs.append(Ref(f'all the {noun(colour, kind, plural=True)}', by_x, 'plural',
                        colour, kind))
    return refs


def absent_expressions(objects: Sequence[ObjectSpec], vocab: Vocabulary = DEFAULT_VOCAB
                       ) -> list[Ref]:
    """Return singular expressions naming what is not in the scene (targets = ())."""
    refs = []
    for colour in (None,) + vocab.colours:
        for kind in (None,) + vocab.kinds:
            if (colour or kind) and not group(objects, colour, kind):
                refs.append(Ref(f'the {noun(colour, kind)}', (), 'absent', colour, kind))
    return refs


_PRIORITY = {'unique': 0, 'extreme': 1, 'ordinal': 2, 'relation': 3}


def describe(objects: Sequence[ObjectSpec], i: int, refs: Optional[list[Ref]] = None) -> str:
    """Return a short unique expression for object i, e.g. 'the leftmost red cup'.

    Falls back to 'the <colour> <kind>' if nothing unique exists (near-ties).
    """
    refs = referring_expressions(objects) if refs is None else refs
    o = objects[i]
    mine = [r for r in refs if r.targets == (i,) and r.form in _PRIORITY]
    if mine:
        # prefer naming colour and kind, then the simplest form, then the shortest text
        best = min(mine, key=lambda r: (r.colour != o.colour or r.kind != o.kind,
                                        _PRIORITY[r.form], len(r.text)))
        return best.text
    return f'the {noun(o.colour, o.kind)}'

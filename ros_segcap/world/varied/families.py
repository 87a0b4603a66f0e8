"""Words and style families of the varied world, with the train / held-out split as data.

Colour words are drawn over a range of hue (degrees), saturation and value (0..1), so 'red'
covers many reds. Style families are the axes a scene's look is drawn from (table material,
shading style, camera pose, shape variant); STYLE_SPLIT says which families only ever appear
in held-out scenes. Shape variants are named 'kind/variant'.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from ros_segcap.world.palette import Vocabulary

# word -> ((hue lo, hue hi) in degrees or None for neutral, (s lo, s hi), (v lo, v hi))
COLOUR_WORDS: dict[str, tuple[tuple[float, float] | None, tuple[float, float],
                              tuple[float, float]]] = {
    'red': ((-8.0, 6.0), (0.7, 0.95), (0.6, 0.9)),
    'orange': ((22.0, 32.0), (0.8, 1.0), (0.85, 1.0)),
    'yellow': ((48.0, 58.0), (0.75, 1.0), (0.85, 1.0)),
    'green': ((100.0, 145.0), (0.55, 0.9), (0.4, 0.8)),
    'blue': ((208.0, 232.0), (0.65, 0.95), (0.5, 0.9)),
    'purple': ((268.0, 290.0), (0.5, 0.8), (0.4, 0.7)),
    'pink': ((322.0, 342.0), (0.35, 0.55), (0.9, 1.0)),
    'white': (None, (0.0, 0.05), (0.88, 0.98)),
    'black': (None, (0.0, 0.15), (0.06, 0.16)),
    'grey': (None, (0.0, 0.05), (0.45, 0.62)),
    'brown': ((20.0, 32.0), (0.55, 0.8), (0.3, 0.45)),
}
COLOUR_NAMES = tuple(COLOUR_WORDS)


def sample_colour(rng: np.random.Generator, word: str) -> tuple[int, int, int]:
    """Draw an RGB colour that people would call `word`."""
    hue, sat, val = COLOUR_WORDS[word]
    h = rng.uniform(*hue) if hue is not None else rng.uniform(0.0, 360.0)
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, rng.uniform(*sat), rng.uniform(*val))
    return int(round(255 * r)), int(round(255 * g)), int(round(255 * b))


@dataclass(frozen=True)
class KindInfo:
    """A kind's typical size in metres, its shape variants and the colour words it comes in."""

    width: float  # diameter or footprint width
    height: float
    variants: tuple[str, ...]
    colours: tuple[str, ...] = COLOUR_NAMES


FRUIT_RED = ('red', 'green', 'yellow')
KIND_INFO: dict[str, KindInfo] = {
    'cup': KindInfo(0.08, 0.1, ('plain', 'wide', 'paper', 'flared')),
    'mug': KindInfo(0.085, 0.095, ('classic', 'tall', 'squat', 'barrel')),
    'bowl': KindInfo(0.16, 0.07, ('round', 'deep', 'shallow', 'footed')),
    'plate': KindInfo(0.24, 0.022, ('flat', 'rimmed', 'deep', 'square')),
    'bottle': KindInfo(0.07, 0.25, ('water', 'wine', 'squat', 'flask')),
    'can': KindInfo(0.066, 0.12, ('soda', 'tall', 'food', 'ridged')),
    'jar': KindInfo(0.085, 0.12, ('mason', 'round', 'tall', 'bulb')),
    'box': KindInfo(0.2, 0.12, ('carton', 'flat', 'cube', 'long')),
    'ball': KindInfo(0.07, 0.07, ('plain', 'seam', 'band', 'spots')),
    'block': KindInfo(0.05, 0.05, ('cube', 'brick', 'tall', 'plank')),
    'cone': KindInfo(0.08, 0.13, ('traffic', 'party', 'short', 'rounded')),
    'banana': KindInfo(0.19, 0.035, ('curved', 'straight', 'small', 'hooked'),
                       ('yellow', 'green', 'brown')),
    'apple': KindInfo(0.08, 0.075, ('round', 'tall', 'flat', 'leafy'), FRUIT_RED),
    'orange': KindInfo(0.08, 0.075, ('round', 'flat', 'small', 'oval'), ('orange',)),
    'pear': KindInfo(0.07, 0.1, ('classic', 'fat', 'slim', 'long'),
                     ('green', 'yellow', 'brown')),
    'book': KindInfo(0.16, 0.03, ('paperback', 'thick', 'standing', 'slim')),
    'phone': KindInfo(0.075, 0.009, ('flat', 'large', 'small', 'rugged')),
    'marker': KindInfo(0.14, 0.018, ('lying', 'thick', 'capped', 'standing')),
    'sponge': KindInfo(0.1, 0.03, ('slab', 'thick', 'thin', 'cube')),
    'teapot': KindInfo(0.16, 0.13, ('round', 'tall', 'squat', 'wide')),
    'vase': KindInfo(0.1, 0.2, ('amphora', 'cylinder', 'bulb', 'flared')),
}
KINDS = tuple(KIND_INFO)
VOCAB = Vocabulary(KINDS, COLOUR_NAMES)
PLURALS = {'box': 'boxes'}  # every other kind takes an 's'

# Style families: axis -> family -> 'train' | 'held_out'. Shape variants: the last variant of
# every kind is held out (a new proportion, handle, lid or rim of a known kind).
STYLE_SPLIT: dict[str, dict[str, str]] = {
    'table': {'plain': 'train', 'wood': 'train', 'cloth': 'train', 'photo': 'train',
              'tile': 'held_out', 'marble': 'held_out'},
    'shading': {'flat': 'train', 'shaded': 'train', 'glossy': 'train', 'textured': 'train',
                'toon': 'held_out', 'outlined': 'held_out'},
    'camera': {'eye': 'train', 'oblique': 'train', 'top': 'train',
               'low': 'held_out', 'high': 'held_out'},
    'shape': {f'{k}/{v}': 'held_out' if v == info.variants[-1] else 'train'
              for k, info in KIND_INFO.items() for v in info.variants},
}
STYLE_SETS = ('train', 'held_out')

# Camera families: (pitch below horizontal in degrees, camera height above the table in m).
CAMERA_POSES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    'low': ((4.0, 14.0), (0.1, 0.22)),
    'eye': ((14.0, 32.0), (0.2, 0.45)),
    'oblique': ((32.0, 52.0), (0.35, 0.75)),
    'high': ((52.0, 68.0), (0.5, 0.9)),
    'top': ((68.0, 86.0), (0.55, 1.1)),
}

# Surface finishes of object bodies (not a split axis: every finish appears in both sets).
FINISHES = ('plain', 'plain', 'plain', 'dots', 'stripes', 'checks', 'photo', 'metallic',
            'glass')
WALLS = ('plain', 'plain', 'stripes', 'photo', 'photo')


def style_families(axis: str, styles: str) -> tuple[str, ...]:
    """Return the families of an axis that a 'train' or 'held_out' scene may draw from."""
    if styles not in STYLE_SETS:
        raise ValueError(f'unknown styles {styles!r}; use one of {STYLE_SETS}')
    if axis not in STYLE_SPLIT:
        raise ValueError(f'unknown style axis {axis!r}; use one of {tuple(STYLE_SPLIT)}')
    return tuple(name for name, split in STYLE_SPLIT[axis].items() if split == styles)


def kind_variants(kind: str, styles: str) -> tuple[str, ...]:
    """Return the shape variants of a kind that a `styles` scene may draw."""
    return tuple(v for v in KIND_INFO[kind].variants
                 if STYLE_SPLIT['shape'][f'{kind}/{v}'] == styles)

"""Names and constants of the tabletop world: object kinds, colours, tables and classes."""
from __future__ import annotations

from dataclasses import dataclass

# Object kinds, in class-id order after the two stuff classes.
KINDS = ('cup', 'mug', 'bowl', 'bottle', 'can', 'ball', 'box', 'block', 'cone')

# Panoptic classes: stuff first, then one thing class per kind.
STUFF_CLASSES = ('background', 'table')
CLASS_NAMES = STUFF_CLASSES + KINDS
BACKGROUND_CLASS = 0
TABLE_CLASS = 1


def kind_class(kind: str) -> int:
    """Return the panoptic class id of an object kind."""
    return len(STUFF_CLASSES) + KINDS.index(kind)


# Base RGB of each colour name; objects jitter around it a little.
COLOURS: dict[str, tuple[int, int, int]] = {
    'red': (205, 30, 30),
    'green': (40, 160, 60),
    'blue': (35, 75, 200),
    'yellow': (240, 205, 30),
    'orange': (245, 125, 20),
    'purple': (125, 50, 165),
    'pink': (240, 120, 175),
    'white': (236, 236, 230),
    'black': (38, 38, 42),
}
COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Vocabulary:
    """The words of a world: its object kinds (in class-id order) and its colour names."""

    kinds: tuple[str, ...]
    colours: tuple[str, ...]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Panoptic class names: the stuff classes, then one thing class per kind."""
        return STUFF_CLASSES + self.kinds

    def kind_class(self, kind: str) -> int:
        """Return the panoptic class id of an object kind."""
        return len(STUFF_CLASSES) + self.kinds.index(kind)


DEFAULT_VOCAB = Vocabulary(KINDS, COLOUR_NAMES)

PLURALS = {'box': 'boxes', 'cup': 'cups', 'mug': 'mugs', 'bowl': 'bowls', 'bottle': 'bottles',
           'can': 'cans', 'ball': 'balls', 'block': 'blocks', 'cone': 'cones'}


@dataclass(frozen=True)
class KindShape:
    """Unoccluded size of a kind at perspective scale 1 and size 1, in units of min(H, W).

    width/height: extent of the silhouette; fill: silhouette area / (width * height);
    sizes: range of the random size factor of this kind.
    """

    width: float
    height: float
    fill: float
    sizes: tuple[float, float] = (0.8, 1.25)


SHAPES: dict[str, KindShape] = {
    'cup': KindShape(0.12, 0.15, 0.84),
    'mug': KindShape(0.175, 0.135, 0.72),
    'bowl': KindShape(0.24, 0.105, 0.68),
    'bottle': KindShape(0.088, 0.31, 0.70),
    'can': KindShape(0.088, 0.155, 0.96),
    'ball': KindShape(0.12, 0.12, 0.785),
    'box': KindShape(0.24, 0.18, 0.92, (0.85, 1.3)),
    'block': KindShape(0.092, 0.105, 0.90, (0.7, 1.05)),
    'cone': KindShape(0.11, 0.165, 0.58),
}


@dataclass(frozen=True)
class TableStyle:
    """Look of the table top: a name for captions, base RGB and grain strength."""

    name: str
    rgb: tuple[int, int, int]
    grain: float


TABLES = (
    TableStyle('wooden table', (178, 132, 88), 0.10),
    TableStyle('dark wooden table', (104, 70, 46), 0.12),
    TableStyle('light wooden table', (212, 180, 136), 0.08),
    TableStyle('grey table', (136, 138, 140), 0.02),
    TableStyle('white table', (208, 206, 200), 0.015),
    TableStyle('green table', (74, 104, 84), 0.02),
)

NUMBER_WORDS = ('no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
ORDINALS = ('first', 'second', 'third', 'fourth', 'fifth', 'sixth', 'seventh', 'eighth')

"""Scene layouts: what is on the table and where, sampled deterministically from a seed.

Coordinates are resolution independent: x is a fraction of the image width, y a fraction of
the image height (0 = top), and object sizes are fractions of min(H, W). An object stands on
the table with the lowest point of its silhouette at (x, y). Perspective: an object's scale
is p = 0.5 + 0.5 * t where t = (y - horizon) / (1 - horizon), and its depth (distance to the
camera in metres) is 0.5 / p, so nearer objects are lower in the image and larger.
Objects are stored in painter's order: index 0 is the farthest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ros_segcap.world.palette import COLOURS, DEFAULT_VOCAB, KINDS, SHAPES, TABLES, Vocabulary

# Seeds of each split; the ranges never overlap (see split_seed).
SPLITS: dict[str, tuple[int, int]] = {
    'train': (0, 1_000_000),
    'val': (1_000_000, 1_010_000),
    'test': (2_000_000, 2_010_000),
}

# Photo backdrops (names resolved by world.backdrops); 'wall' is a plain painted wall.
BACKDROPS = ('wall', 'wall', 'wall', 'skimage:astronaut', 'skimage:coffee', 'skimage:chelsea',
             'skimage:rocket', 'skimage:camera', 'skimage:brick', 'opencv:fruits.jpg',
             'opencv:building.jpg', 'opencv:home.jpg', 'opencv:baboon.jpg')

MAX_OBJECTS = 8
DEPTH_AT_SCALE_1 = 0.5  # metres
MAX_PAIR_OVERLAP = 0.3  # bbox intersection / bbox area of the farther object, per pair
MAX_TOTAL_OVERLAP = 0.4  # the same, summed over all nearer objects


@dataclass(frozen=True)
class ObjectSpec:
    """One object on the table. Sizes are fractions of min(H, W) at this object's depth."""

    kind: str
    colour: str
    rgb: tuple[int, int, int]  # base colour after a small jitter
    x: float  # base centre, fraction of image width
    y: float  # lowest point of the silhouette, fraction of image height
    size: float  # size factor of this object relative to others of its kind
    scale: float  # perspective * size: multiplies the kind's unit width/height
    depth: float  # distance to the camera in metres
    width: float  # silhouette width, fraction of min(H, W)
    height: float  # silhouette height, fraction of min(H, W)
    area: float  # unoccluded silhouette area, fraction of min(H, W)^2
    flip: bool = False  # mirror the shape (mug handle side, box side face)


@dataclass(frozen=True)
class SceneSpec:
    """Everything needed to render one scene, independent of the image size."""

    seed: int
    objects: tuple[ObjectSpec, ...]  # painter's order, farthest first
    horizon: float  # y of the table's far edge, fraction of H
    table_left: float  # x of the far edge's left end, fraction of W
    table_right: float  # x of the far edge's right end, fraction of W
    table: int  # index into palette.TABLES
    backdrop: str  # one of BACKDROPS
    wall_rgb: tuple[int, int, int]
    light: float  # horizontal light direction in [-1, 1]; negative = light from the left
    noise: float  # sensor noise sigma in grey levels
    texture_phase: float  # offsets the table grain

    @property
    def table_name(self) -> str:
        """Name of the table for captions, e.g. 'wooden table'."""
        return TABLES[self.table].name

    @property
    def vocab(self) -> Vocabulary:
        """The kinds and colour names this world draws from."""
        return DEFAULT_VOCAB


def split_seed(split: str, index: int) -> int:
    """Return the scene seed of sample `index` of a split; raise if the index is out of range."""
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; use one of {tuple(SPLITS)}')
    lo, hi = SPLITS[split]
    if not 0 <= index < hi - lo:
        raise ValueError(f'index {index} is outside split {split!r} (0 <= index < {hi - lo})')
    return lo + index


def seed_split(seed: int) -> str:
    """Return the split a scene seed belongs to, or raise ValueError."""
    for name, (lo, hi) in SPLITS.items():
        if lo <= seed < hi:
            return name
    raise ValueError(f'seed {seed} is in no split {SPLITS}')


def perspective(y: float, horizon: float) -> float:
    """Scale of an object whose base is at height y (fraction of H)."""
    t = (y - horizon) / (1.0 - horizon)
    return 0.5 + 0.5 * float(np.clip(t, 0.0, 1.0))


def table_x_range(spec_horizon: float, left: float, right: float, y: float) -> tuple[float, float]:
    """Left and right x of the table top at height y (the near edge is below the image)."""
    t = (y - spec_horizon) / (1.0 - spec_horizon)
    return left + (-0.25 - left) * t, right + (1.25 - right) * t


def make_object(kind: str, colour: str, rgb: tuple[int, int, int], x: float, y: float,
                size: float, horizon: float, flip: bool = False) -> ObjectSpec:
    """Build an ObjectSpec, deriving scale, depth, extent and area from its position."""
    shape = SHAPES[kind]
    p = perspective(y, horizon)
    scale = p * size
    w, h = shape.width * scale, shape.height * scale
    return ObjectSpec(kind=kind, colour=colour, rgb=rgb, x=x, y=y, size=size, scale=scale,
                      depth=DEPTH_AT_SCALE_1 / p, width=w, height=h, area=w * h * shape.fill,
                      flip=flip)


def _bbox(o: ObjectSpec) -> tuple[float, float, float, float]:
    """Bounding box in the canonical square frame (x1, y1, x2, y2)."""
    return o.x - o.width / 2, o.y - o.height, o.x + o.width / 2, o.y


def _overlap(far: ObjectSpec, near: ObjectSpec) -> float:
    """Fraction of `far`'s box covered by `near`'s box."""
    a, b = _bbox(far), _bbox(near)
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]))


def layout_ok(objects: list[ObjectSpec]) -> bool:
    """Check that every object stays well visible (box overlap limits by depth order)."""
    for a in objects:
        nearer = [b for b in objects if b is not a and b.depth < a.depth]
        covers = [_overlap(a, b) for b in nearer]
        if any(c > MAX_PAIR_OVERLAP for c in covers) or sum(covers) > MAX_TOTAL_OVERLAP:
            return False
        # Objects at the same depth must not intersect at all (they would stand inside each other).
        same = [b for b in objects if b is not a and abs(b.depth - a.depth) < 0.02]
        if any(_overlap(a, b) > 0 for b in same):
            return False
    return True


def _jitter_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """Vary a colour a little; white and black only in brightness, so they stay neutral."""
    base = np.array(COLOURS[colour], dtype=np.int64)
    step = rng.integers(-10, 11, size=3)
    if colour in ('white', 'black'):
        step[:] = step[0]
    out = np.clip(base + step, 0, 255)
    return int(out[0]), int(out[1]), int(out[2])


def _place(rng: np.random.Generator, kind: str, colour: str, horizon: float, left: float,
           right: float, placed: list[ObjectSpec]) -> ObjectSpec | None:
    """Try random positions for one object; return it or None if the table is too full."""
    lo, hi = SHAPES[kind].sizes
    size = float(rng.uniform(lo, hi))
    rgb = _jitter_rgb(rng, colour)
    flip = bool(rng.integers(2))
    for _ in range(40):
        y = float(rng.uniform(horizon + 0.1, 0.95))
        obj = make_object(kind, colour, rgb, 0.5, y, size, horizon, flip)
        xl, xr = table_x_range(horizon, left, right, y)
        xl, xr = max(xl, 0.02) + obj.width / 2, min(xr, 0.98) - obj.width / 2
        if xr <= xl or obj.y - obj.height < 0.02:
            continue
        obj = make_object(kind, colour, rgb, float(rng.uniform(xl, xr)), y, size, horizon, flip)
        if layout_ok(placed + [obj]):
            return obj
    return None


def sample_scene(seed: int, n_objects: int | None = None) -> SceneSpec:
    """Sample a scene deterministically from `seed` (1-8 objects unless n_objects is given)."""
    rng = np.random.default_rng([seed, 7919])
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    if not 0 <= n <= MAX_OBJECTS:
        raise ValueError(f'n_objects must be in [0, {MAX_OBJECTS}], got {n}')
    horizon = float(rng.uniform(0.2, 0.42))
    width = float(rng.uniform(0.55, 1.0))
    centre = float(rng.uniform(0.42, 0.58))
    left, right = centre - width / 2, centre + width / 2
    placed: list[ObjectSpec] = []
    while len(placed) < n:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        colour = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
        obj = _place(rng, kind, colour, horizon, left, right, placed)
        if obj is None:  # the table is full: shrink the request rather than loop forever
            n -= 1
            continue
        placed.append(obj)
    placed.sort(key=lambda o: (-o.depth, o.x))
    wall = tuple(int(v) for v in rng.integers(90, 235, size=3))
    return SceneSpec(seed=seed, objects=tuple(placed), horizon=horizon, table_left=left,
                     table_right=right, table=int(rng.integers(len(TABLES))),
                     backdrop=BACKDROPS[int(rng.integers(len(BACKDROPS)))],
                     wall_rgb=(wall[0], wall[1], wall[2]), light=float(rng.uniform(-1, 1)),
                     noise=float(rng.uniform(1.0, 5.0)),
                     texture_phase=float(rng.uniform(0, 100)))

"""Varied scenes: what is on the table, how it looks and how it is seen, from a seed.

A scene draws every style axis (table material, shading style, camera pose, shape variants)
from either the 'train' or the 'held_out' families of families.STYLE_SPLIT, never both.
Objects keep the fields the referring expressions and captions read (kind, colour, x, y,
depth, area), so world.annotate works on varied scenes unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ros_segcap.world.layout import split_seed
from ros_segcap.world.palette import Vocabulary
import ros_segcap.world.varied.families as fam
from ros_segcap.world.varied.camera import PinholeCamera
from ros_segcap.world.varied.kinds import build, proportions
from ros_segcap.world.varied.sprite import Pose

DENSITIES = {'sparse': (1, 3), 'normal': (3, 7), 'crowded': (8, 14)}
MIN_WIDTH, MAX_WIDTH = 0.012, 1.0 / 3.0  # object width as a fraction of the image width
FRUITS = ('banana', 'apple', 'orange', 'pear')
TEXTURES = ('brick', 'grass', 'gravel', 'coffee', 'chelsea', 'rocket', 'astronaut', 'moon',
            'immunohistochemistry', 'hubble_deep_field', 'coins', 'text')


@dataclass(frozen=True)
class VariedObject:
    """One object: what it is, how it looks and where it stands.

    x, y, width, height and area follow world.layout.ObjectSpec: x is a fraction of the
    image width, y the lowest silhouette point as a fraction of the height, sizes fractions
    of min(H, W) (at the layout's aspect).
    """

    kind: str
    variant: str
    colour: str  # the colour word
    rgb: tuple[int, int, int]
    second_rgb: tuple[int, int, int]  # lids, caps, stripes, dots
    finish: str  # families.FINISHES
    texture: str  # skimage.data image of 'photo' finishes
    pattern_scale: float  # period of dots / stripes / checks in metres
    ground: tuple[float, float]  # (x, z) on the table, metres
    dims: tuple[float, float]  # (width, height) in metres
    yaw: float
    x: float
    y: float
    depth: float  # distance to the camera, metres
    width: float
    height: float
    area: float


@dataclass(frozen=True)
class Lighting:
    """One lamp plus ambient light; the azimuth is 0 for light from behind the camera."""

    azimuth: float  # radians
    elevation: float  # radians above the table
    rgb: tuple[float, float, float]  # multiplicative colour of the light
    ambient: float
    direct: float
    shadows: bool
    softness: float  # shadow blur as a fraction of the image height


@dataclass(frozen=True)
class Effects:
    """Camera effects applied after drawing, in this order."""

    exposure: float  # gain
    white_balance: tuple[float, float, float]  # per-channel gains
    blur: float  # Gaussian sigma in pixels at H = 480
    noise: float  # Gaussian sigma in grey levels
    jpeg: int  # quality, 0 = none


@dataclass(frozen=True)
class VariedSceneSpec:
    """Everything needed to render one varied scene, independent of the image size."""

    seed: int
    styles: str  # 'train' | 'held_out'
    objects: tuple[VariedObject, ...]  # painter's order, farthest first
    camera_family: str
    camera: PinholeCamera
    table_material: str
    table_rgb: tuple[int, int, int]
    table_word: str  # colour word of plain and cloth tables
    table_extent: tuple[float, float, float]  # (x left, x right, z far) in metres
    table_texture: str  # skimage.data image of 'photo' tables
    wall: str  # families.WALLS
    wall_rgb: tuple[int, int, int]
    wall_texture: str
    shading: str
    light: Lighting
    effects: Effects
    density: str

    @property
    def vocab(self) -> Vocabulary:
        """The varied world's kinds and colour words."""
        return fam.VOCAB

    @property
    def horizon(self) -> float:
        """Image row of the table's far edge (fraction of H; 0 when it is above the image)."""
        return float(np.clip(self.camera.project(0.0, self.table_extent[2])[1], 0.0, 0.9))

    @property
    def table_name(self) -> str:
        """Name of the table for captions, e.g. 'wooden table', 'blue tablecloth'."""
        return {'plain': f'{self.table_word} table', 'wood': 'wooden table',
                'cloth': f'{self.table_word} tablecloth', 'photo': 'patterned table',
                'tile': 'tiled table', 'marble': 'marble table'}[self.table_material]

    def family_names(self) -> dict[str, set[str]]:
        """The style family of every axis this scene uses (for the held-out checks)."""
        return {'table': {self.table_material}, 'shading': {self.shading},
                'camera': {self.camera_family},
                'shape': {f'{o.kind}/{o.variant}' for o in self.objects}}


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def object_pose(camera: PinholeCamera, ground: tuple[float, float], yaw: float) -> Pose:
    """The pose under which `camera` sees an object standing at `ground`."""
    return Pose(camera.elevation_sin(*ground), yaw)


def _extent(obj_parts, ppm: float) -> tuple[float, float, float, float]:
    pts = np.vstack([p.pts for p in obj_parts]) * ppm
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _overlap(a: tuple, b: tuple) -> float:
    """Fraction of box a covered by box b."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    return 0.0 if iw <= 0 or ih <= 0 else iw * ih / ((a[2] - a[0]) * (a[3] - a[1]))


def _layout_ok(boxes: list[tuple], depths: list[float], limit: tuple[float, float]) -> bool:
    for i, a in enumerate(boxes):
        covers = [_overlap(a, b) for j, b in enumerate(boxes) if depths[j] < depths[i]]
        if any(c > limit[0] for c in covers) or sum(covers) > limit[1]:
            return False
        if any(_overlap(a, b) > 0 for j, b in enumerate(boxes)
               if j != i and abs(depths[j] - depths[i]) < 0.01):
            return False
    return True


def _look(rng: np.random.Generator, kind: str, styles: str) -> dict:
    info = fam.KIND_INFO[kind]
    colour = _pick(rng, info.colours)
    finishes = ('plain', 'plain', 'photo') if kind in FRUITS else fam.FINISHES
    return dict(kind=kind, variant=_pick(rng, fam.kind_variants(kind, styles)), colour=colour,
                rgb=fam.sample_colour(rng, colour),
                second_rgb=fam.sample_colour(rng, _pick(rng, fam.COLOUR_NAMES)),
                finish=_pick(rng, finishes), texture=_pick(rng, TEXTURES),
                pattern_scale=float(rng.uniform(0.08, 0.3)), yaw=float(rng.uniform(0, 6.283)))


def _place(rng: np.random.Generator, look: dict, cam: PinholeCamera, extent: tuple,
           v_top: float, scale: float) -> Optional[tuple[VariedObject, tuple]]:
    """Try random places for one object; return it with its image box (H units) or None."""
    info = fam.KIND_INFO[look['kind']]
    hf, wf = proportions(look['kind'], look['variant'])
    size = scale * float(rng.uniform(0.75, 1.3))
    for _ in range(25):
        u, v = rng.uniform(0.02, cam.aspect - 0.02), rng.uniform(v_top + 0.02, 0.99)
        gx, gz, hit = (float(a) for a in cam.ground(u, v))
        if not hit or not extent[0] < gx < extent[1] or gz > extent[2]:
            continue
        pose = object_pose(cam, (gx, gz), look['yaw'])
        uc, vc, depth = (float(a) for a in cam.project(gx, gz))
        ppm = cam.focal / depth
        w, h = info.width * wf * size, info.height * hf * size
        x1, y1, x2, y2 = _extent(build(look['kind'], look['variant'], pose, w, h), ppm)
        frac = (x2 - x1) / cam.aspect
        if not MIN_WIDTH <= frac <= MAX_WIDTH:  # resize into the allowed range once
            k = float(np.clip(frac, MIN_WIDTH, MAX_WIDTH)) / max(frac, 1e-9)
            w, h, (x1, y1, x2, y2) = w * k, h * k, (x1 * k, y1 * k, x2 * k, y2 * k)
        box = (uc + x1, vc + y1, uc + x2, vc + y2)
        if box[0] < 0.005 or box[2] > cam.aspect - 0.005 or box[1] < 0.01 or box[3] > 0.999:
            continue
        s = min(1.0, cam.aspect)  # min(H, W) in H units
        bw, bh = (x2 - x1) / s, (y2 - y1) / s
        obj = VariedObject(**look, ground=(gx, gz), dims=(w, h), x=uc / cam.aspect, y=box[3],
                           depth=cam.distance(gx, gz), width=bw, height=bh,
                           area=bw * bh * 0.7)
        return obj, box
    return None


def _scene_style(rng: np.random.Generator, styles: str, aspect: float) -> dict:
    cam_family = _pick(rng, fam.style_families('camera', styles))
    (p0, p1), (h0, h1) = fam.CAMERA_POSES[cam_family]
    fov = np.radians(rng.uniform(42.0, 62.0))
    cam = PinholeCamera(height=float(rng.uniform(h0, h1)), pitch=float(rng.uniform(p0, p1)),
                        focal=float(0.5 / np.tan(fov / 2)), aspect=aspect)
    v_far = float(rng.uniform(-0.4, 0.35) if cam_family == 'top' else rng.uniform(0.05, 0.45))
    v_far = max(v_far, cam.horizon() + 0.04)
    _, z_far, _ = cam.ground(0.5 * aspect, v_far)
    row = max(v_far, 0.0)
    xl, _, _ = cam.ground(aspect * rng.uniform(-0.2, 0.2), row)
    xr, _, _ = cam.ground(aspect * rng.uniform(0.8, 1.2), row)
    table_word = _pick(rng, fam.COLOUR_NAMES)
    wall_word = _pick(rng, fam.COLOUR_NAMES)
    az, el = float(rng.uniform(-np.pi, np.pi)), float(np.radians(rng.uniform(20.0, 80.0)))
    tint = rng.uniform(-0.05, 0.05, size=3)
    light = Lighting(az, el, tuple(float(1.0 + t) for t in tint),
                     ambient=float(rng.uniform(0.45, 0.65)), direct=float(rng.uniform(0.35, 0.6)),
                     shadows=bool(rng.random() < 0.75), softness=float(rng.uniform(0.002, 0.02)))
    wb = rng.uniform(-0.03, 0.03, size=3)
    effects = Effects(exposure=float(rng.uniform(0.85, 1.15)),
                      white_balance=tuple(float(1.0 + w) for w in wb),
                      blur=float(rng.choice([0.0, 0.0, rng.uniform(0.5, 1.8)])),
                      noise=float(rng.uniform(0.0, 6.0)),
                      jpeg=int(rng.choice([0, 0, int(rng.integers(35, 95))])))
    return dict(camera_family=cam_family, camera=cam,
                table_material=_pick(rng, fam.style_families('table', styles)),
                table_rgb=fam.sample_colour(rng, table_word), table_word=table_word,
                table_extent=(float(xl), float(xr), float(z_far)),
                table_texture=_pick(rng, TEXTURES), wall=_pick(rng, fam.WALLS),
                wall_rgb=fam.sample_colour(rng, wall_word), wall_texture=_pick(rng, TEXTURES),
                shading=_pick(rng, fam.style_families('shading', styles)), light=light,
                effects=effects)


def sample_varied_scene(seed: int, styles: str = 'train', *, aspect: float = 4 / 3,
                        n_objects: Optional[int] = None) -> VariedSceneSpec:
    """Sample a varied scene from `seed`, drawing only `styles` ('train' | 'held_out')
    families; deterministic for (seed, styles, aspect, n_objects)."""
    fam.style_families('table', styles)  # raises for unknown style sets
    rng = np.random.default_rng([seed, 48271, fam.STYLE_SETS.index(styles)])
    style = _scene_style(rng, styles, aspect)
    density = _pick(rng, tuple(DENSITIES))
    lo, hi = DENSITIES[density]
    n = int(rng.integers(lo, hi + 1)) if n_objects is None else n_objects
    scale = {'sparse': 1.6, 'normal': 1.0, 'crowded': 0.7}[density] * float(rng.uniform(0.6, 1.6))
    limit = (0.4, 0.55) if density == 'crowded' else (0.3, 0.4)
    cam, v_top = style['camera'], max(style['camera'].project(0.0, style['table_extent'][2])[1],
                                      0.0)
    placed: list[tuple[VariedObject, tuple]] = []
    tries = 0
    while len(placed) < n and tries < 4 * n + 8:
        tries += 1
        look = _look(rng, _pick(rng, fam.KINDS), styles)
        got = _place(rng, look, cam, style['table_extent'], float(v_top), scale)
        if got is not None and _layout_ok([b for _, b in placed] + [got[1]],
                                          [o.depth for o, _ in placed] + [got[0].depth], limit):
            placed.append(got)
    objects = tuple(sorted((o for o, _ in placed), key=lambda o: (-o.depth, o.x)))
    return VariedSceneSpec(seed=seed, styles=styles, objects=objects, density=density, **style)


TRAINING_SPLITS = ('train', 'val')  # splits that only ever see the train families


def sample_varied_split(split: str, index: int, styles: str = 'train', *,
                        aspect: float = 4 / 3) -> VariedSceneSpec:
    """Scene `index` of a split (the seeds of world.SPLITS) in the `styles` families.

    Held-out families are for evaluation: asking for them on a training split raises.
    """
    if styles == 'held_out' and split in TRAINING_SPLITS:
        raise ValueError(f'held-out styles are never drawn for the {split!r} split; '
                         "use split='test' or styles='train'")
    return sample_varied_scene(split_seed(split, index), styles, aspect=aspect)

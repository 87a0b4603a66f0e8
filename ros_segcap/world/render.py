"""Render a SceneSpec at any size: image, panoptic map and exact visible instance masks.

Layers, back to front: backdrop (a photo or a painted wall), the table top (wood grain or a
plain finish, lit from the side, with soft object shadows), the objects in painter's order
(farthest first, so nearer objects occlude farther ones), then sensor noise. Smooth layers
(table texture, light, shadows) are computed at quarter resolution and upsampled, which keeps
a 512x512 frame well under 30 ms on one CPU core.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ros_segcap.world.backdrops import backdrop_photo, fit_photo
from ros_segcap.world.layout import ObjectSpec, SceneSpec
from ros_segcap.world.palette import BACKGROUND_CLASS, TABLE_CLASS, TABLES
from ros_segcap.world.shapes import draw_object

BACKGROUND_ID = 0  # panoptic segment id of the backdrop (stuff)
TABLE_ID = 1  # panoptic segment id of the table top (stuff)
FIRST_OBJECT_ID = 2  # object i of the spec has segment id FIRST_OBJECT_ID + i


@dataclass(frozen=True)
class Scene:
    """A rendered scene and its exact ground truth.

    panoptic: segment id per pixel: BACKGROUND_ID, TABLE_ID, or FIRST_OBJECT_ID + i for
    object i of spec.objects (its visible part after occlusion).
    """

    spec: SceneSpec
    image: np.ndarray  # (H, W, 3) uint8 RGB
    panoptic: np.ndarray  # (H, W) int32 segment ids

    @property
    def objects(self) -> tuple[ObjectSpec, ...]:
        """The objects' attributes (kind, colour, position, depth, size), farthest first."""
        return self.spec.objects

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return self.image.shape[0], self.image.shape[1]

    def mask(self, i: int) -> np.ndarray:
        """Visible mask of object i, (H, W) bool."""
        return self.panoptic == FIRST_OBJECT_ID + i

    def table_mask(self) -> np.ndarray:
        """Visible table top, (H, W) bool."""
        return self.panoptic == TABLE_ID

    def instance_masks(self) -> np.ndarray:
        """Visible masks of all objects, (N, H, W) bool (an object may be empty at tiny sizes)."""
        ids = np.arange(len(self.objects)) + FIRST_OBJECT_ID
        return self.panoptic[None, :, :] == ids[:, None, None]

    def panoptic_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (masks (N, H, W) bool, classes (N,) int64) of all non-empty segments.

        Stuff (background, table) first, then objects in spec order.
        """
        ids = [BACKGROUND_ID, TABLE_ID] + [FIRST_OBJECT_ID + i for i in range(len(self.objects))]
        kind_class = self.spec.vocab.kind_class
        classes = [BACKGROUND_CLASS, TABLE_CLASS] + [kind_class(o.kind) for o in self.objects]
        masks = self.panoptic[None, :, :] == np.array(ids)[:, None, None]
        keep = masks.reshape(len(ids), -1).any(axis=1)
        return masks[keep], np.array(classes, dtype=np.int64)[keep]


def _table_polygon(spec: SceneSpec, height: int, width: int) -> np.ndarray:
    far_y = spec.horizon * height
    near_y = float(height) + 1
    pts = [(spec.table_left * width, far_y), (spec.table_right * width, far_y),
           (1.25 * width, near_y), (-0.25 * width, near_y)]
    return np.round(np.array(pts)).astype(np.int32)


def _backdrop(spec: SceneSpec, height: int, width: int) -> np.ndarray:
    photo = backdrop_photo(spec.backdrop) if spec.backdrop != 'wall' else None
    if photo is not None:
        return fit_photo(photo, height, width)
    ramp = np.linspace(1.05, 0.8, height, dtype=np.float32)[:, None, None]
    wall = np.clip(np.array(spec.wall_rgb, np.float32)[None, None, :] * ramp, 0, 255)
    return np.ascontiguousarray(np.broadcast_to(wall.astype(np.uint8), (height, width, 3)))


def _table_light(spec: SceneSpec, h: int, w: int) -> np.ndarray:
    """Table top colour with grain and light, (h, w, 3) float32 at low resolution."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = (yy + 0.5) / h, (xx + 0.5) / w
    t = np.clip((y - spec.horizon) / (1.0 - spec.horizon), 0.0, 1.0)
    p = 0.5 + 0.5 * t
    wx, wz = (x - 0.5) / p, 1.0 / p  # table-plane coordinates: planks run front to back
    style = TABLES[spec.table]
    phase = spec.texture_phase
    grain = np.sin(23.0 * wx + 1.5 * np.sin(2.0 * wz + phase) + phase)
    grain += 0.4 * np.sin(61.0 * wx + 3.0 * np.sin(5.0 * wz) + 1.7 * phase)
    plank = wx * 4.0 + 0.25 * phase
    seams = np.exp(-((plank - np.round(plank)) / 0.02) ** 2)
    tex = 1.0 + style.grain * grain - 2.5 * min(style.grain, 0.06) * seams
    light = 0.85 + 0.2 * t + 0.12 * spec.light * (x - 0.5)
    sheen = 0.12 * np.exp(-(((x - 0.5 - 0.3 * spec.light) / 0.25) ** 2 + ((t - 0.45) / 0.3) ** 2))
    shade = (tex * light + sheen)[..., None]
    return np.array(style.rgb, np.float32)[None, None, :] * shade


def _shadows(spec: SceneSpec, h: int, w: int, s: float) -> np.ndarray:
    """Multiplicative shadow map (h, w) float32 at low resolution (1 = unshadowed)."""
    occ = np.zeros((h, w), np.float32)
    for o in spec.objects:
        ow, oh = o.width * s / 4.0, o.height * s / 4.0
        cx = o.x * w - spec.light * 0.45 * ow
        cy = o.y * h - 0.08 * oh
        ax, ay = 0.5 * ow + 0.25 * oh * abs(spec.light), max(0.16 * ow, 1.0)
        cv2.ellipse(occ, (int(cx), int(cy)), (max(int(ax), 1), max(int(ay), 1)), 0, 0, 360,
                    0.55, -1)
    k = max(3, int(s / 4.0 * 0.025) | 1)
    occ = cv2.GaussianBlur(occ, (k, k), 0)
    return 1.0 - occ


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
    """Add zero-mean sensor noise to a uint8 image in place (difference of two k-bit draws)."""
    bits = 2 if sigma < 2.0 else 3 if sigma < 4.0 else 4
    r = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
    m = np.uint8((1 << bits) - 1)
    cv2.add(image, r & m, dst=image)
    cv2.subtract(image, (r >> 4) & m, dst=image)


def _paste(image: np.ndarray, panoptic: np.ndarray, o: ObjectSpec, seg_id: int,
           spec: SceneSpec) -> None:
    """Draw one object at its place, clipped to the image."""
    height, width = panoptic.shape
    s = min(height, width)
    w_px, h_px = max(int(round(o.width * s)), 2), max(int(round(o.height * s)), 2)
    x0 = int(round(o.x * width - w_px / 2))
    y0 = int(round(o.y * height)) - h_px
    t = (o.y - spec.horizon) / (1.0 - spec.horizon)
    mask, rgb = draw_object(o.kind, h_px, w_px, o.rgb, spec.light, 0.12 + 0.26 * t, o.flip)
    ix0, iy0 = max(x0, 0), max(y0, 0)
    ix1, iy1 = min(x0 + w_px, width), min(y0 + h_px, height)
    if ix1 <= ix0 or iy1 <= iy0:
        return
    m = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    cv2.copyTo(rgb[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0], m, image[iy0:iy1, ix0:ix1])
    panoptic[iy0:iy1, ix0:ix1][m.astype(bool)] = seg_id


def render(spec: SceneSpec, height: int, width: int, *, noise: bool = True,
           noise_seed: Optional[int] = None) -> Scene:
    """Render `spec` at (height, width) pixels; deterministic for a given noise_seed.

    noise_seed defaults to the scene seed, so render(spec, H, W) is a pure function.
    """
    if height < 16 or width < 16:
        raise ValueError(f'image size must be at least 16x16, got {width}x{height}')
    s = float(min(height, width))
    lh, lw = (height + 3) // 4, (width + 3) // 4
    table_low = _table_light(spec, lh, lw) * _shadows(spec, lh, lw, s)[..., None]
    table = cv2.resize(np.clip(table_low, 0, 255).astype(np.uint8), (width, height),
                       interpolation=cv2.INTER_LINEAR)
    on_table = np.zeros((height, width), np.uint8)
    cv2.fillPoly(on_table, [_table_polygon(spec, height, width)], 1)
    panoptic = on_table.astype(np.int32) * TABLE_ID
    image = _backdrop(spec, height, width)
    cv2.copyTo(table, on_table, image)
    for i, o in enumerate(spec.objects):
        _paste(image, panoptic, o, FIRST_OBJECT_ID + i, spec)
    if noise:
        seed = spec.seed if noise_seed is None else noise_seed
        add_noise(image, spec.noise, np.random.default_rng([seed, 104729]))
    return Scene(spec=spec, image=image, panoptic=panoptic)

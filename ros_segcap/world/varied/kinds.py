"""The varied world's object kinds and their shape variants, built as sprite parts.

Each builder takes the variant name, the pose and the object's width and height in metres
(width = diameter or footprint width) and appends Parts. Profiles are (t, r) control points,
t = 0 at the top and r relative to the widest radius.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ros_segcap.world.varied.sprite import (BODY, DARK, INSIDE, LEAF, METAL, SECOND, STEM,
                                            Part, Pose, cuboid, ellipse, revolve, rod, stroke)

Builder = Callable[[list, str, Pose, float, float], None]

# (profile t, profile r, open top, height factor, width factor) per kind/variant
PROFILES: dict[str, tuple[tuple, tuple, bool, float, float]] = {
    'cup/plain': ((0, 1), (1, 0.7), True, 1.0, 1.0),
    'cup/wide': ((0, 1), (1, 0.8), True, 0.75, 1.15),
    'cup/paper': ((0, 1), (1, 0.65), True, 1.3, 0.9),
    'cup/flared': ((0, 0.08, 1), (1, 0.8, 0.5), True, 1.1, 1.0),
    'mug/classic': ((0, 1), (1, 1), True, 1.0, 1.0),
    'mug/tall': ((0, 1), (1, 1), True, 1.4, 0.9),
    'mug/squat': ((0, 1), (1, 1), True, 0.7, 1.2),
    'mug/barrel': ((0, 0.5, 1), (0.85, 1, 0.85), True, 1.05, 1.0),
    'bowl/round': ((0, 0.4, 0.7, 1), (1, 0.92, 0.75, 0.45), True, 1.0, 1.0),
    'bowl/deep': ((0, 0.5, 0.8, 1), (1, 0.95, 0.8, 0.5), True, 1.5, 0.85),
    'bowl/shallow': ((0, 0.5, 1), (1, 0.85, 0.55), True, 0.6, 1.2),
    'bowl/footed': ((0, 0.5, 0.8, 0.85, 1), (1, 0.85, 0.5, 0.32, 0.4), True, 1.2, 1.0),
    'plate/flat': ((0, 0.6, 1), (1, 0.95, 0.7), True, 1.0, 1.0),
    'plate/rimmed': ((0, 0.3, 1), (1, 0.8, 0.65), True, 1.2, 1.0),
    'plate/deep': ((0, 0.5, 1), (1, 0.85, 0.6), True, 2.2, 0.9),
    'bottle/water': ((0, 0.1, 0.2, 0.35, 1), (0.3, 0.3, 0.32, 1, 1), False, 1.0, 1.0),
    'bottle/wine': ((0, 0.1, 0.4, 0.55, 1), (0.22, 0.22, 0.25, 1, 1), False, 1.25, 0.95),
    'bottle/squat': ((0, 0.12, 0.25, 0.45, 1), (0.35, 0.35, 0.4, 1, 0.95), False, 0.7, 1.2),
    'bottle/flask': ((0, 0.12, 0.2, 0.6, 1), (0.3, 0.3, 0.4, 1, 0.8), False, 0.9, 1.3),
    'can/soda': ((0, 0.05, 0.95, 1), (0.9, 1, 1, 0.9), False, 1.0, 1.0),
    'can/tall': ((0, 0.05, 0.95, 1), (0.9, 1, 1, 0.9), False, 1.4, 0.85),
    'can/food': ((0, 1), (1, 1), False, 0.85, 1.35),
    'can/ridged': ((0, 0.25, 0.27, 0.5, 0.52, 0.75, 0.77, 1), (1, 1, 0.95, 0.95, 1, 1, 0.95,
                                                               0.95), False, 1.0, 1.1),
    'jar/mason': ((0, 0.12, 0.18, 1), (0.85, 0.85, 1, 1), False, 1.0, 1.0),
    'jar/round': ((0, 0.15, 0.25, 0.6, 1), (0.75, 0.75, 0.95, 1, 0.8), False, 0.9, 1.1),
    'jar/tall': ((0, 0.1, 0.14, 1), (0.9, 0.9, 1, 1), False, 1.5, 0.85),
    'jar/bulb': ((0, 0.12, 0.2, 0.65, 1), (0.6, 0.6, 0.8, 1, 0.55), False, 1.1, 1.1),
    'ball/plain': ((), (), False, 1.0, 1.0),
    'cone/traffic': ((0, 0.1, 0.9, 1), (0.12, 0.2, 0.9, 1), False, 1.0, 1.0),
    'cone/party': ((0, 1), (0.02, 1), False, 1.5, 0.75),
    'cone/short': ((0, 1), (0.05, 1), False, 0.65, 1.2),
    'cone/rounded': ((0, 0.05, 0.2, 1), (0.0, 0.25, 0.38, 1), False, 1.1, 1.0),
    'apple/round': ((0, 0.1, 0.45, 0.85, 1), (0.55, 0.85, 1, 0.8, 0.45), False, 1.0, 1.0),
    'apple/tall': ((0, 0.1, 0.4, 0.85, 1), (0.5, 0.8, 1, 0.75, 0.4), False, 1.25, 0.9),
    'apple/flat': ((0, 0.15, 0.5, 0.85, 1), (0.6, 0.9, 1, 0.85, 0.5), False, 0.75, 1.1),
    'apple/leafy': ((0, 0.1, 0.45, 0.85, 1), (0.5, 0.9, 1, 0.85, 0.5), False, 0.95, 1.05),
    'orange/round': ((0, 0.08, 0.5, 0.92, 1), (0.35, 0.7, 1, 0.7, 0.35), False, 1.0, 1.0),
    'orange/flat': ((0, 0.1, 0.5, 0.9, 1), (0.45, 0.78, 1, 0.78, 0.45), False, 0.8, 1.1),
    'orange/small': ((0, 0.08, 0.5, 0.92, 1), (0.35, 0.7, 1, 0.7, 0.35), False, 0.75, 0.75),
    'orange/oval': ((0, 0.1, 0.5, 0.9, 1), (0.3, 0.62, 1, 0.62, 0.3), False, 1.3, 0.9),
    'pear/classic': ((0, 0.15, 0.45, 0.75, 0.92, 1), (0.2, 0.4, 0.6, 1, 0.9, 0.5), False,
                     1.0, 1.0),
    'pear/fat': ((0, 0.15, 0.4, 0.7, 0.92, 1), (0.3, 0.5, 0.75, 1, 0.9, 0.55), False, 0.9,
                 1.2),
    'pear/slim': ((0, 0.2, 0.5, 0.78, 0.94, 1), (0.18, 0.32, 0.5, 1, 0.85, 0.45), False, 1.1,
                  0.85),
    'pear/long': ((0, 0.3, 0.6, 0.82, 0.95, 1), (0.15, 0.25, 0.45, 1, 0.85, 0.45), False, 1.4,
                  0.9),
    'teapot/round': ((0, 0.06, 0.12, 0.5, 0.9, 1), (0.25, 0.3, 0.75, 1, 0.85, 0.6), False,
                     1.0, 1.0),
    'teapot/tall': ((0, 0.06, 0.12, 0.6, 0.92, 1), (0.22, 0.3, 0.65, 0.9, 1, 0.8), False,
                    1.4, 0.85),
    'teapot/squat': ((0, 0.08, 0.2, 0.6, 0.9, 1), (0.3, 0.35, 0.85, 1, 0.85, 0.6), False,
                     0.75, 1.15),
    'teapot/wide': ((0, 0.06, 0.15, 0.7, 1), (0.3, 0.35, 0.9, 1, 0.9), False, 0.85, 1.25),
    'vase/amphora': ((0, 0.1, 0.4, 0.75, 1), (0.6, 0.45, 0.6, 1, 0.6), True, 1.0, 1.0),
    'vase/cylinder': ((0, 1), (0.8, 0.8), True, 1.1, 0.85),
    'vase/bulb': ((0, 0.25, 0.7, 1), (0.4, 0.45, 1, 0.7), True, 0.9, 1.15),
    'vase/flared': ((0, 0.3, 0.8, 1), (1, 0.45, 0.55, 0.6), True, 1.1, 1.0),
}
BANDS: dict[str, tuple] = {
    'bottle': ((0.0, 0.1, SECOND),), 'jar/mason': ((0.01, 0.12, METAL),),
    'jar': ((0.01, 0.12, SECOND),), 'can': ((0.01, 0.05, METAL), (0.95, 1.0, METAL)),
    'can/food': ((0.01, 0.04, METAL), (0.96, 1.0, METAL)),
    'cone/traffic': ((0.3, 0.5, SECOND),), 'teapot': ((0.0, 0.12, BODY),),
}
SPHERE_T = np.linspace(0.0, 1.0, 15)
SPHERE_R = np.sqrt(np.clip(1.0 - (2.0 * SPHERE_T - 1.0) ** 2, 0.0, 1.0))


def _side(pose: Pose) -> tuple[float, bool]:
    """Screen x direction of a handle/spout at the object's yaw and whether it is in front."""
    return float(np.cos(pose.yaw)), bool(np.sin(pose.yaw) > 0)


def _handle(parts: list, pose: Pose, r: float, h: float, size: float, mat: int = BODY) -> None:
    cx, _ = _side(pose)
    ax = max(abs(cx), 0.15) * size * r
    arc = ellipse(r * cx, -0.5 * h * pose.cos_e, ax, 0.32 * h * max(pose.cos_e, 0.3),
                  -90.0 if cx >= 0 else 90.0, 90.0 if cx >= 0 else 270.0, 20)
    stroke(parts, arc, 0.18 * r, mat, normal=(float(np.sign(cx)) * 0.5, 0.3, 0.8))


def _revolved(parts: list, kind: str, variant: str, pose: Pose, w: float, h: float) -> None:
    key = f'{kind}/{variant}'
    ts, rs, open_top, _, _ = PROFILES.get(key, PROFILES.get(f'{kind}/plain'))
    if kind == 'ball':
        ts, rs = SPHERE_T, SPHERE_R
    bands = BANDS.get(key, BANDS.get(kind, ()))
    extras_behind = kind in ('mug', 'teapot') and not _side(pose)[1]
    if extras_behind:
        _extras(parts, kind, variant, pose, w, h)
    revolve(parts, pose, h, w / 2, ts, rs, open_top=open_top, bands=bands)
    if not extras_behind:
        _extras(parts, kind, variant, pose, w, h)


def _extras(parts: list, kind: str, variant: str, pose: Pose, w: float, h: float) -> None:
    """Handles, spouts, stems, leaves and ball seams."""
    r, top = w / 2, -h * pose.cos_e
    if kind == 'mug':
        _handle(parts, pose, r, h, 0.55)
    elif kind == 'teapot':
        cx, _ = _side(pose)
        _handle(parts, pose, r, h, 0.45)
        sx = -cx * r
        spout = np.array([(sx, -0.3 * h * pose.cos_e), (sx - cx * 0.55 * r, top * 0.9),
                          (sx - cx * 0.62 * r, top * 0.8), (sx, -0.55 * h * pose.cos_e)])
        parts.append(Part(spout, BODY, normal=(-cx * 0.6, 0.4, 0.7)))
        parts.append(Part(ellipse(0, top - 0.04 * h * pose.cos_e, 0.1 * r,
                                  0.1 * r * max(pose.sin_e, 0.5)), SECOND))
    elif kind in ('apple', 'pear'):
        stem = np.array([(0.0, top + 0.02 * h),
                         (0.04 * r, top - 0.12 * h * pose.cos_e - 0.02 * h)])
        stroke(parts, stem, 0.07 * r, STEM)
        if variant in ('leafy', 'long'):
            parts.append(Part(ellipse(0.18 * r, top - 0.1 * h * pose.cos_e, 0.2 * r, 0.08 * r),
                              LEAF))
    elif kind == 'ball' and variant != 'plain':
        cy = -r * pose.cos_e
        if variant == 'seam':
            stroke(parts, ellipse(0, cy, 0.55 * r, 0.9 * r, -70, 70, 12), 0.08 * r, SECOND)
        elif variant == 'band':
            parts.append(Part(ellipse(0, cy, 0.98 * r, 0.15 * r), SECOND, (0.0, 0.3, 0.95)))
        else:
            for dx, dy in ((0, 0), (-0.55, -0.35), (0.55, -0.35), (0.0, 0.6)):
                parts.append(Part(ellipse(dx * r, cy + dy * r, 0.22 * r, 0.22 * r), SECOND,
                                  (dx * 0.6, -dy * 0.6, 0.7)))


# box-like kinds: (width, depth, height) factors per variant; the kind's height is h
BOXES: dict[str, tuple[float, float, float]] = {
    'box/carton': (1, 0.7, 1), 'box/flat': (1.1, 0.8, 0.45), 'box/cube': (0.8, 0.8, 1.3),
    'box/long': (1.4, 0.45, 0.7),
    'block/cube': (1, 1, 1), 'block/brick': (1.6, 0.8, 0.8), 'block/tall': (0.8, 0.8, 1.7),
    'block/plank': (2.2, 0.6, 0.45),
    'book/paperback': (1, 1.4, 1), 'book/thick': (1, 1.35, 2.0), 'book/standing': (1, 0.25, 7),
    'book/slim': (0.75, 1.2, 0.5),
    'phone/flat': (1, 2.0, 1), 'phone/large': (1.15, 2.2, 0.9), 'phone/small': (0.8, 1.6, 1.4),
    'phone/rugged': (1.1, 2.0, 2.2),
    'sponge/slab': (1, 0.65, 1), 'sponge/thick': (1, 0.65, 1.6), 'sponge/thin': (1.1, 0.7, 0.6),
    'sponge/cube': (0.6, 0.6, 2.0),
    'plate/square': (1, 1, 1),
}


def _boxy(parts: list, kind: str, variant: str, pose: Pose, w: float, h: float) -> None:
    fw, fd, fh = BOXES[f'{kind}/{variant}']
    bw, bd, bh = w * fw, w * fd, h * fh
    if kind == 'sponge':  # a scrub layer of the second colour under the body
        cuboid(parts, pose, bw, bd, 0.3 * bh, yaw=pose.yaw, mat=SECOND)
        cuboid(parts, pose, bw, bd, 0.7 * bh, yaw=pose.yaw, y0=-0.3 * bh * pose.cos_e)
        return
    cuboid(parts, pose, bw, bd, bh, yaw=pose.yaw)
    if kind == 'phone':  # a dark screen inset in the top face
        cuboid(parts, pose, 0.6 * bw, 0.7 * bd, 0.02 * bh, yaw=pose.yaw, mat=DARK,
               y0=-bh * pose.cos_e)
    if kind == 'book' and variant != 'standing':  # pages: a pale band along the front face
        cuboid(parts, pose, 0.96 * bw, 0.96 * bd, 0.7 * bh, yaw=pose.yaw, mat=SECOND,
               top_mat=BODY, y0=-0.15 * bh * pose.cos_e)
        cuboid(parts, pose, bw, bd, 0.15 * bh, yaw=pose.yaw, y0=-0.85 * bh * pose.cos_e)


def _banana(parts: list, variant: str, pose: Pose, w: float, h: float) -> None:
    bend = {'curved': 0.9, 'straight': 0.35, 'small': 0.8, 'hooked': 1.5}[variant]
    length = w * (0.7 if variant == 'small' else 1.0)
    s = np.linspace(-0.5, 0.5, 24)
    a = s * bend * 2.0
    xs, zs = length * np.sin(a) / max(bend * 2, 1e-6), length * (1 - np.cos(a)) / (bend * 2)
    c, sn = np.cos(pose.yaw), np.sin(pose.yaw)
    xr, zr = xs * c - zs * sn, xs * sn + zs * c
    rs = h / 2 * np.clip(np.sin(np.pi * (s + 0.5)) ** 0.5, 0.25, 1.0)
    rod(parts, pose, xr, zr, rs)
    tip = np.array([(xr[-1], -rs[-1] * pose.cos_e + zr[-1] * pose.sin_e)])
    parts.append(Part(ellipse(tip[0, 0], tip[0, 1], 0.3 * h, 0.3 * h, n=10), STEM))


def _marker(parts: list, variant: str, pose: Pose, w: float, h: float) -> None:
    if variant == 'standing':
        revolve(parts, pose, w * 0.9, h * 0.55, (0, 0.05, 0.3, 1), (0.5, 0.8, 1, 1),
                bands=((0.0, 0.3, SECOND),))
        return
    radius = h / 2 * (1.5 if variant == 'thick' else 1.0)
    s = np.linspace(-0.5, 0.5, 8)
    c, sn = np.cos(pose.yaw), np.sin(pose.yaw)
    xs, zs = w * s * c, w * s * sn
    rod(parts, pose, xs, zs, np.full(8, radius))
    cap = 0.35 if variant == 'capped' else 0.25
    k = s >= 0.5 - cap
    rod(parts, pose, xs[k], zs[k], np.full(int(k.sum()), radius * 1.08), mat=SECOND)


def build(kind: str, variant: str, pose: Pose, width: float, height: float) -> list[Part]:
    """Return the parts of one object of `kind`/`variant`, `width` x `height` metres."""
    parts: list[Part] = []
    if kind == 'banana':
        _banana(parts, variant, pose, width, height)
    elif kind == 'marker':
        _marker(parts, variant, pose, width, height)
    elif f'{kind}/{variant}' in BOXES:
        _boxy(parts, kind, variant, pose, width, height)
    else:
        _revolved(parts, kind, variant, pose, width, height)
        if kind == 'cone' and variant == 'traffic':  # a square foot under the cone
            foot: list[Part] = []
            cuboid(foot, pose, 1.15 * width, 1.15 * width, 0.06 * height, yaw=pose.yaw)
            parts = foot + parts
    return parts


def proportions(kind: str, variant: str) -> tuple[float, float]:
    """Return the (height, width) factors of a variant relative to its kind's typical size."""
    key = f'{kind}/{variant}'
    if key in PROFILES:
        return PROFILES[key][3], PROFILES[key][4]
    return 1.0, 1.0


__all__ = ['build', 'proportions', 'BODY', 'DARK', 'INSIDE', 'LEAF', 'METAL', 'SECOND', 'STEM']

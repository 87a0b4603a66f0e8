"""Object geometry as screen-space parts, rasterised into a sprite with normals and materials.

A kind is built as a list of Parts: polygons in screen metres (x right, y down, origin at the
object's base centre) seen from a view elevation e, each with a material and a surface normal
in the view frame (x right, y up, z towards the camera). Solids of revolution are stacks of
bands, each ending in the lower half of its level's ellipse, so a cup seen from above shows
its round rim and from the side its profile. The rasteriser keeps, per pixel, the material,
the normal and texture coordinates, so colouring (shading style, finish) is a separate step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

BODY, SECOND, INSIDE, METAL, DARK, STEM, LEAF = range(7)
SHIFT = 4  # sub-pixel bits of polygon vertices
UP = (0.0, 1.0, 0.0)


@dataclass(frozen=True)
class Pose:
    """How the camera sees an object: view elevation and the object's yaw about its axis."""

    sin_e: float  # sine of the view elevation (0: side view, 1: from straight above)
    yaw: float  # radians; rotates handles, spouts, box faces

    @property
    def cos_e(self) -> float:
        """Cosine of the view elevation."""
        return float(np.sqrt(max(0.0, 1.0 - self.sin_e ** 2)))


@dataclass(frozen=True)
class Part:
    """One polygon. A cylinder band (cyl) has a normal that varies across its width."""

    pts: np.ndarray  # (N, 2) screen metres
    mat: int
    normal: tuple[float, float, float] = UP
    cyl: Optional[tuple[float, float, float, float]] = None  # (x centre, radius, n_h, n_up)


def ellipse(cx: float, cy: float, ax: float, ay: float, a0: float = 0.0, a1: float = 360.0,
            n: int = 28) -> np.ndarray:
    """Points of an ellipse arc, angles in degrees clockwise from +x (0..180: lower half)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def revolve(parts: list[Part], pose: Pose, height: float, radius: float, ts, rs, *,
            open_top: bool = False, bands: tuple = (), mat: int = BODY, x0: float = 0.0,
            y0: float = 0.0, levels: int = 14) -> None:
    """Append a solid of revolution standing at (x0, y0): radius(t) = radius * interp(t, ts, rs),
    t = 0 at the top, 1 at the base. bands: ((t0, t1, mat), ...) overrides the material."""
    t = np.union1d(np.linspace(0.0, 1.0, levels), np.asarray(ts, float))
    r = radius * np.interp(t, ts, rs)
    z = (1.0 - t) * height
    yc, ry = y0 - z * pose.cos_e, r * pose.sin_e

    def mat_at(tm: float) -> int:
        return next((m for a, b, m in bands if a <= tm <= b), mat)

    for k in range(len(t) - 2, -1, -1):
        g = (r[k + 1] - r[k]) / max(z[k] - z[k + 1], 1e-6)  # widening downwards: faces up
        n_h, n_up = 1.0 / np.hypot(1.0, g), g / np.hypot(1.0, g)
        pts = np.vstack([[(x0 - r[k], yc[k]), (x0 + r[k], yc[k])],
                         ellipse(x0, yc[k + 1], r[k + 1], ry[k + 1], 0.0, 180.0, 16)])
        parts.append(Part(pts, mat_at(0.5 * (t[k] + t[k + 1])),
                          cyl=(x0, max(r[k], r[k + 1], 1e-6), n_h, n_up)))
    if r[0] < 0.02 * radius:
        return
    top = mat_at(0.0)
    parts.append(Part(ellipse(x0, yc[0], r[0], ry[0]), top))
    if open_top:
        parts.append(Part(ellipse(x0, yc[0] + 0.08 * ry[0], 0.88 * r[0], 0.8 * ry[0]), INSIDE,
                          normal=(0.0, 0.8, 0.0)))


def cuboid(parts: list[Part], pose: Pose, w: float, d: float, h: float, *, yaw: float = 0.0,
           mat: int = BODY, top_mat: Optional[int] = None, x0: float = 0.0,
           y0: float = 0.0) -> None:
    """Append the visible faces of a w x d x h box (footprint centred at x0, y0)."""
    c, s = np.cos(yaw), np.sin(yaw)

    def screen(x: float, y: float, z: float) -> tuple[float, float]:
        xr, zr = x * c - z * s, x * s + z * c
        return x0 + xr, y0 - y * pose.cos_e + zr * pose.sin_e

    for nx, nz in ((1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)):
        nxr, nzr = nx * c - nz * s, nx * s + nz * c
        if nzr <= 1e-6:
            continue  # faces away from the camera
        px, pz = nx * w / 2, nz * d / 2
        ex, ez = (0.0, d / 2) if nx else (w / 2, 0.0)
        quad = [screen(px - ex, 0, pz - ez), screen(px + ex, 0, pz + ez),
                screen(px + ex, h, pz + ez), screen(px - ex, h, pz - ez)]
        parts.append(Part(np.array(quad), mat, normal=(nxr, 0.0, nzr)))
    if pose.sin_e > 0.02:
        quad = [screen(-w / 2, h, -d / 2), screen(w / 2, h, -d / 2), screen(w / 2, h, d / 2),
                screen(-w / 2, h, d / 2)]
        parts.append(Part(np.array(quad), mat if top_mat is None else top_mat))


def rod(parts: list[Part], pose: Pose, xs, zs, rs, *, mat: int = BODY,
        y0: float = 0.0) -> None:
    """Append a body lying on the table along the ground curve (xs, zs) with radii rs."""
    xs, zs, rs = (np.asarray(v, float) for v in (xs, zs, rs))
    sx, sy = xs, y0 - rs * pose.cos_e + zs * pose.sin_e
    dx, dy = np.gradient(sx), np.gradient(sy)
    norm = np.maximum(np.hypot(dx, dy), 1e-9)
    px, py = -dy / norm, dx / norm
    if py.mean() > 0:  # left side first means the upper edge first
        px, py = -px, -py
    upper = np.stack([sx + px * rs, sy + py * rs], axis=1)
    lower = np.stack([sx - px * rs, sy - py * rs], axis=1)
    parts.append(Part(np.vstack([upper, lower[::-1]]), mat, normal=(0.0, 0.35, 0.94)))
    ridge = np.stack([sx + px * 0.55 * rs, sy + py * 0.55 * rs], axis=1)
    mid = np.stack([sx - px * 0.05 * rs, sy - py * 0.05 * rs], axis=1)
    parts.append(Part(np.vstack([ridge, mid[::-1]]), mat, normal=(0.0, 0.9, 0.44)))


def stroke(parts: list[Part], pts: np.ndarray, width: float, mat: int,
           normal: tuple[float, float, float] = (0.0, 0.3, 0.95)) -> None:
    """Append a thick polyline (handles, stems) as one polygon."""
    d = np.gradient(pts, axis=0)
    length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    n = np.stack([-d[:, 1], d[:, 0]], axis=1) / length
    half = width / 2
    parts.append(Part(np.vstack([pts + half * n, (pts - half * n)[::-1]]), mat, normal=normal))


@dataclass
class Sprite:
    """A rasterised object: mask, material and view-frame normals per pixel.

    anchor: pixel (x, y) of the base centre inside the sprite.
    """

    mask: np.ndarray  # (h, w) uint8 0/1
    mat: np.ndarray  # (h, w) uint8
    normal: np.ndarray  # (h, w, 3) float32
    tex: np.ndarray  # (h, w, 2) float32 texture coordinates in metres
    anchor: tuple[float, float]
    ppm: float  # pixels per metre


def rasterise(parts: list[Part], ppm: float) -> Sprite:
    """Draw the parts in order (later parts cover earlier ones) at ppm pixels per metre."""
    allpts = np.vstack([p.pts for p in parts])
    lo = allpts.min(axis=0)
    w = max(int(np.ceil((allpts[:, 0].max() - lo[0]) * ppm)) + 1, 1)
    h = max(int(np.ceil((allpts[:, 1].max() - lo[1]) * ppm)) + 1, 1)
    mask = np.zeros((h, w), np.uint8)
    mat = np.zeros((h, w), np.uint8)
    normal = np.zeros((h, w, 3), np.float32)
    tex = np.zeros((h, w, 2), np.float32)
    for p in parts:
        px = (p.pts - lo) * ppm
        x1, y1 = np.floor(px.min(axis=0)).astype(int)
        x2, y2 = np.ceil(px.max(axis=0)).astype(int) + 1
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if x2 <= x1 or y2 <= y1:
            continue
        sub = np.zeros((y2 - y1, x2 - x1), np.uint8)
        fixed = np.round((px - (x1, y1)) * (1 << SHIFT)).astype(np.int32)
        cv2.fillPoly(sub, [fixed], 1, cv2.LINE_8, SHIFT)
        ys, xs = np.nonzero(sub)
        if len(xs) == 0:
            continue
        ys, xs = ys + y1, xs + x1
        mx, my = xs / ppm + lo[0], ys / ppm + lo[1]  # pixel centres back in metres
        mask[ys, xs] = 1
        mat[ys, xs] = p.mat
        if p.cyl is None:
            normal[ys, xs] = p.normal
            tex[ys, xs, 0] = mx
        else:
            xc, r, n_h, n_up = p.cyl
            u = np.clip((mx - xc) / r, -1.0, 1.0)
            normal[ys, xs] = np.stack([u * n_h, np.full_like(u, n_up),
                                       np.sqrt(1.0 - u * u) * n_h], axis=1)
            tex[ys, xs, 0] = xc + r * np.arcsin(u)  # unrolled around the body
        tex[ys, xs, 1] = my
    return Sprite(mask, mat, normal, tex, (float(-lo[0] * ppm), float(-lo[1] * ppm)), ppm)

"""Silhouettes and shading of the object kinds, drawn into a small local canvas.

Every kind is drawn so that its silhouette reads as what it is called: a cup is tapered with
an open rim, a mug is a straight cylinder with a handle, a bowl is a wide low half-ellipse, a
bottle has shoulders, a neck and a cap, a can is a straight cylinder with a metal lid, a ball
is a shaded sphere, a box is a wide cuboid with a taped top, a block is a small cube with an
inset panel, a cone is a shaded cone on an elliptic base.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

METAL = np.array([186.0, 188.0, 194.0], dtype=np.float32)
SHIFT = 4  # fractional bits of polygon vertices: drawing is sub-pixel precise
SUB = 1 << SHIFT


class Canvas:
    """A local (h, w) drawing area: a uint8 silhouette mask and a float32 RGB colour."""

    def __init__(self, h: int, w: int, rgb: tuple[int, int, int], light: float, tilt: float):
        """Start an empty canvas; light in [-1, 1], tilt = rim ellipse height / width."""
        self.h, self.w = h, w
        self.rgb = np.array(rgb, dtype=np.float32)
        self.light = light
        self.tilt = tilt
        self.mask = np.zeros((h, w), np.uint8)
        self.colour = np.zeros((h, w, 3), np.float32)
        self._part = np.zeros((h, w), np.uint8)

    def cylinder(self, x0: float, x1: float, gain: float = 1.0,
                 rgb: np.ndarray | None = None, inside: bool = False) -> np.ndarray:
        """Return a (1, w, 3) row shaded like a vertical cylinder spanning x0..x1.

        inside=True shades the inner wall (lit on the side away from the light).
        """
        xs = np.arange(self.w, dtype=np.float32) + 0.5
        u = np.clip((xs - (x0 + x1) / 2) / max((x1 - x0) / 2, 1.0), -1.0, 1.0)
        u = -u if inside else u
        lx = 0.75 * self.light
        lam = np.maximum(0.0, u * lx + np.sqrt(1.0 - u * u) * 0.8)
        spec = 90.0 * np.exp(-((u - 0.55 * lx) / 0.14) ** 2)
        base = self.rgb if rgb is None else rgb
        row = base[None, :] * (gain * (0.38 + 0.72 * lam))[:, None] + spec[:, None]
        return row[None, :, :]

    def flat(self, gain: float, rgb: np.ndarray | None = None) -> np.ndarray:
        """Return a (1, 1, 3) flat colour."""
        base = self.rgb if rgb is None else rgb
        return (base * gain)[None, None, :]

    def _paint(self, colour: np.ndarray) -> None:
        src = np.ascontiguousarray(np.broadcast_to(colour, self.colour.shape), np.float32)
        cv2.copyTo(src, self._part, self.colour)  # much faster than np.copyto(where=...)
        np.bitwise_or(self.mask, self._part, out=self.mask)
        self._part.fill(0)

    def poly(self, pts, colour: np.ndarray) -> None:
        """Fill a polygon given in local float pixel coordinates (sub-pixel precise)."""
        fixed = np.round(np.asarray(pts, np.float64) * SUB).astype(np.int32)
        cv2.fillPoly(self._part, [fixed], 1, cv2.LINE_8, SHIFT)
        self._paint(colour)

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, colour: np.ndarray,
                start: float = 0.0, end: float = 360.0, thickness: int = -1) -> None:
        """Fill (or stroke, thickness > 0) an axis-aligned ellipse or an arc of it.

        Angles in degrees, clockwise from +x as in OpenCV (0..180 is the lower half).
        """
        steps = max(8, int(abs(end - start) / 360.0 * min(96.0, 8.0 + 2.0 * max(ax, ay))))
        t = np.radians(np.linspace(start, end, steps + 1))
        pts = np.stack([cx + max(ax, 0.5) * np.cos(t), cy + max(ay, 0.0) * np.sin(t)], axis=1)
        if thickness > 0:
            fixed = np.round(pts * SUB).astype(np.int32)
            cv2.polylines(self._part, [fixed], False, 1, thickness, cv2.LINE_8, SHIFT)
            self._paint(colour)
        else:
            self.poly(pts, colour)

    def outline(self) -> None:
        """Darken the silhouette border so objects stand out from a same-coloured table."""
        if min(self.h, self.w) < 6:
            return
        inner = cv2.erode(self.mask, np.ones((3, 3), np.uint8))
        edge = (self.mask > 0) & (inner == 0)
        self.colour[edge] *= 0.7


def _open_top(c: Canvas, cx: float, cy: float, rx: float, ry: float) -> None:
    """Draw a rim ellipse with a darker inside, seen from above at the canvas tilt."""
    c.ellipse(cx, cy, rx, ry, c.flat(1.08))
    inside = c.cylinder(cx - rx, cx + rx, gain=0.55, inside=True)
    c.ellipse(cx, cy + 0.1 * ry, 0.86 * rx, 0.74 * ry, inside)


def draw_cup(c: Canvas) -> None:
    """Tapered cup: wide open top, narrow base."""
    w, h = c.w - 1, c.h - 1
    ry = c.tilt * w / 2
    bw = 0.66 * w
    bry = c.tilt * bw / 2
    body = c.cylinder(0, w)
    c.poly([(0, ry), (w, ry), ((w + bw) / 2, h - bry), ((w - bw) / 2, h - bry)], body)
    c.ellipse(w / 2, h - bry, bw / 2, bry, body, 0, 180)
    _open_top(c, w / 2, ry, w / 2, ry)


def draw_mug(c: Canvas, flip: bool) -> None:
    """Straight mug with a ring handle on one side."""
    w, h = c.w - 1, c.h - 1
    bw = 0.74 * w
    x0 = w - bw if flip else 0.0
    x1 = x0 + bw
    ry = c.tilt * bw / 2
    body = c.cylinder(x0, x1)
    hx = x0 if flip else x1
    c.ellipse(hx, 0.5 * h, 0.3 * w, 0.27 * h, c.cylinder(x0, x1, 0.9),
              90 if flip else -90, 270 if flip else 90, thickness=max(2, int(0.08 * w)))
    c.poly([(x0, ry), (x1, ry), (x1, h - ry), (x0, h - ry)], body)
    c.ellipse((x0 + x1) / 2, h - ry, bw / 2, ry, body, 0, 180)
    _open_top(c, (x0 + x1) / 2, ry, bw / 2, ry)


def draw_bowl(c: Canvas) -> None:
    """Wide low bowl: a lower half-ellipse under a wide open rim."""
    w, h = c.w - 1, c.h - 1
    ry = max(c.tilt, 0.22) * w / 2
    ry = min(ry, 0.45 * h)
    body = c.cylinder(0, w)
    c.ellipse(w / 2, ry, w / 2, h - ry, body, 0, 180)
    foot = 0.4 * w
    c.ellipse(w / 2, h - 0.06 * h, foot / 2, 0.06 * h, c.cylinder(0, w, 0.8), 0, 180)
    _open_top(c, w / 2, ry, w / 2, ry)


def draw_bottle(c: Canvas) -> None:
    """Bottle: cylindrical body, rounded shoulders, narrow neck and a cap."""
    w, h = c.w - 1, c.h - 1
    ry = c.tilt * w / 2
    body = c.cylinder(0, w)
    sh = 0.42 * h
    nw = 0.36 * w
    n0, n1 = (w - nw) / 2, (w + nw) / 2
    # neck and cap first: the shoulders are drawn over the neck's lower end
    c.poly([(n0, 0.08 * h), (n1, 0.08 * h), (n1, sh), (n0, sh)], c.cylinder(n0, n1))
    cw = 0.44 * w
    c.poly([((w - cw) / 2, 0), ((w + cw) / 2, 0), ((w + cw) / 2, 0.1 * h),
            ((w - cw) / 2, 0.1 * h)], c.cylinder((w - cw) / 2, (w + cw) / 2, 0.7))
    c.ellipse(w / 2, sh, w / 2, 0.13 * h, body, 180, 360)
    c.poly([(0, sh), (w, sh), (w, h - ry), (0, h - ry)], body)
    c.ellipse(w / 2, h - ry, w / 2, ry, body, 0, 180)


def draw_can(c: Canvas) -> None:
    """Can: straight cylinder, metal rims and a metal lid."""
    w, h = c.w - 1, c.h - 1
    ry = c.tilt * w / 2
    body = c.cylinder(0, w)
    metal = c.cylinder(0, w, 1.0, METAL)
    c.poly([(0, ry), (w, ry), (w, h - ry), (0, h - ry)], body)
    c.ellipse(w / 2, h - ry, w / 2, ry, metal, 0, 180)
    c.poly([(0, h - ry - 0.05 * h), (w, h - ry - 0.05 * h), (w, h - ry), (0, h - ry)], metal)
    c.poly([(0, ry), (w, ry), (w, ry + 0.05 * h), (0, ry + 0.05 * h)], metal)
    c.ellipse(w / 2, ry, w / 2, ry, c.flat(1.05, METAL))
    c.ellipse(w / 2, ry, 0.8 * w / 2, 0.8 * ry, c.flat(0.8, METAL), thickness=1)


def draw_ball(c: Canvas) -> None:
    """Ball: a sphere lit from the scene's light direction, with a highlight."""
    w, h = c.w - 1, c.h - 1
    r = min(w, h) / 2
    yy, xx = np.mgrid[0:c.h, 0:c.w].astype(np.float32)
    dx, dy = (xx + 0.5 - w / 2) / r, (yy + 0.5 - (h - r)) / r
    nz = np.sqrt(np.clip(1.0 - dx * dx - dy * dy, 0.0, 1.0))
    lvec = np.array([0.7 * c.light, -0.55, 0.75], np.float32)
    lvec /= np.linalg.norm(lvec)
    lam = np.maximum(0.0, dx * lvec[0] + dy * lvec[1] + nz * lvec[2])
    spec = 150.0 * np.maximum(0.0, lam - 0.8) / 0.2 * (lam > 0.8)
    shaded = c.rgb[None, None, :] * (0.25 + 0.85 * lam)[..., None] + spec[..., None]
    c.ellipse(w / 2, h - r, r, r, shaded)


def _cuboid(c: Canvas, flip: bool, side_frac: float) -> tuple[float, float, float, float]:
    """Draw a cuboid filling the canvas; return the front face (x0, y0, x1, y1)."""
    w, h = c.w - 1, c.h - 1
    dx = side_frac * w
    dy = min(c.tilt * 1.3, 0.6) * (w - dx)
    fw = w - dx
    x0 = dx if flip else 0.0
    x1 = x0 + fw
    sx = 0.0 if flip else w  # far x of the side face
    side_lit = (c.light < 0) == flip
    c.poly([(x0, dy), (x1, dy), (x1, h), (x0, h)], c.flat(0.86))
    near = x0 if flip else x1
    c.poly([(near, dy), (sx, 0), (sx, h - dy), (near, h)], c.flat(0.98 if side_lit else 0.6))
    tx = -dx if flip else dx
    c.poly([(x0, dy), (x1, dy), (x1 + tx, 0), (x0 + tx, 0)], c.flat(1.14))
    return x0, dy, x1, h


def draw_box(c: Canvas, flip: bool) -> None:
    """Box: a wide cuboid with a tape strip over its top and down its front."""
    x0, y0, x1, y1 = _cuboid(c, flip, 0.2)
    w = c.w - 1
    dx = 0.2 * w * (-1 if flip else 1)
    mid, half = (x0 + x1) / 2, 0.07 * (x1 - x0)
    tape = c.flat(0.55, np.array([222.0, 196.0, 140.0], np.float32)) + c.flat(0.45)
    c.poly([(mid - half, y0), (mid + half, y0), (mid + half + dx, 0), (mid - half + dx, 0)],
           tape * 1.1)
    c.poly([(mid - half, y0), (mid + half, y0), (mid + half, y0 + 0.3 * (y1 - y0)),
            (mid - half, y0 + 0.3 * (y1 - y0))], tape * 0.9)


def draw_block(c: Canvas, flip: bool) -> None:
    """Block: a small cube with an inset panel on its front face."""
    x0, y0, x1, y1 = _cuboid(c, flip, 0.25)
    m = 0.18 * (x1 - x0)
    if m >= 2:
        c.poly([(x0 + m, y0 + m), (x1 - m, y0 + m), (x1 - m, y1 - m), (x0 + m, y1 - m)],
               c.flat(0.74))


def draw_cone(c: Canvas) -> None:
    """Cone: a shaded triangle on an elliptic base."""
    w, h = c.w - 1, c.h - 1
    ry = c.tilt * w / 2
    body = c.cylinder(0, w)
    c.poly([(w / 2, 0), (w, h - ry), (0, h - ry)], body)
    c.ellipse(w / 2, h - ry, w / 2, ry, body, 0, 180)


DRAW: dict[str, Callable[[Canvas, bool], None]] = {
    'cup': lambda c, f: draw_cup(c),
    'mug': draw_mug,
    'bowl': lambda c, f: draw_bowl(c),
    'bottle': lambda c, f: draw_bottle(c),
    'can': lambda c, f: draw_can(c),
    'ball': lambda c, f: draw_ball(c),
    'box': draw_box,
    'block': draw_block,
    'cone': lambda c, f: draw_cone(c),
}


def draw_object(kind: str, h: int, w: int, rgb: tuple[int, int, int], light: float,
                tilt: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Draw one object into an (h, w) canvas.

    Returns (mask (h, w) uint8 0/1, rgb (h, w, 3) uint8).
    """
    c = Canvas(max(h, 2), max(w, 2), rgb, light, tilt)
    DRAW[kind](c, flip)
    c.outline()
    np.clip(c.colour, 0, 255, out=c.colour)
    return c.mask, c.colour.astype(np.uint8)

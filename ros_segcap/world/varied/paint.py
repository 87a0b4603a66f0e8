"""Colour a rasterised sprite: surface finish (albedo) times shading style times light.

Shading styles: flat (albedo only), shaded (ambient + Lambert), glossy (+ a specular
highlight), textured (shaded with a fine surface grain), toon (Lambert in three steps and a
dark outline), outlined (flat with a thick dark outline). Finishes of the body: plain, dots,
stripes, checks (two shades of the body colour), photo (a skimage.data patch tinted with
the body colour), metallic (desaturated, with a reflected band and a strong highlight) and
glass (see-through: blended with what is behind it).
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from ros_segcap.world.varied.scene import Lighting, VariedObject
from ros_segcap.world.varied.sprite import (BODY, DARK, INSIDE, LEAF, METAL, SECOND, STEM,
                                            Sprite)

FIXED = {METAL: (186.0, 189.0, 196.0), DARK: (24.0, 26.0, 32.0), STEM: (92.0, 64.0, 34.0),
         LEAF: (70.0, 140.0, 52.0)}
GLASS_ALPHA = 0.5

_textures: dict[str, np.ndarray] = {}
_lock = threading.Lock()


def texture(name: str, size: int = 256) -> np.ndarray:
    """A skimage.data image as a (size, size) float32 grey texture in [0, 1], cached."""
    with _lock:
        if name not in _textures:
            import skimage.data  # lazily: only textured surfaces need it
            img = np.asarray(getattr(skimage.data, name)())
            if img.ndim == 3:
                img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
            img = cv2.resize(img.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
            lo, hi = np.percentile(img, (2, 98))
            _textures[name] = np.clip((img - lo) / max(hi - lo, 1.0), 0, 1).astype(np.float32)
        return _textures[name]


def sample_texture(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample a texture at coordinates in texture periods (wrapping)."""
    t = texture(name)
    n = t.shape[0]
    x, y = (np.asarray(u, np.float32) * n) % n, (np.asarray(v, np.float32) * n) % n
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    x0, y0 = x0 % n, y0 % n
    x1, y1 = (x0 + 1) % n, (y0 + 1) % n
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bottom = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _body_albedo(o: VariedObject, tex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(albedo (h, w, 3), pattern weight of the second colour (h, w)) of the body."""
    rgb = np.array(o.rgb, np.float32)
    u, v = tex[..., 0] / o.pattern_scale, tex[..., 1] / o.pattern_scale
    h, w = tex.shape[:2]
    alb = np.broadcast_to(rgb, (h, w, 3)).astype(np.float32)
    if o.finish == 'photo':
        alb = alb * (0.6 + 0.7 * sample_texture(o.texture, 0.5 * u, 0.5 * v))[..., None]
    elif o.finish == 'checks':
        dark = ((np.floor(2 * u) + np.floor(2 * v)) % 2)[..., None]
        alb = alb * (1.0 - 0.35 * dark)
    elif o.finish == 'metallic':
        grey = rgb.mean()
        band = 0.75 + 0.45 * np.sin(3.0 * u + 2.0)[..., None]
        alb = (0.6 * alb + 0.4 * grey) * band
    second = np.zeros((h, w), np.float32)
    if o.finish == 'dots':
        du, dv = (3 * u) % 1.0 - 0.5, (3 * v + 0.5 * np.floor(3 * u)) % 1.0 - 0.5
        second = (du * du + dv * dv < 0.07).astype(np.float32)
    elif o.finish == 'stripes':
        second = (((2 * v + 0.5 * u) % 1.0) < 0.3).astype(np.float32)
    return alb, second


def _albedo(o: VariedObject, s: Sprite) -> np.ndarray:
    body, second = _body_albedo(o, s.tex)
    sec = np.array(o.second_rgb, np.float32)
    alb = body * (1.0 - second[..., None]) + sec * second[..., None]
    alb[s.mat == SECOND] = sec
    alb[s.mat == INSIDE] *= 0.8
    for mat, rgb in FIXED.items():
        alb[s.mat == mat] = rgb
    return alb


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    inner = cv2.erode(mask, np.ones((2 * width + 1, 2 * width + 1), np.uint8))
    return (mask > 0) & (inner == 0)


def light_vector(light: Lighting) -> np.ndarray:
    """The light direction in the view frame (x right, y up, z towards the camera)."""
    c = np.cos(light.elevation)
    return np.array([np.sin(light.azimuth) * c, np.sin(light.elevation),
                     np.cos(light.azimuth) * c], np.float32)


def colourise(o: VariedObject, s: Sprite, shading: str, light: Lighting, sin_e: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Return (rgb (h, w, 3) float32, alpha (h, w) float32) of a sprite."""
    alb = _albedo(o, s)
    n = s.normal
    lvec = light_vector(light)
    lam = np.clip(n @ lvec, 0.0, 1.0)
    view = np.array([0.0, sin_e, np.sqrt(max(0.0, 1.0 - sin_e ** 2))], np.float32)
    half = (lvec + view) / max(float(np.linalg.norm(lvec + view)), 1e-6)
    nh = np.clip(n @ half, 0.0, 1.0)
    if shading in ('flat', 'outlined'):
        gain = np.full(lam.shape, light.ambient + 0.6 * light.direct, np.float32)
    elif shading == 'toon':
        gain = light.ambient + light.direct * (np.floor(lam * 3.0 + 0.5) / 3.0)
    else:
        gain = light.ambient + light.direct * lam
    if shading == 'textured':
        grain = sample_texture('gravel', s.tex[..., 0] * 12.0, s.tex[..., 1] * 12.0)
        gain = gain * (0.82 + 0.36 * grain)
    spec = np.zeros_like(lam)
    shiny = s.mat == METAL
    if o.finish in ('metallic', 'glass'):
        shiny |= s.mat == BODY
    if shading == 'glossy':
        spec = 0.5 * nh ** 30
    spec = np.where(shiny & (shading not in ('flat', 'outlined')), 0.9 * nh ** 20, spec)
    rgb = alb * gain[..., None] + 255.0 * spec[..., None]
    rgb *= np.array(light.rgb, np.float32)
    if shading in ('toon', 'outlined'):
        rgb[_outline(s.mask, 1 if shading == 'toon' else 2)] = (20.0, 20.0, 24.0)
    alpha = s.mask.astype(np.float32)
    if o.finish == 'glass':
        alpha = np.where((s.mat == BODY) & (s.mask > 0), GLASS_ALPHA + 0.5 * spec, alpha)
    return rgb, alpha

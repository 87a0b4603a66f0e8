"""Render a VariedSceneSpec at any size: image, panoptic map and exact visible masks.

Layers, back to front: the wall (plain, striped wallpaper or a photo), the table top (every
pixel back-projected onto the table plane, so wood, cloth, tiles, marble and photo surfaces
are in perspective), lamp light and soft shadows on the table, the objects in painter's
order (farthest first), then the camera effects (exposure, white balance, blur, noise, JPEG).
Masks are the objects' silhouettes after occlusion; blur and JPEG only change colours.
"""
from __future__ import annotations

import cv2
import numpy as np

from ros_segcap.world.backdrops import fit_photo
from ros_segcap.world.render import BACKGROUND_ID, FIRST_OBJECT_ID, TABLE_ID, Scene
from ros_segcap.world.varied.kinds import build
from ros_segcap.world.varied.paint import colourise, light_vector, sample_texture, texture
from ros_segcap.world.varied.scene import VariedObject, VariedSceneSpec, object_pose
from ros_segcap.world.varied.sprite import rasterise


def _wall(spec: VariedSceneSpec, h: int, w: int) -> np.ndarray:
    rgb = np.array(spec.wall_rgb, np.float32)
    if spec.wall == 'photo':
        photo = (255 * texture(spec.wall_texture, 512)).astype(np.uint8)
        grey = fit_photo(np.repeat(photo[:, :, None], 3, axis=2), h, w).astype(np.float32)
        return 0.5 * grey * rgb / 255.0 + 0.5 * grey
    ramp = np.linspace(1.05, 0.8, h, dtype=np.float32)[:, None, None]
    wall = np.broadcast_to(rgb * ramp, (h, w, 3)).copy()
    if spec.wall == 'stripes':
        xs = np.arange(w, dtype=np.float32) / max(h, 1)
        wall *= (1.0 - 0.18 * (((xs * 9.0) % 1.0) < 0.4))[None, :, None]
    return wall


def _table_albedo(spec: VariedSceneSpec, gx: np.ndarray, gz: np.ndarray) -> np.ndarray:
    """Albedo (N, 3) of table points (metres on the table plane)."""
    rgb = np.array(spec.table_rgb, np.float32)
    m = spec.table_material
    if m == 'wood':
        wood = np.array((150.0, 100.0, 60.0)) * (0.6 + 0.8 * rgb.mean() / 255.0)
        grain = np.sin(60.0 * gx + 2.0 * np.sin(3.0 * gz)) + 0.4 * np.sin(170.0 * gx)
        seam = ((gx / 0.12) % 1.0) < 0.03
        shade = 1.0 + 0.08 * grain - 0.25 * seam
        return wood[None, :] * shade[:, None]
    if m == 'cloth':
        chk = ((np.floor(gx / 0.05) + np.floor(gz / 0.05)) % 2)[:, None]
        weave = 1.0 + 0.06 * np.sin(900.0 * gx)[:, None] * np.sin(900.0 * gz)[:, None]
        return (rgb * (1 - 0.5 * chk) + 235.0 * 0.5 * chk) * weave
    if m == 'photo':
        t = sample_texture(spec.table_texture, gx[None, :] / 0.6, gz[None, :] / 0.6)[0]
        return rgb[None, :] * (0.55 + 0.7 * t)[:, None]
    if m == 'tile':
        lines = (((gx / 0.1) % 1.0) < 0.06) | (((gz / 0.1) % 1.0) < 0.06)
        jitter = 0.9 + 0.2 * (np.sin(np.floor(gx / 0.1) * 12.9898 + np.floor(gz / 0.1) * 78.233)
                              * 0.5 + 0.5)
        return np.where(lines[:, None], 215.0, rgb[None, :] * jitter[:, None])
    if m == 'marble':
        vein = np.abs(np.sin(8.0 * gx + 5.0 * gz + 3.0 * np.sin(4.0 * gx - 3.0 * gz)))
        base = 0.7 * rgb + 0.3 * 230.0
        return base[None, :] * (0.75 + 0.25 * vein ** 0.3)[:, None]
    return rgb[None, :] * (1.0 + 0.03 * np.sin(7.0 * gx + 5.0 * gz))[:, None]


def _shadow_map(spec: VariedSceneSpec, h: int, w: int) -> np.ndarray:
    """How much each pixel of the table is shadowed (0..1)."""
    occ = np.zeros((h, w), np.float32)
    light = spec.light
    if not light.shadows:
        return occ
    cam = spec.camera
    dx, dz = -np.sin(light.azimuth), np.cos(light.azimuth)  # away from the lamp
    t = np.radians(np.linspace(0, 360, 24, endpoint=False))
    for o in spec.objects:
        (gx, gz), (ow, oh) = o.ground, o.dims
        length = min(oh / np.tan(light.elevation), 4 * ow)
        r = 0.45 * ow
        xs = np.concatenate([gx + r * np.cos(t), gx + length * dx + r * np.cos(t)])
        zs = np.concatenate([gz + r * np.sin(t), gz + length * dz + r * np.sin(t)])
        u, v, d = cam.project(xs, zs)
        if (d <= 0).any():
            continue
        pts = np.stack([w / 2 + (u - cam.aspect / 2) * h, v * h], axis=1).astype(np.float32)
        hull = cv2.convexHull(pts)
        cv2.fillPoly(occ, [np.round(hull * 16).astype(np.int32)], 0.55, cv2.LINE_8, 4)
    k = int(light.softness * h * 2) * 2 + 1
    return cv2.GaussianBlur(occ, (k, k), 0) if k > 1 else occ


def _table(spec: VariedSceneSpec, image: np.ndarray, panoptic: np.ndarray) -> None:
    h, w = panoptic.shape
    cam = spec.camera
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    u = (xs + 0.5 - w / 2) / h + cam.aspect / 2
    gx, gz, hit = cam.ground(u, (ys + 0.5) / h)
    xl, xr, zf = spec.table_extent
    on = hit & (gx >= xl) & (gx <= xr) & (gz <= zf)
    panoptic[on] = TABLE_ID
    alb = _table_albedo(spec, gx[on], gz[on])
    light = spec.light
    lv = light_vector(light)
    lamp = np.exp(-((gx[on] + 0.4 * lv[0]) ** 2 + (gz[on] - 0.6 - 0.4 * lv[2]) ** 2) / 0.8)
    gain = light.ambient + light.direct * np.sin(light.elevation) * (0.7 + 0.4 * lamp)
    gain = gain * (1.0 - _shadow_map(spec, h, w)[on])
    image[on] = alb * gain[:, None] * np.array(light.rgb, np.float32)


def _paste(spec: VariedSceneSpec, image: np.ndarray, panoptic: np.ndarray, o: VariedObject,
           seg_id: int) -> None:
    h, w = panoptic.shape
    cam = spec.camera
    pose = object_pose(cam, o.ground, o.yaw)
    u, v, depth = (float(a) for a in cam.project(*o.ground))
    sprite = rasterise(build(o.kind, o.variant, pose, *o.dims), cam.focal / depth * h)
    rgb, alpha = colourise(o, sprite, spec.shading, spec.light, pose.sin_e)
    x0 = int(round(w / 2 + (u - cam.aspect / 2) * h - sprite.anchor[0]))
    y0 = int(round(v * h - sprite.anchor[1]))
    sh, sw = sprite.mask.shape
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)
    if ix1 <= ix0 or iy1 <= iy0:
        return
    sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    m = sprite.mask[sl] > 0
    a = alpha[sl][m][:, None]
    region = image[iy0:iy1, ix0:ix1]
    region[m] = a * rgb[sl][m] + (1.0 - a) * region[m]
    panoptic[iy0:iy1, ix0:ix1][m] = seg_id


def _effects(spec: VariedSceneSpec, image: np.ndarray) -> np.ndarray:
    fx = spec.effects
    h = image.shape[0]
    image = image * (fx.exposure * np.array(fx.white_balance, np.float32))
    if fx.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), fx.blur * h / 480.0)
    rng = np.random.default_rng([spec.seed, 65537])
    if fx.noise > 0:
        image = image + rng.normal(0.0, fx.noise, image.shape).astype(np.float32)
    out = np.clip(image, 0, 255).astype(np.uint8)
    if fx.jpeg:
        bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, fx.jpeg])
        assert ok, 'OpenCV failed to encode a JPEG'
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out


def render_varied(spec: VariedSceneSpec, height: int, width: int, *,
                  effects: bool = True) -> Scene:
    """Render `spec` at (height, width); a pure function of its arguments.

    effects=False skips exposure, white balance, blur, noise and JPEG (the masks are the same).
    """
    if height < 16 or width < 16:
        raise ValueError(f'image size must be at least 16x16, got {width}x{height}')
    image = _wall(spec, height, width)
    panoptic = np.full((height, width), BACKGROUND_ID, np.int32)
    _table(spec, image, panoptic)
    for i, o in enumerate(spec.objects):
        _paste(spec, image, panoptic, o, FIRST_OBJECT_ID + i)
    if effects:
        out = _effects(spec, image)
    else:
        out = np.clip(image, 0, 255).astype(np.uint8)
    return Scene(spec=spec, image=out, panoptic=panoptic)  # type: ignore[arg-type]

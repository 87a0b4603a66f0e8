"""Short tabletop sequences with exact masks and object identities per frame.

Three kinds, each from one sampled scene (layout.sample_scene(seed)):

- 'pan': the camera pans sideways over a wider rendering of the scene;
- 'push': a hand-like occluder (palm and forearm) pushes the target object sideways,
  covering part of it;
- 'leave': the target object slides out of the view to the right and back in.

An object's identity is its index in the scene spec (its painter's-order place, which no
motion changes); frame.mask(i) is object i's visible part on that frame (empty when it is
out of view or hidden). The target has a phrase that names it alone ('the red cup').
Numpy and OpenCV only; deterministic for (kind, seed, frames, size).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
import math

import cv2
import numpy as np

from ros_segcap.world.layout import SceneSpec, make_object, sample_scene
from ros_segcap.world.render import FIRST_OBJECT_ID, Scene, add_noise, render

SEQUENCE_KINDS = ('pan', 'push', 'leave')
HAND_ID = -1  # panoptic id of the occluding hand
SKIN_RGB = (222, 170, 138)
PAN_EXTRA = 0.3  # the pan's canvas is this much wider than the frame


@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a sequence and its exact truth."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    panoptic: np.ndarray  # (H, W) int32: render ids, HAND_ID where the hand is

    def mask(self, identity: int) -> np.ndarray:
        """Visible mask (H, W) bool of object `identity` (its index in the scene spec)."""
        return self.panoptic == FIRST_OBJECT_ID + identity

    def visible(self, identity: int, min_pixels: int = 1) -> bool:
        """Tell whether at least `min_pixels` of the object are in view."""
        return int(self.mask(identity).sum()) >= min_pixels


@dataclass(frozen=True)
class Sequence:
    """Frames of one kind of motion; `target` (an identity) is the object named by `phrase`."""

    kind: str
    seed: int
    spec: SceneSpec
    target: int
    phrase: str
    frames: tuple[SequenceFrame, ...]

    def __len__(self) -> int:
        return len(self.frames)


def pick_target(spec: SceneSpec) -> tuple[int, str]:
    """The largest object whose colour and kind no other object shares."""
    names = [f'{o.colour} {o.kind}' for o in spec.objects]
    unique = [i for i, n in enumerate(names) if names.count(n) == 1]
    if not unique:
        raise ValueError(f'scene {spec.seed} has no object with a unique name; pick another '
                         'seed')
    best = max(unique, key=lambda i: spec.objects[i].area)
    return best, f'the {names[best]}'


def make_sequence(kind: str, seed: int = 0, frames: int = 20, height: int = 240,
                  width: int = 320, *, n_objects: int = 4, noise: bool = True) -> Sequence:
    """Render a sequence of `kind` (one of SEQUENCE_KINDS) from scene `seed`."""
    if kind not in SEQUENCE_KINDS:
        raise ValueError(f'sequence kind must be one of {SEQUENCE_KINDS}, got {kind!r}')
    if frames < 2:
        raise ValueError(f'a sequence needs at least 2 frames, got {frames}')
    spec = sample_scene(seed, n_objects)
    target, phrase = pick_target(spec)
    rng = np.random.default_rng([seed, 8191])
    out = []
    for t in range(frames):
        s = t / (frames - 1)  # 0 .. 1 over the sequence
        if kind == 'pan':
            image, panoptic = _pan(spec, s, height, width)
        elif kind == 'push':
            image, panoptic = _push(spec, target, s, height, width)
        else:
            image, panoptic = _leave(spec, target, s, height, width)
        if noise:
            add_noise(image, spec.noise, rng)
        out.append(SequenceFrame(t, image, panoptic))
    return Sequence(kind, seed, spec, target, phrase, tuple(out))


def _pan(spec: SceneSpec, s: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    wide = int(round(width * (1 + PAN_EXTRA)))
    scene = _canvas(spec, height, wide)
    x0 = int(round(s * (wide - width)))
    return (scene.image[:, x0:x0 + width].copy(), scene.panoptic[:, x0:x0 + width].copy())


def _moved(spec: SceneSpec, i: int, x: float) -> SceneSpec:
    o = spec.objects[i]
    objs = list(spec.objects)
    objs[i] = make_object(o.kind, o.colour, o.rgb, x, o.y, o.size, spec.horizon, o.flip)
    return replace(spec, objects=tuple(objs))


def _push(spec: SceneSpec, i: int, s: float, height: int, width: int
          ) -> tuple[np.ndarray, np.ndarray]:
    o = spec.objects[i]
    x = o.x + 0.2 * s  # pushed to the right by up to 20% of the width
    scene = _canvas(_moved(spec, i, x), height, width)
    image, panoptic = scene.image.copy(), scene.panoptic.copy()
    side = min(height, width)
    r = max(6, int(0.35 * max(o.height, o.width) * side))  # palm radius, about the object's
    cx = int(round(x * width - o.width * side / 2))  # palm centre on the object's left edge
    cy = int(round(o.y * height - 0.4 * o.height * side))
    hand = np.zeros((height, width), np.uint8)
    cv2.ellipse(hand, (cx, cy), (r, int(0.8 * r)), 0, 0, 360, 1, -1)
    # the forearm, from the palm down to the bottom edge
    cv2.line(hand, (cx, cy), (cx - width // 4, height + r), 1, max(2, int(1.3 * r)))
    image[hand > 0] = SKIN_RGB
    panoptic[hand > 0] = HAND_ID
    return image, panoptic


def _leave(spec: SceneSpec, i: int, s: float, height: int, width: int
           ) -> tuple[np.ndarray, np.ndarray]:
    o = spec.objects[i]
    # out to the right (fully out of view at the middle) and back in
    x = o.x + (1.0 + o.width * 1.2 - o.x) * math.sin(math.pi * s)
    scene = _canvas(_moved(spec, i, x), height, width)
    return scene.image.copy(), scene.panoptic.copy()


@lru_cache(maxsize=2)  # a pan crops one rendering
def _canvas(spec: SceneSpec, height: int, width: int) -> Scene:
    return render(spec, height, width, noise=False)

"""A simulated robot camera looking at a slowly changing tabletop scene.

Cheap per frame: each scene state is rendered once on a canvas a few pixels larger than the
frame; every frame is a crop at a slowly wandering offset (camera jitter) plus fresh sensor
noise. Every `nudge_period` frames one object slides a little (one re-render), and every
`scene_period` frames a new scene (seed + 1, seed + 2, ...) replaces the old one.
world='varied' draws the scenes from the domain-randomised world (its train style families);
its objects stay where they are (no nudges).
Each camera owns its state: two cameras never share a scene or a random stream.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import numpy as np

from ros_segcap.world.layout import layout_ok, make_object, sample_scene
from ros_segcap.world.render import Scene, add_noise, render

WORLDS = ('default', 'varied')
VARIED_NOISE = 2.0  # per-frame sensor noise of varied scenes (their own effects are drawn once)


class TabletopCamera:
    """Endless RGB frames (and their truth) of procedural tabletop scenes.

    Object attributes (x, y as fractions) refer to the jitter-free canvas, which is
    2 * margin pixels larger than the frame; masks and panoptic maps are exact per frame.
    """

    def __init__(self, height: int = 480, width: int = 640, *, seed: int = 0,
                 scene_period: int = 450, nudge_period: int = 30, margin: int = 6,
                 noise: bool = True, world: str = 'default') -> None:
        """Start at scene `seed`; periods are in frames (450 = 30 s at 15 Hz)."""
        if world not in WORLDS:
            raise ValueError(f'unknown world {world!r}; use one of {WORLDS}')
        if height < 16 or width < 16:
            raise ValueError(f'camera size must be at least 16x16, got {width}x{height}')
        if scene_period < 1 or nudge_period < 1:
            raise ValueError('scene_period and nudge_period must be >= 1 frame')
        self.height, self.width = height, width
        self.seed = seed
        self.scene_period, self.nudge_period = scene_period, nudge_period
        self.margin = max(int(margin), 0)
        self.noise = noise
        self.world = world
        self.frame_index = 0
        self._rng = np.random.default_rng([seed, 271828])
        self._spec = self._sample(seed)
        self._canvas = self._render(self._spec)

    def _sample(self, seed: int):
        if self.world == 'varied':
            from ros_segcap.world.varied import sample_varied_scene
            return sample_varied_scene(seed, 'train', aspect=self.width / self.height)
        return sample_scene(seed)

    def _render(self, spec) -> Scene:
        h, w = self.height + 2 * self.margin, self.width + 2 * self.margin
        if self.world == 'varied':
            from ros_segcap.world.varied import render_varied
            return render_varied(spec, h, w)
        return render(spec, h, w, noise=False)

    @property
    def _noise_sigma(self) -> float:
        return VARIED_NOISE if self.world == 'varied' else self._spec.noise

    def _nudge(self) -> None:
        """Slide one random object sideways a little, if the layout stays valid."""
        objs = list(self._spec.objects)
        if not objs or self.world != 'default':
            return
        i = int(self._rng.integers(len(objs)))
        o = objs[i]
        dx = float(self._rng.choice([-1.0, 1.0])) * 0.015
        objs[i] = make_object(o.kind, o.colour, o.rgb, o.x + dx, o.y, o.size,
                              self._spec.horizon, o.flip)
        if layout_ok(objs) and 0.03 < objs[i].x < 0.97:
            self._spec = dataclasses.replace(self._spec, objects=tuple(objs))
            self._canvas = self._render(self._spec)

    def _advance(self) -> None:
        k = self.frame_index
        if k and k % self.scene_period == 0:
            self._spec = self._sample(self.seed + k // self.scene_period)
            self._canvas = self._render(self._spec)
        elif k and k % self.nudge_period == 0:
            self._nudge()

    def read(self) -> Scene:
        """Return the next frame with its exact masks (a Scene of the frame's size)."""
        self._advance()
        k, m = self.frame_index, self.margin
        # slow wandering jitter: two incommensurate sines per axis, at most `margin` pixels
        dx = round(m * (0.6 * math.sin(0.21 * k) + 0.4 * math.sin(0.077 * k + 1.0)))
        dy = round(m * (0.6 * math.sin(0.17 * k + 2.0) + 0.4 * math.sin(0.053 * k)))
        y0, x0 = m + dy, m + dx
        image = self._canvas.image[y0:y0 + self.height, x0:x0 + self.width].copy()
        panoptic = self._canvas.panoptic[y0:y0 + self.height, x0:x0 + self.width].copy()
        if self.noise:
            add_noise(image, self._noise_sigma, self._rng)
        self.frame_index += 1
        return Scene(spec=self._spec, image=image, panoptic=panoptic)

    def __iter__(self) -> Iterator[Scene]:
        """Iterate frames with truth forever."""
        while True:
            yield self.read()

    def frames(self) -> Iterator[np.ndarray]:
        """Iterate (H, W, 3) uint8 RGB frames forever (do not wrap in itertools.cycle)."""
        while True:
            yield self.read().image

"""A pinhole camera above the table plane (y = 0), pitched down towards +z.

Image coordinates are in units of the image height H, centred: a point at (u, v) lies at
pixel (W / 2 + (u - aspect / 2) * H, v * H), so one spec renders at any size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """Camera at height `height` (m) pitched `pitch` degrees below the horizon."""

    height: float
    pitch: float  # degrees
    focal: float  # focal length in units of the image height
    aspect: float  # W / H the scene was laid out for

    @property
    def _cs(self) -> tuple[float, float]:
        p = np.radians(self.pitch)
        return float(np.cos(p)), float(np.sin(p))

    def project(self, x, z, y=0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project world points (x right, y up, z forward, metres) -> (u, v, depth)."""
        c, s = self._cs
        x, y, z = (np.asarray(a, np.float64) for a in (x, y, z))
        dy = y - self.height
        depth = -dy * s + z * c
        up = dy * c + z * s
        safe = np.maximum(depth, 1e-6)
        return self.aspect / 2 + self.focal * x / safe, 0.5 - self.focal * up / safe, depth

    def ground(self, u, v) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Back-project image points to the table plane -> (x, z, hit)."""
        c, s = self._cs
        a = np.asarray(u, np.float64) - self.aspect / 2
        b = 0.5 - np.asarray(v, np.float64)
        dir_y = b * c - self.focal * s
        hit = dir_y < -1e-6
        t = np.where(hit, self.height / np.where(hit, -dir_y, 1.0), 0.0)
        return t * a, t * (b * s + self.focal * c), hit

    def horizon(self) -> float:
        """Image row v of the horizon (rays above it never reach the table plane)."""
        return 0.5 - self.focal * self._cs[1] / self._cs[0]

    def elevation_sin(self, x: float, z: float) -> float:
        """Sine of the angle under which the camera looks down at ground point (x, z)."""
        return float(self.height / np.sqrt(self.height ** 2 + x * x + z * z))

    def distance(self, x: float, z: float) -> float:
        """Distance from the camera to ground point (x, z) in metres."""
        return float(np.sqrt(self.height ** 2 + x * x + z * z))

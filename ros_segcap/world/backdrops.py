"""Real photos used as backdrops behind the table; absent photos fall back to a plain wall."""
from __future__ import annotations

import os
import threading
from typing import Optional

import cv2
import numpy as np

OPENCV_DATA = '/usr/share/doc/opencv-doc/examples/data'

_cache: dict[str, Optional[np.ndarray]] = {}  # read-only photos, shared by all renderers
_lock = threading.Lock()


def _load(name: str) -> Optional[np.ndarray]:
    """Load a backdrop photo as (H, W, 3) uint8 RGB, or None if it is not installed."""
    source, _, item = name.partition(':')
    try:
        if source == 'skimage':
            import skimage.data  # imported lazily: only photo backdrops need it
            img = np.asarray(getattr(skimage.data, item)())
        elif source == 'opencv':
            path = os.path.join(OPENCV_DATA, item)
            bgr = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.exists(path) else None
            if bgr is None:
                return None
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        else:
            return None
    except Exception:  # noqa: BLE001 - a missing or broken optional photo means: no photo
        return None
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float32) / max(float(img.max()), 1.0))).astype(np.uint8)
    return np.ascontiguousarray(img)


def backdrop_photo(name: str) -> Optional[np.ndarray]:
    """Return the cached photo for a backdrop name like 'skimage:coffee', or None."""
    with _lock:
        if name not in _cache:
            _cache[name] = _load(name)
        return _cache[name]


def fit_photo(photo: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop the photo to the aspect of (height, width) and resize, slightly blurred."""
    ph, pw = photo.shape[:2]
    scale = max(height / ph, width / pw)
    ch, cw = min(ph, int(np.ceil(height / scale))), min(pw, int(np.ceil(width / scale)))
    y0, x0 = (ph - ch) // 2, (pw - cw) // 2
    crop = photo[y0:y0 + ch, x0:x0 + cw]
    # Down then up: a cheap defocus blur, the backdrop is far behind the table.
    small = cv2.resize(crop, (max(width // 3, 1), max(height // 3, 1)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

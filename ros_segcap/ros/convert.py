"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Reading is zero-copy where the layout allows it (`np.frombuffer` on the message's buffer);
building assigns `bytes` to `msg.data`, because assigning an ndarray copies element by
element (~300 ms for 3 MB). Every malformed image raises the core's InputError with a
one-line reason, so the node can publish it as a status instead of dying. A compressed image
is checked against the pixel limit from its PNG/JPEG header, before anything is decoded (a
0.75 MB PNG can decode to 16000x16000 px); a truncated JPEG is refused.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ros_segcap.core.image_header import ImageSizeError, check_size, checked_decode, decoded_size
from ros_segcap.core.types import InputError

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: a 8000x6000 (48 MP) frame is refused by default

# encoding -> (channels, bytes per channel)
ENCODINGS: dict[str, tuple[int, int]] = {
    'rgb8': (3, 1), 'bgr8': (3, 1), 'rgba8': (4, 1), 'bgra8': (4, 1),
    'mono8': (1, 1), '8UC1': (1, 1), 'mono16': (1, 2), '16UC1': (1, 2),
}
_TO_RGB = {
    'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB,
    'mono8': cv2.COLOR_GRAY2RGB, '8UC1': cv2.COLOR_GRAY2RGB,
}
COMPRESSED_FORMATS = ('jpeg', 'jpg', 'png')


def check_image(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise InputError if `msg` cannot be read; O(1), reads only the header fields."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise InputError(f'unsupported image encoding {enc!r}; use one of '
                         f'{", ".join(ENCODINGS)}')
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise InputError(f'image has zero size ({w}x{h})')
    if h * w > max_pixels:
        raise InputError(f'image is {w}x{h} ({h * w / 1e6:.1f} MP), more than the limit of '
                         f'{max_pixels / 1e6:.1f} MP (parameter max_image_megapixels)')
    channels, depth = ENCODINGS[enc]
    if step < w * channels * depth:
        raise InputError(f'image step {step} is less than width*{channels * depth} = '
                         f'{w * channels * depth} for {enc}')
    if len(msg.data) < h * step:
        raise InputError(f'image data has {len(msg.data)} bytes, less than height*step = '
                         f'{h * step}')


def image_to_numpy(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the pixels in the message's own encoding: (H, W, C) or (H, W) for one channel.

    A view of msg.data when the layout allows it (no copy); 16-bit big-endian data is
    returned as a big-endian dtype view (values are correct, no byte swap).
    """
    check_image(msg, max_pixels)
    channels, depth = ENCODINGS[msg.encoding]
    h, w, step = msg.height, msg.width, msg.step
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=h * step).reshape(h, step)
    rows = rows[:, :w * channels * depth]  # drop the step padding (still a view)
    if depth == 2:
        rows = rows.view('>u2' if msg.is_bigendian else '<u2')
    return rows.reshape(h, w, channels) if channels > 1 else rows


def to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """Convert pixels of a known encoding to (H, W, 3) uint8 RGB (no copy for rgb8)."""
    if encoding == 'rgb8':
        return array
    if encoding in _TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(array), _TO_RGB[encoding])
    if encoding in ('mono16', '16UC1'):
        return cv2.cvtColor(scale_to_8bit(array), cv2.COLOR_GRAY2RGB)
    raise InputError(f'unsupported image encoding {encoding!r}')


def scale_to_8bit(array: np.ndarray) -> np.ndarray:
    """Map a 16-bit image to uint8 by its own min..max range (as cv_bridge does for display)."""
    lo, hi = int(array.min()), int(array.max())
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    scaled = (array.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a sensor_msgs/Image as (H, W, 3) uint8 RGB (a view of msg.data for rgb8)."""
    return to_rgb(image_to_numpy(msg, max_pixels), msg.encoding)


def check_compressed(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise InputError for a CompressedImage that is not jpeg/png, has no data, or whose
    header states an empty image or more than `max_pixels`; reads the header only."""
    fmt = msg.format.lower()
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise InputError(f'unsupported compressed format {msg.format!r}; use jpeg or png')
    if len(msg.data) == 0:
        raise InputError('compressed image has no data')
    size = decoded_size(bytes(msg.data))
    if size is not None:
        with _one_line():
            check_size(size[0], size[1], max_pixels, 'compressed image')


def compressed_to_rgb(msg: CompressedImage,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a jpeg/png CompressedImage to (H, W, 3) uint8 RGB; the size is checked from the
    header first, so an image above `max_pixels` is never decoded."""
    check_compressed(msg)
    with _one_line():
        bgr = checked_decode(bytes(msg.data), max_pixels, 'compressed image')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@contextmanager
def _one_line() -> Iterator[None]:
    """Turn the header checks' ValueErrors into InputError (naming the parameter on size)."""
    try:
        yield
    except InputError:
        raise
    except ImageSizeError as exc:
        hint = ' (parameter max_image_megapixels)' if 'limit' in str(exc) else ''
        raise InputError(f'{exc}{hint}') from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def image_error(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """Return why a received Image or CompressedImage cannot be used, or ''."""
    try:
        if isinstance(msg, Image):
            check_image(msg, max_pixels)
        else:
            check_compressed(msg, max_pixels)
    except InputError as exc:
        return str(exc)
    return ''


def message_to_rgb(msg: Image | CompressedImage, error: str = '',
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a received frame; InputError with `error` when it is set."""
    if error:
        raise InputError(error)
    if isinstance(msg, Image):
        return image_to_rgb(msg, max_pixels)
    return compressed_to_rgb(msg, max_pixels)


def numpy_to_image(array: np.ndarray, encoding: str,
                   header: Optional[Header] = None) -> Image:
    """Build a sensor_msgs/Image from (H, W[, C]) pixels already in `encoding`."""
    if encoding not in ENCODINGS:
        raise ValueError(f'cannot build an image with encoding {encoding!r}')
    channels, depth = ENCODINGS[encoding]
    shape_ok = array.ndim == 2 and channels == 1 or array.ndim == 3 and array.shape[2] == channels
    if array.dtype.kind != 'u' or array.dtype.itemsize != depth or not shape_ok:
        want = f'(H, W, {channels})' if channels > 1 else '(H, W)'
        raise ValueError(f'{encoding} needs {want} uint{8 * depth}, got {array.shape} '
                         f'{array.dtype}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * depth
    # bytes, not the ndarray: assigning an ndarray copies element by element
    msg.data = np.ascontiguousarray(array, dtype='<u2' if depth == 2 else 'u1').tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, fmt: str = 'jpeg',
                      header: Optional[Header] = None) -> CompressedImage:
    """Encode (H, W, 3) uint8 RGB as a jpeg or png CompressedImage."""
    ext = '.png' if fmt == 'png' else '.jpg'
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f'could not encode a {rgb.shape} image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = 'png' if fmt == 'png' else 'jpeg'
    msg.data = buf.tobytes()
    return msg


def mask_to_image(mask: np.ndarray, header: Optional[Header] = None) -> Image:
    """Build a mono8 Image from an (H, W) bool or uint8 mask (True/nonzero -> 255)."""
    return numpy_to_image(np.where(mask, 255, 0).astype(np.uint8), 'mono8', header)


def image_to_mask(msg: Image, height: int, width: int) -> np.ndarray:
    """Read a mono8 mask Image as (H, W) bool; InputError if it is not height x width."""
    if msg.encoding not in ('mono8', '8UC1'):
        raise InputError(f'mask prompt must be mono8, got {msg.encoding!r}')
    mask = image_to_numpy(msg)
    if mask.shape != (height, width):
        raise InputError(f'mask prompt is {mask.shape[1]}x{mask.shape[0]} but the image is '
                         f'{width}x{height}')
    return mask > 0

"""Image sizes read from the file header, before anything is decoded.

A small compressed file can decode to a huge image (a 0.75 MB PNG of 16000 x 16000 px takes
768 MB as RGB). `decoded_size` reads the width and height that PNG, JPEG, BMP, GIF and WebP
files state in their headers, so a caller can refuse the file before decoding it, and
`checked_decode` does both. Formats it cannot read are decoded and checked afterwards.
"""
from __future__ import annotations

import struct
from typing import Optional

import cv2
import numpy as np

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers: 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC)
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# markers without a length field
STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


class ImageSizeError(ValueError):
    """An image is larger than allowed, or its header is broken; one-line message."""


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None  # not at a marker: broken header
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack('>H', data[i + 2:i + 4])
        if marker in SOF_MARKERS:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack('>HH', data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> Optional[tuple[int, int]]:
    kind = data[12:16]
    if kind == b'VP8 ' and len(data) >= 30:
        w, h = struct.unpack('<HH', data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b'VP8L' and len(data) >= 25:
        bits = int.from_bytes(data[21:25], 'little')
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b'VP8X' and len(data) >= 30:
        return (int.from_bytes(data[24:27], 'little') + 1,
                int.from_bytes(data[27:30], 'little') + 1)
    return None


def decoded_size(data: bytes) -> Optional[tuple[int, int]]:
    """(width, height) the header of a PNG, JPEG, BMP, GIF or WebP file states, else None.

    None means: not one of these formats, or a header too short or broken to read.
    """
    if data.startswith(PNG_MAGIC) and len(data) >= 24 and data[12:16] == b'IHDR':
        return struct.unpack('>II', data[16:24])
    if data.startswith(b'\xff\xd8'):
        return _jpeg_size(data)
    if data.startswith(b'BM') and len(data) >= 26:
        w, h = struct.unpack('<ii', data[18:26])
        return abs(w), abs(h)
    if data.startswith((b'GIF87a', b'GIF89a')) and len(data) >= 10:
        return struct.unpack('<HH', data[6:10])
    if data.startswith(b'RIFF') and data[8:12] == b'WEBP':
        return _webp_size(data)
    return None


def check_size(width: int, height: int, max_pixels: int, what: str = 'image') -> None:
    """Raise ImageSizeError when width x height is empty or above max_pixels."""
    if width <= 0 or height <= 0:
        raise ImageSizeError(f'{what} has zero size ({width}x{height})')
    if width * height > max_pixels:
        raise ImageSizeError(f'{what} is {width}x{height} = {width * height / 1e6:.1f} MP; '
                             f'the limit is {max_pixels / 1e6:.1f} MP')


def checked_decode(data: bytes, max_pixels: int, what: str = 'image') -> np.ndarray:
    """Decode compressed image bytes to (H, W, 3) uint8 BGR, refusing oversized images from
    their header first. Raises ImageSizeError (too large, empty) or ValueError (undecodable)."""
    size = decoded_size(data)
    if data.startswith(b'\xff\xd8') and b'\xff\xd9' not in data[-1024:]:
        raise ValueError(f'{what} is a truncated JPEG (no end-of-image marker)')
    if size is not None:
        check_size(size[0], size[1], max_pixels, what)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'{what} cannot be decoded (not a supported image format, or '
                         'truncated)')
    check_size(bgr.shape[1], bgr.shape[0], max_pixels, what)
    return bgr

"""Image sizes from headers: bombs are refused before any decoding."""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from ros_segcap.core import image_header
from ros_segcap.core.image_header import ImageSizeError, checked_decode, decoded_size


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG of a huge all-black image: header, one small IDAT of zlib'd zero rows."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack('>I', len(body)) + kind + body + \
            struct.pack('>I', zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    rows = zlib.compressobj(9)
    data = b''.join(rows.compress(b'\0' * (1 + 3 * width)) for _ in range(64)) + rows.flush()
    return image_header.PNG_MAGIC + chunk(b'IHDR', ihdr) + chunk(b'IDAT', data) + \
        chunk(b'IEND', b'')


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.bmp', '.webp'])
def test_header_sizes_match_the_decoded_image(ext):
    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    data = cv2.imencode(ext, img)[1].tobytes()
    assert decoded_size(data) == (53, 37)
    assert checked_decode(data, 10_000).shape == (37, 53, 3)


def test_progressive_jpeg_and_unknown_formats():
    img = np.zeros((20, 30, 3), np.uint8)
    prog = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert decoded_size(prog) == (30, 20)
    assert decoded_size(b'not an image') is None
    assert decoded_size(b'\xff\xd8\xff') is None  # a JPEG cut in its header


def test_a_png_bomb_is_refused_without_decoding(monkeypatch):
    bomb = png_bomb(16000, 16000)
    assert len(bomb) < 200_000 and decoded_size(bomb) == (16000, 16000)

    def no_decode(*_args):
        raise AssertionError('decoded before the size check')
    monkeypatch.setattr(image_header.cv2, 'imdecode', no_decode)
    with pytest.raises(ImageSizeError, match='16000x16000 = 256.0 MP; the limit is 40.0 MP'):
        checked_decode(bomb, 40_000_000, 'image')


def test_truncated_jpeg_and_garbage_are_refused():
    img = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = cv2.imencode('.jpg', img)[1].tobytes()
    with pytest.raises(ValueError, match='truncated JPEG'):
        checked_decode(data[:len(data) // 2], 10**6)
    with pytest.raises(ValueError, match='cannot be decoded'):
        checked_decode(b'\x00garbage' * 10, 10**6)
    with pytest.raises(ImageSizeError, match='zero size'):
        image_header.check_size(0, 10, 100)

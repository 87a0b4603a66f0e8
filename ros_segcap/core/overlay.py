"""Pictures of a result: coloured mask overlay with phrase labels, and a label image."""
from __future__ import annotations

import cv2
import numpy as np

from .types import SegCapResult

PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200),
                    (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
                    (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40)], np.uint8)


def colour(i: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[i % len(PALETTE)])


def label_image(result: SegCapResult, height: int, width: int) -> np.ndarray:
    """(H, W) uint8: 0 = background, i+1 = mask i (later masks win where they overlap);
    results with ids (panoptic, tracking) write each mask's id instead (an instance-id
    image; ids above 255 wrap)."""
    labels = np.zeros((height, width), np.uint8)
    for i, m in enumerate(result.masks[:255]):
        labels[m] = (result.ids[i] - 1) % 255 + 1 if result.ids else i + 1
    return labels


def _key(result: SegCapResult, i: int) -> int:
    """The colour index of mask i: its id when the result has ids (stable across frames)."""
    return result.ids[i] - 1 if result.ids else i


def _name(result: SegCapResult, i: int, phrase: str) -> str:
    text = phrase or f'mask {i + 1}'
    return f'{text} #{result.ids[i]}' if result.ids else text


def draw_overlay(image: np.ndarray, result: SegCapResult, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 RGB: masks blended in colour, outlined, labelled with their phrase."""
    out = image.copy()
    h, w = image.shape[:2]
    scale = max(0.4, min(h, w) / 640)
    for i, m in enumerate(result.masks):
        if not m.any():
            continue
        c = np.array(colour(_key(result, i)), np.float32)
        out[m] = (out[m] * (1 - alpha) + c * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour(_key(result, i)), max(1, int(2 * scale)))
    for i, (m, phrase) in enumerate(zip(result.masks, result.phrases)):
        if m.any():
            ys, xs = np.nonzero(m)
            _label(out, _name(result, i, phrase), int(xs.min()), int(ys.min()),
                   colour(_key(result, i)), scale)
    if result.answer:
        _caption(out, result.answer, scale)
    return out


def _label(img: np.ndarray, text: str, x: int, y: int, col, scale: float) -> None:
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(scale * 1.5))
    (tw, th), base = cv2.getTextSize(text, font, 0.6 * scale, thick)
    y = max(th + base, y)
    cv2.rectangle(img, (x, y - th - base), (x + tw + 4, y), col, -1)
    cv2.putText(img, text, (x + 2, y - base), font, 0.6 * scale, (0, 0, 0), thick, cv2.LINE_AA)


def _caption(img: np.ndarray, text: str, scale: float) -> None:
    """The answer along the bottom edge, wrapped to the image width."""
    font, fs, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, max(1, int(scale * 1.3))
    h, w = img.shape[:2]
    lines, cur = [], ''
    for word in text.split():
        trial = f'{cur} {word}'.strip()
        if cv2.getTextSize(trial, font, fs, thick)[0][0] > w - 10 and cur:
            lines.append(cur)
            cur = word
        else:
            cur = trial
    lines.append(cur)
    lines = lines[-4:]
    line_h = int(cv2.getTextSize('Ag', font, fs, thick)[0][1] * 1.8)
    top = h - line_h * len(lines) - 4
    band = img[max(0, top):]
    band[:] = (band * 0.4).astype(np.uint8)
    for j, line in enumerate(lines):
        cv2.putText(img, line, (5, top + line_h * (j + 1) - 4), font, fs, (255, 255, 255),
                    thick, cv2.LINE_AA)

"""Typed values passed between the stages of the runtime and to the ROS / CLI layers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

PROMPT_KINDS = ('point', 'box', 'mask')


class InputError(ValueError):
    """Bad user input (image, prompt, visual prompt). The message names the problem."""


class ModelError(RuntimeError):
    """A model cannot be built or loaded (a missing asset, file or setting); the message
    says what to install or fix."""


@dataclass(frozen=True)
class VisualPrompt:
    """A point, box or mask given by the user, in original image pixel coordinates.

    kind='point': point=(x, y). kind='box': box=(x1, y1, x2, y2) with x2 >= x1, y2 >= y1.
    kind='mask': mask is an (H, W) bool array the size of the image.
    """

    kind: str
    point: Optional[tuple[float, float]] = None
    box: Optional[tuple[float, float, float, float]] = None
    mask: Optional[np.ndarray] = None  # (H, W) bool

    def validate(self, height: int, width: int) -> None:
        """Raise InputError with a one-line reason if the prompt does not fit the image."""
        if self.kind not in PROMPT_KINDS:
            raise InputError(f'visual prompt kind must be one of {PROMPT_KINDS}, '
                             f'got {self.kind!r}')
        if self.kind == 'point':
            if self.point is None:
                raise InputError('point prompt without a point')
            x, y = self.point
            if not (0 <= x < width and 0 <= y < height):
                raise InputError(f'point ({x:g}, {y:g}) is outside the {width}x{height} image')
        elif self.kind == 'box':
            if self.box is None:
                raise InputError('box prompt without a box')
            x1, y1, x2, y2 = self.box
            if x2 < x1 or y2 < y1:
                raise InputError(f'box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) needs x2 >= x1 '
                                 'and y2 >= y1')
            if x2 < 0 or y2 < 0 or x1 >= width or y1 >= height:
                raise InputError(f'box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the '
                                 f'{width}x{height} image')
        else:
            if self.mask is None:
                raise InputError('mask prompt without a mask')
            if self.mask.shape[:2] != (height, width):
                raise InputError(f'mask prompt is {self.mask.shape[1]}x{self.mask.shape[0]} but '
                                 f'the image is {width}x{height}')
            if not self.mask.any():
                raise InputError('mask prompt is empty (no pixel set)')


@dataclass
class Timing:
    """Milliseconds per stage of one request (stages that did not run are absent)."""

    ms: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.ms[stage] = self.ms.get(stage, 0.0) + ms

    @property
    def total(self) -> float:
        return sum(self.ms.values())


@dataclass
class SegCapResult:
    """Answer to one command on one frame.

    masks[i] belongs to phrases[i]; boxes are (x1, y1, x2, y2) in pixels of the original
    image; an answer without [SEG] has no masks. status is 'ok' or a one-line reason.
    Panoptic and tracking results add per object: ids (an object id, stable across frames
    while tracked), stuff (a stuff region: background, table), match_scores (how well a
    tracked object was re-found; 0 = lost, empty mask); regrounded: the LLM answered on this
    frame. Ordinary answers leave them empty.
    """

    answer: str  # text without special tokens
    raw_text: str = ''  # generated text with special tokens
    phrases: list[str] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # (H, W) bool each
    scores: list[float] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    status: str = 'ok'
    model: str = ''
    ids: list[int] = field(default_factory=list)
    stuff: list[bool] = field(default_factory=list)
    match_scores: list[float] = field(default_factory=list)
    regrounded: bool = False

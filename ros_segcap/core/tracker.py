"""Tracking from a language command: the LLM answers once, later frames run vision only.

The first frame is answered by the full pipeline; the hidden state of each [SEG] token is
kept. On each later frame those states are decoded against the new frame's features
(Pipeline.refind: for seg_pointer models the state's pointer scores over the new frame's
object tokens, else the [SEG] query through the mask decoder) and each mask is matched to
the object's previous mask: the match score (their IoU, or the IoU after moving the old mask
onto the new one's centroid if it moved at most its own size, whichever is higher). The LLM
answers again (re-grounding) when a match is weak (score < min_match, or an empty mask),
every `reground_s` seconds, and every `retry_lost_s` while an object is lost. After a
re-ground, each object takes the new mask with its phrase (the most overlapping one if
several) or else one that overlaps it by >= min_match, and keeps its id; an object the
answer no longer names is reported lost (empty mask, match score 0) until a later re-ground
finds it. Knows nothing of ROS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
import time
from typing import Callable, Hashable, Optional

import numpy as np
import torch

from .options import option
from .pipeline import Pipeline, mask_box, mask_iou
from .types import SegCapResult, Timing

TRACK_PREFIXES = ('track ',)  # 'track the red cup': tracked even without continuous mode


def track_command(text: str) -> Optional[str]:
    """'track the red cup' -> 'the red cup'; None for other commands."""
    low = text.lstrip().lower()
    for prefix in TRACK_PREFIXES:
        if low.startswith(prefix) and low[len(prefix):].strip():
            return text.lstrip()[len(prefix):].strip()
    return None


def match_score(new: np.ndarray, old: np.ndarray) -> float:
    """How well a re-found mask continues the old one: their IoU, or the IoU once the old
    mask is moved onto the new one's centroid (the same shape after camera or object motion)
    if that move is at most the old mask's box diagonal, whichever is higher; 0 for an empty
    mask."""
    if not new.any() or not old.any():
        return 0.0
    (ny, nx), (oy, ox) = (np.argwhere(m).mean(0) for m in (new, old))
    x1, y1, x2, y2 = mask_box(old)
    if math.hypot(ny - oy, nx - ox) > math.hypot(x2 - x1 + 1, y2 - y1 + 1):
        return mask_iou(new, old)  # moved further than its own size: another object
    return max(mask_iou(new, old), mask_iou(new, shifted(old, round(ny - oy), round(nx - ox))))


def shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The mask moved by (dy, dx) pixels; what leaves the image is dropped."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@dataclass(frozen=True)
class TrackSettings:
    """When the tracker asks the LLM again (defaults and ranges: core.options)."""

    min_match: float = option('track_min_match').default
    reground_s: float = option('track_reground_s').default  # 0 = only when weak or lost
    retry_lost_s: float = option('track_retry_lost_s').default  # 0 = on every frame


@dataclass
class Track:
    """One tracked object: its id, phrase, [SEG] state (H,) and last non-empty mask."""

    id: int
    phrase: str
    hidden: Optional[torch.Tensor]
    mask: np.ndarray  # (H, W) bool, the last mask seen
    lost: bool = False


@dataclass
class _Grounding:
    """[SEG] states and mask probabilities of one answer, in [SEG] order."""

    hidden: list[torch.Tensor] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)

    def add(self, hidden: torch.Tensor, probs: np.ndarray) -> None:
        self.hidden.append(hidden)
        self.probs.append(probs)


class Tracker:
    """Follow the objects of one command across frames (see the module docstring)."""

    def __init__(self, pipeline: Pipeline, settings: TrackSettings = TrackSettings(), *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline, self.settings, self._clock = pipeline, settings, clock
        self.command: Optional[str] = None
        self.tracks: list[Track] = []
        self._next_id = 1
        self._grounded_at = -np.inf
        self._answer = ''

    def start(self, command: str) -> None:
        """Track the objects of a new command (replacing the tracked set) from the next step."""
        self.command, self.tracks, self._grounded_at = command, [], -np.inf

    def step(self, image: np.ndarray, frame_key: Optional[Hashable] = None,
             on_text: Optional[Callable[[str], bool]] = None) -> SegCapResult:
        """Follow the tracked objects on a frame; the first step (and re-grounds) run the LLM.

        on_text streams the answer of a re-ground (as in Pipeline.run). Raises InputError
        for a bad image or command (as Pipeline.run).
        """
        if self.command is None:
            raise ValueError('Tracker.step before start(command): say what to track')
        since = self._clock() - self._grounded_at
        due = (self.settings.reground_s > 0 and since >= self.settings.reground_s) or \
            (any(t.lost for t in self.tracks) and since >= self.settings.retry_lost_s)
        if not self.tracks or due:
            return self._ground(image, frame_key, Timing(), on_text)
        timing = Timing()
        live = [t for t in self.tracks if not t.lost]
        probs = self.pipeline.refind(image, torch.stack([t.hidden for t in live]), frame_key,
                                     timing, [t.phrase for t in live]) if live else []
        threshold = self.pipeline.settings.mask_threshold
        masks = {t.id: p > threshold for t, p in zip(live, probs)}
        scores = {t.id: match_score(masks[t.id], t.mask) for t in live}
        if any(s < max(self.settings.min_match, 1e-6) for s in scores.values()):
            return self._ground(image, frame_key, timing, on_text)
        for t in live:
            t.mask = masks[t.id]
        confidence = {t.id: float(p[masks[t.id]].mean()) if masks[t.id].any() else 0.0
                      for t, p in zip(live, probs)}
        return self._result(image, masks, scores, confidence, timing, regrounded=False)

    # ----- grounding ----------------------------------------------------------------------

    def _ground(self, image: np.ndarray, frame_key: Optional[Hashable], timing: Timing,
                on_text: Optional[Callable[[str], bool]]) -> SegCapResult:
        got = _Grounding()
        answer = self.pipeline.run(image, self.command, frame_key=frame_key, on_text=on_text,
                                   on_state=got.add)
        for stage, ms in answer.timing.ms.items():
            timing.add(stage, ms)
        self._grounded_at, self._answer = self._clock(), answer.answer
        new = self._kept(answer, got)  # (phrase, hidden, mask, score) per object named
        used: set[int] = set()
        masks: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        confidence: dict[int, float] = {}
        for t in self.tracks:  # each old object takes the new mask that names or overlaps it
            best = self._match(t, new, used)
            if best is None:
                t.lost, masks[t.id], scores[t.id] = True, np.zeros_like(t.mask), 0.0
                continue
            used.add(best)
            iou = mask_iou(new[best][2], t.mask)
            t.phrase, t.hidden, t.mask, t.lost = new[best][0], new[best][1], new[best][2], False
            masks[t.id], scores[t.id], confidence[t.id] = t.mask, max(iou, 1e-3), new[best][3]
        for j, (phrase, hidden, mask, score) in enumerate(new):
            if j not in used and mask.any():
                track = Track(self._next_id, phrase, hidden, mask)
                self._next_id += 1
                self.tracks.append(track)
                masks[track.id], scores[track.id], confidence[track.id] = mask, 1.0, score
        result = self._result(image, masks, scores, confidence, timing, regrounded=True)
        result.raw_text, result.status = answer.raw_text, answer.status
        return result

    def _match(self, track: Track, new: list, used: set[int]) -> Optional[int]:
        """The new object that continues `track`: the same phrase (the answer names the same
        object; the most overlapping one when several do), else an overlap >= min_match."""
        best, best_score = None, max(self.settings.min_match, 1e-6)
        for j, (phrase, _, mask, _) in enumerate(new):
            if j in used or not mask.any():
                continue
            score = mask_iou(mask, track.mask) + (1.0 if phrase == track.phrase else 0.0)
            if score >= best_score:
                best, best_score = j, score
        return best

    def _kept(self, answer: SegCapResult, got: _Grounding
              ) -> list[tuple[str, torch.Tensor, np.ndarray, float]]:
        """The answer's objects with the [SEG] state each mask came from (the answer may
        have dropped repeated [SEG]s, keeping the order: core.pipeline.drop_repeats)."""
        threshold = self.pipeline.settings.mask_threshold
        out, j = [], 0
        for phrase, mask, score in zip(answer.phrases, answer.masks, answer.scores):
            while j < len(got.probs) and not np.array_equal(got.probs[j] > threshold, mask):
                j += 1
            if j == len(got.probs):
                break
            out.append((phrase, got.hidden[j], mask, score))
            j += 1
        return out

    # ----- results ------------------------------------------------------------------------

    def _result(self, image: np.ndarray, masks: dict[int, np.ndarray],
                scores: dict[int, float], confidence: dict[int, float], timing: Timing, *,
                regrounded: bool) -> SegCapResult:
        result = SegCapResult(answer=self._answer, timing=timing, regrounded=regrounded,
                              model=self.pipeline.model.config.name)
        empty = np.zeros(image.shape[:2], bool)
        for t in self.tracks:
            mask = masks.get(t.id, empty) if not t.lost else empty
            result.ids.append(t.id)
            result.phrases.append(t.phrase)
            result.masks.append(mask)
            result.scores.append(confidence.get(t.id, 0.0) if mask.any() else 0.0)
            result.boxes.append(mask_box(mask))
            result.match_scores.append(float(scores.get(t.id, 0.0)) if not t.lost else 0.0)
        return result

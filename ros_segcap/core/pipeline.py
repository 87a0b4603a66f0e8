"""Runtime: preprocess -> vision -> prompts -> LLM -> [SEG] masks -> postprocess.

The Pipeline holds a model (core.protocol.SegModel) and the engine that runs its vision half
(core.protocol.Engine), both handed in by the caller (ros_segcap.runtime.open_pipeline opens
them from the options). Encoder outputs are cached per frame key (a small LRU), so several
commands on one frame encode it once. Each Pipeline owns its cache: two cameras need two
pipelines or two keys.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, replace
import math
import threading
import time
from typing import Callable, Hashable, Optional

import numpy as np
import torch

from .answer import parse_answer, referring_answer
from .frames import FrameFeatures
from .options import check, live, option
from .panoptic import panoptic_result
from .preprocess import (InputGeometry, Letterbox, PromptQueries, check_image, letterbox,
                         prompt_queries, unletterbox)
from .protocol import Engine, Request, SegModel
from .refine import radius_px, refine
from .tokens import MARK_TOKEN, REGION_TOKEN, SEG_TOKEN, check_prompt
from .types import InputError, SegCapResult, Timing, VisualPrompt

LIVE_OPTIONS = live('pipeline')


@dataclass(frozen=True)
class Settings:
    """How the Pipeline answers (defaults and ranges: core.options)."""

    max_new_tokens: int = option('max_new_tokens').default
    temperature: float = option('temperature').default
    mask_threshold: float = option('mask_threshold').default
    refine_edges: bool = option('refine_edges').default
    check_presence: bool = option('check_presence').default
    region_places: bool = option('region_places').default
    cache_frames: int = option('frame_buffer').default  # frames whose encoder outputs stay


class Pipeline:
    """Encode a frame once, answer many commands on it."""

    def __init__(self, model: SegModel, engine: Engine, settings: Settings = Settings()
                 ) -> None:
        self.model = model
        self.engine = engine
        self.settings = settings
        self.backend = engine.backend
        self.device = torch.device(getattr(engine, 'device', 'cpu'))
        self.geometry = InputGeometry.of(model.config)  # placement, pad colour, resize
        self._frames: OrderedDict[Hashable, tuple[FrameFeatures, Letterbox]] = OrderedDict()
        self._lock = threading.RLock()
        self.encode_count = 0

    @property
    def trained(self) -> bool:
        return self.model.trained

    def set_option(self, name: str, value) -> Optional[str]:
        """Change a live option; returns None when applied, else why it cannot apply live."""
        if name not in LIVE_OPTIONS:
            return f'{name} cannot change at run time (restart the node to change it)'
        why = check(name, value)
        if why:
            return why
        self.settings = replace(self.settings, **{name: value})
        return None

    # ----- stages -------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _timed(timing: Timing, stage: str):
        t0 = time.perf_counter()
        yield
        timing.add(stage, (time.perf_counter() - t0) * 1000.0)

    def encode(self, image: np.ndarray, frame_key: Optional[Hashable] = None,
               timing: Optional[Timing] = None) -> tuple[FrameFeatures, Letterbox]:
        """Vision outputs of a frame, from the cache when frame_key was seen."""
        timing = timing or Timing()
        with self._lock:
            if frame_key is not None and frame_key in self._frames:
                self._frames.move_to_end(frame_key)
                return self._frames[frame_key]
            with self._timed(timing, 'preprocess'):
                tensor, box = letterbox(image, self.model.config.image_size, self.geometry)
            with self._timed(timing, 'vision'), torch.no_grad():
                frame = self.model.frame(tensor, self.engine)
            self.encode_count += 1
            if frame_key is not None:
                self._frames[frame_key] = (frame, box)
                while len(self._frames) > max(1, self.settings.cache_frames):
                    self._frames.popitem(last=False)
            return frame, box

    def run(self, image: np.ndarray, prompt: str, visual_prompt: Optional[VisualPrompt] = None,
            frame_key: Optional[Hashable] = None,
            on_text: Optional[Callable[[str], bool]] = None,
            on_mask: Optional[Callable[[int, np.ndarray], None]] = None,
            on_state: Optional[Callable[[torch.Tensor, np.ndarray], None]] = None
            ) -> SegCapResult:
        """Answer one command on one frame. Raises InputError for bad input.

        on_text(piece) streams the answer text (return False to cancel); on_mask(i, mask)
        gets mask i (bool, original size) as soon as its [SEG] token is generated;
        on_state(hidden (H,), probabilities (H_img, W_img)) gets each [SEG] hidden state
        with its mask (a tracker keeps them to re-find the objects on later frames).
        """
        question = self._check(image, prompt, visual_prompt)
        timing = Timing()
        with self._lock, torch.no_grad():
            frame, box = self.encode(image, frame_key, timing)
            regions, q = None, None
            if visual_prompt is not None:
                with self._timed(timing, 'prompt_decode'):
                    q = prompt_queries([visual_prompt], box, self.model.config.mask_size)
                    q = PromptQueries(q.kinds.to(self.device), q.boxes.to(self.device),
                                      q.restrict.to(self.device))
                    regions = self.model.region_tokens(frame, q, self.engine)
            with self._timed(timing, 'prior_projectors'):
                embeds, prefix_len = self.model.question_embeds(frame, question, regions)
                guide = self.model.answer_guide(frame, question, q, box, self.engine,
                                                presence=self.settings.check_presence,
                                                places=self.settings.region_places)
            key = None if frame_key is None else (frame_key, id(frame))
            early: list[np.ndarray] = []
            states: list[torch.Tensor] = []  # the answer's [SEG] states so far
            said: list[str] = []  # the answer's text so far

            def heard(piece: str) -> bool:
                said.append(piece)
                return on_text is None or on_text(piece) is not False

            def on_seg(hidden: torch.Tensor) -> None:
                with self._timed(timing, 'mask_decode'):
                    earlier = torch.stack(states) if states else None
                    named = parse_answer(''.join(said) + f' {SEG_TOKEN}').phrases
                    logits = self._mask_logits(frame, box, hidden[None], earlier,
                                               Request(question, q, named))
                    probs = self.probabilities(logits, image, box)[0]
                states.append(hidden)
                early.append(probs)
                if on_state is not None:
                    on_state(hidden.detach(), probs)
                if on_mask is not None:
                    on_mask(len(early) - 1, probs > self.settings.mask_threshold)
            gen = self._generate(embeds, timing, heard, prefix_len, key, on_seg, guide)
            return self._finish(gen, early, timing)

    def panoptic(self, image: np.ndarray, frame_key: Optional[Hashable] = None
                 ) -> SegCapResult:
        """Every object the decoder keeps for the frame, without the LLM: phrases are class
        names, with ids (1..N on this frame) and stuff flags (core.panoptic)."""
        check_image(image)
        timing = Timing()
        with self._lock, torch.no_grad():
            frame, box = self.encode(image, frame_key, timing)
            with self._timed(timing, 'panoptic'):
                objects = self.model.panoptic(frame)
                logits = unletterbox(objects.mask_logits, box)
                result = panoptic_result(objects, logits, self.settings.mask_threshold)
        result.timing, result.model = timing, self.model.config.name
        return result

    def refind(self, image: np.ndarray, hidden: torch.Tensor,
               frame_key: Optional[Hashable] = None, timing: Optional[Timing] = None,
               phrases: Optional[list[str]] = None) -> np.ndarray:
        """[SEG] hidden states (n, H) kept from an answer -> their mask probabilities
        (n, H_img, W_img) on this frame: vision and the mask decoder only, no LLM
        (phrases: the answer's phrase of each state, which a model may match with its
        heads, as in run)."""
        check_image(image)
        timing = timing if timing is not None else Timing()
        with self._lock, torch.no_grad():
            frame, box = self.encode(image, frame_key, timing)
            with self._timed(timing, 'mask_decode'):
                logits = self._mask_logits(frame, box, hidden.to(self.device), None,
                                           Request(phrases=phrases))
                return self.probabilities(logits, image, box)

    def _check(self, image, prompt: str, visual_prompt: Optional[VisualPrompt]) -> str:
        check_image(image)
        return check_request(prompt, visual_prompt, image.shape[0], image.shape[1])

    def _generate(self, embeds: torch.Tensor, timing: Timing, on_text, prefix_len: int,
                  prefix_key, on_seg, guide=None):
        gen = self.model.generate(embeds, max_new_tokens=self.settings.max_new_tokens,
                                  temperature=self.settings.temperature, on_text=on_text,
                                  on_seg=on_seg, prefix_len=prefix_len, prefix_key=prefix_key,
                                  guide=guide)
        timing.add('llm_prefill', gen.stats['prefill_ms'])
        # masks were decoded inside the generation loop, as soon as each [SEG] appeared
        timing.add('llm_decode', gen.stats['decode_ms'] - timing.ms.get('mask_decode', 0.0))
        return gen

    def probabilities(self, logits: torch.Tensor, image: np.ndarray, box: Letterbox
                      ) -> np.ndarray:
        """(n, H, W) mask logits on the image -> (n, H, W) float32 probabilities, with
        edges refined against the image (refine_edges)."""
        probs = logits.sigmoid().float().cpu().numpy()
        if not self.settings.refine_edges:
            return probs
        r = radius_px(box.cell_px(self.model.config.mask_size))
        return np.stack([refine(image, p, r) for p in probs]) if len(probs) else probs

    def _mask_logits(self, frame: FrameFeatures, box: Letterbox, hidden: torch.Tensor,
                     earlier: Optional[torch.Tensor] = None,
                     request: Optional[Request] = None) -> torch.Tensor:
        """[SEG] hidden states (n, H) -> mask logits (n, H_img, W_img) on the original image
        (earlier: the answer's [SEG] states before them; request: what was asked and said;
        as in seg_mask_logits)."""
        logits = self.model.seg_mask_logits(frame, hidden, self.engine, earlier, request)
        return unletterbox(logits, box)

    def _finish(self, gen, early: list[np.ndarray], timing: Timing) -> SegCapResult:
        parsed = parse_answer(gen.text)
        result = SegCapResult(answer=parsed.text, raw_text=gen.text, timing=timing,
                              model=self.model.config.name)
        if gen.cancelled:
            result.status = 'cancelled'
        n = len(early)
        phrases = parsed.phrases + [''] * (n - len(parsed.phrases))
        for i, probs in enumerate(early):
            m = probs > self.settings.mask_threshold
            result.masks.append(m)
            result.phrases.append(phrases[i])
            result.scores.append(float(probs[m].mean()) if m.any() else 0.0)
            result.boxes.append(mask_box(m))
        return drop_repeats(result)


def check_request(prompt: str, visual_prompt: Optional[VisualPrompt], height: int,
                  width: int) -> str:
    """The question for the model: the checked prompt, with the visual-prompt word added
    when a visual prompt is given without one. InputError with a one-line reason.

    Callers that have the image size but no model yet (the CLI) check a request here first.
    """
    prompt = check_prompt(prompt)
    n_tokens = prompt.count(REGION_TOKEN) + prompt.count(MARK_TOKEN)
    if visual_prompt is None:
        if n_tokens:
            raise InputError('the prompt has <region>/<mark> but no visual prompt was given')
        return prompt
    check_visual_prompt(visual_prompt, height, width)
    if n_tokens > 1:
        raise InputError(f'the prompt has {n_tokens} <region>/<mark> tokens; one visual '
                         'prompt was given')
    if n_tokens == 0:
        tag = MARK_TOKEN if visual_prompt.kind == 'point' else REGION_TOKEN
        prompt = f'{tag} {prompt}'
    return prompt


def check_visual_prompt(prompt: VisualPrompt, height: int, width: int) -> None:
    """VisualPrompt.validate, and finite point / box coordinates at most one image size
    outside the image; InputError with a one-line reason."""
    values = prompt.point if prompt.kind == 'point' else prompt.box
    if values is not None:
        name = 'point' if prompt.kind == 'point' else 'box'
        text = ', '.join(f'{v:g}' for v in values)
        if not all(math.isfinite(v) for v in values):
            raise InputError(f'{name} ({text}) must be finite numbers (no nan or inf)')
        sizes = (width, height) * (len(values) // 2)
        if not all(-s <= v <= 2 * s for v, s in zip(values, sizes)):
            raise InputError(f'{name} ({text}) is far outside the {width}x{height} image '
                             '(at most one image size outside is allowed)')
    prompt.validate(height, width)


REPEAT_IOU = 0.9  # two [SEG] with the same phrase and masks this alike name one object


def drop_repeats(result: SegCapResult) -> SegCapResult:
    """Drop list items that repeat an earlier one (same phrase, mask IoU >= REPEAT_IOU).

    Only for answers that are a plain list ('<p> a </p> [SEG], <p> b </p> [SEG] and ...'):
    the list is rewritten without the repeats; raw_text keeps what the model said. Models
    trained on long 'all the ...' lists can name an object twice.
    """
    phrases = result.phrases
    if len(phrases) < 2 or result.raw_text.strip() != referring_answer(phrases):
        return result
    keep: list[int] = []
    for i, (p, m) in enumerate(zip(phrases, result.masks)):
        if not any(phrases[k] == p and mask_iou(result.masks[k], m) >= REPEAT_IOU
                   for k in keep):
            keep.append(i)
    if len(keep) == len(phrases):
        return result
    result.answer = parse_answer(referring_answer([phrases[k] for k in keep])).text
    for name in ('phrases', 'masks', 'scores', 'boxes'):
        setattr(result, name, [getattr(result, name)[k] for k in keep])
    return result


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) inclusive pixel box of a mask; (0, 0, -1, -1) when empty."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    if len(xs) == 0:
        return (0, 0, -1, -1)
    return (int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1]))

"""Shared fixtures: one tiny-random model / pipeline per session, scripted generation, images.

The tiny-random model is built once (seeded) and shared read-only; tests that change weights
build their own. `force_answer` makes the LLM "generate" a given text, so the [SEG] path runs
on a random model without depending on what its random weights would say.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

TINY = 'tiny-random'


@pytest.fixture(scope='session')
def tiny_model():
    """The tiny-random SegCapModel (seeded, eval mode). Do not change its weights."""
    from ros_segcap.models.segcap.weights import load_model

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = load_model(TINY)
    finally:
        torch.random.set_rng_state(state)
    return model


@pytest.fixture(scope='session')
def tiny_pipeline(tiny_model):
    """A torch Pipeline around the shared tiny-random model (short generations)."""
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    return open_pipeline(PipelineConfig(model=TINY, max_new_tokens=32), model=tiny_model)


_TOKENIZERS: dict[str, object] = {}


def _cached_tokenizer(config):
    """load_tokenizer, once per LLM asset name (the tokenizer is never changed after)."""
    from ros_segcap.models.segcap.llm import load_tokenizer

    key = config.llm
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(config)
    return _TOKENIZERS[key]


@pytest.fixture
def cached_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models built during the test reuse one tokenizer instead of reading it each time."""
    from ros_segcap.models.segcap import model as model_module

    monkeypatch.setattr(model_module, 'load_tokenizer', _cached_tokenizer)


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 RGB test image: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / max(1, width - 1), yy * 255 / max(1, height - 1),
                     np.full((height, width), 128.0)], -1)
    noise = rng.normal(0, 25, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope='session')
def tiny_frame(tiny_model):
    """(FrameFeatures, Letterbox) of a non-square 90x150 image on the tiny-random model."""
    from ros_segcap.core.preprocess import letterbox

    tensor, box = letterbox(make_image(90, 150), tiny_model.config.image_size)
    with torch.no_grad():
        frame = tiny_model.encode(tensor)
    return frame, box


class ScriptedPick:
    """Replacement for LanguageModel._pick that returns scripted token ids, then a stop id."""

    def __init__(self, ids: list[int], stop_id: int) -> None:
        self.ids = list(ids)
        self.stop_id = stop_id
        self.calls = 0

    def __call__(self, logits: torch.Tensor, temperature: float, generator) -> int:
        assert logits.dim() == 1, 'the generation loop passes one row of logits'
        self.calls += 1
        return self.ids.pop(0) if self.ids else self.stop_id


@pytest.fixture
def force_answer(monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[Callable[..., list[int]]]:
    """force_answer(model, text) -> the token ids the next generations will produce."""
    from ros_segcap.models.segcap.llm import LanguageModel

    def force(model, text: str) -> list[int]:
        llm = model.llm
        ids = llm.encode(text)
        stop = next(iter(sorted(llm.stop_ids)))
        monkeypatch.setattr(LanguageModel, '_pick', staticmethod(ScriptedPick(ids, stop)))
        return ids

    yield force

"""Visual prompts on OMG-LLaVA (a synthetic converted release, tiny sizes): a mask prompt is
the official region prompt (a point query at the innermost point; every layer attends only
within the region resized nearest to its memory), and point / box / mask prompts give one
region token each through the Pipeline and `segcap infer`."""
from __future__ import annotations

import dataclasses
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from ros_segcap.core.preprocess import PROMPT_KIND_IDS, PromptQueries
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.omg_llava.config import TINY
from ros_segcap.models.omg_llava.convert import convert, Sources
from ros_segcap.models.omg_llava.decoder import region_block_mask
from ros_segcap.models.omg_llava.synthetic import write_release
from ros_segcap.runtime import open_pipeline, PipelineConfig

QUESTION = 'what is <region>?'


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('omg_prompts')
    p = write_release(root / 'src', TINY)
    out = root / 'model'
    convert(Sources(p['llm'], p['pth'], p['omg_seg'], p['text'], p['clip']), out,
            sizes=TINY, lora_alpha=8, progress=False)
    return out


@pytest.fixture(scope='module')
def pipeline(model_dir):
    return open_pipeline(PipelineConfig(model=str(model_dir), max_new_tokens=2),
                         say=lambda _: None)


def l_shape(size: int) -> torch.Tensor:
    """(size, size) bool: an L whose bounding box holds many cells outside it."""
    region = torch.zeros(size, size, dtype=torch.bool)
    q = size // 4
    region[q:3 * q, q:2 * q] = True  # the upright
    region[2 * q:3 * q, q:3 * q] = True  # the foot
    return region


def outside(region: torch.Tensor, side: int) -> torch.Tensor:
    """Flat indices of a side x side memory's cells the region does not cover, by hand:
    nearest resizing by an integer factor k keeps source cell (k i, k j)."""
    k = region.shape[0] // side
    return (~region[::k, ::k]).flatten().nonzero()[:, 0]


def test_region_block_mask_is_the_region_resized_nearest() -> None:
    region = l_shape(32)
    for side in (4, 8, 16, 32):
        blocked = region_block_mask(region[None], (side, side))[0]
        want = torch.zeros(side * side, dtype=torch.bool)
        want[outside(region, side)] = True
        assert torch.equal(blocked.flatten(), want), side
        assert 0 < int((~blocked).sum()) < side * side  # the region covers part of it


def _perturb(frame, cells: list[torch.Tensor], gen: torch.Generator):
    """The frame with memories and their positions changed at the given cells per level."""
    memories, pos = [m.clone() for m in frame.memories], [p.clone() for p in frame.memory_pos]
    for m, p, idx in zip(memories, pos, cells):
        m[..., idx, :] += 5 * torch.randn(m[..., idx, :].shape, generator=gen)
        p[..., idx, :] += 5 * torch.randn(p[..., idx, :].shape, generator=gen)
    return dataclasses.replace(frame, memories=memories, memory_pos=pos)


def test_mask_prompt_attends_only_within_its_region(pipeline) -> None:
    model, engine = pipeline.model, pipeline.engine
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        frame = model.encode(torch.rand((1, 3, 128, 128), generator=gen) * 255)
    hm = model.config.mask_size
    region = l_shape(hm)
    prompts = PromptQueries(torch.tensor([[PROMPT_KIND_IDS['mask']]]),
                            torch.tensor([[[0.375, 0.5, 0.02, 0.02]]]), region[None, None])
    sides = [int(round(m.shape[1] ** 0.5)) for m in frame.memories]
    assert sides == [4, 8, 16]
    with torch.no_grad():
        base = model.region_tokens(frame, prompts, engine)
        assert base.shape == (1, model.config.llm_hidden)
        out_cells = [outside(region, s) for s in sides]
        # outside the region (inside its bounding box too) the memory does not matter
        same = model.region_tokens(_perturb(frame, out_cells, gen), prompts, engine)
        torch.testing.assert_close(same, base, atol=1e-6, rtol=0)
        # nor do the mask features: the region, not the mask logits, steers attention
        noisy = dataclasses.replace(frame, mask_features=torch.randn(
            frame.mask_features.shape, generator=gen))
        torch.testing.assert_close(model.region_tokens(noisy, prompts, engine), base,
                                   atol=1e-6, rtol=0)
        # inside it does: the check above can fail
        in_cells = [region[::hm // s, ::hm // s].flatten().nonzero()[:, 0]
                    for s in sides]
        moved = model.region_tokens(_perturb(frame, in_cells, gen), prompts, engine)
        assert (moved - base).abs().max() > 1e-3


def _capture(monkeypatch, obj, name: str) -> list:
    calls: list = []
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, result))
        return result
    monkeypatch.setattr(obj, name, wrapper)
    return calls


def test_point_box_and_mask_prompts_through_the_pipeline(pipeline, monkeypatch) -> None:
    model = pipeline.model
    tokens = _capture(monkeypatch, model, 'region_tokens')
    regions = _capture(monkeypatch, model.head, 'decode_regions')
    image = (np.random.default_rng(2).random((128, 128, 3)) * 255).astype(np.uint8)
    mask = np.zeros((128, 128), bool)
    mask[40:61, 50:71] = True  # a 21 x 21 square: its innermost pixel is (x 60, y 50)
    mask[40:45, 20:50] = True  # and a thin arm that widens the bounding box
    prompts = [VisualPrompt('point', point=(30.0, 40.0)),
               VisualPrompt('box', box=(10.0, 20.0, 90.0, 100.0)),
               VisualPrompt('mask', mask=mask)]
    for prompt in prompts:
        result = pipeline.run(image, QUESTION, prompt)
        assert result.status == 'ok', result.status
    assert [tuple(out.shape) for _, out in tokens] == [(1, model.config.llm_hidden)] * 3
    assert [int(args[1].kinds[0, 0]) for args, _ in tokens] == [0, 1, 2]
    (args, out), = regions  # the mask prompt only, at the official integer point
    assert args[2].tolist() == [[60.0, 50.0]]
    assert torch.equal(args[1][0], tokens[2][0][1].restrict[0, 0])


def test_segcap_infer_with_a_mask_prompt(model_dir, tmp_path) -> None:
    import cv2
    image, mask = tmp_path / 'img.png', tmp_path / 'mask.png'
    cv2.imwrite(str(image), (np.random.default_rng(1).random((90, 120, 3)) * 255)
                .astype(np.uint8))
    m = np.zeros((90, 120), np.uint8)
    m[20:60, 30:80] = 255
    cv2.imwrite(str(mask), m)
    run = subprocess.run([sys.executable, '-m', 'ros_segcap.cli', 'infer', str(image),
                          '--model', str(model_dir), '--prompt', QUESTION, '--mask', str(mask),
                          '--max-new-tokens', '4'], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()

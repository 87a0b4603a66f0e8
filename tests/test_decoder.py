"""OMG decoder: the box / mask attention restriction and the independence of prompt queries.

A restricted prompt query may only see memory cells its region touches, so perturbing the
frame's memories (or mask features) elsewhere must leave its final query feature unchanged,
while perturbing inside must change it. The tests perturb the cached FrameFeatures directly:
image pixels would reach every cell through the convolutions' receptive fields.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ros_segcap.core.preprocess import prompt_queries
from ros_segcap.core.types import VisualPrompt

NOISE = 3.0


def touched_cells(region: np.ndarray, side: int) -> np.ndarray:
    """(Hm, Hm) bool region -> (side, side) bool: cells of a side x side grid it touches."""
    k = region.shape[0] // side
    return region.reshape(side, k, side, k).any(axis=(1, 3))


def _side(memory: torch.Tensor) -> int:
    return int(round(memory.shape[1] ** 0.5))


def perturb_memories(frame, region: np.ndarray, inside: bool, seed: int = 1):
    """Add noise to the memory entries outside (or inside) the cells the region touches."""
    g = torch.Generator().manual_seed(seed)
    memories = []
    for mem in frame.memories:
        cells = torch.from_numpy(touched_cells(region, _side(mem)).reshape(-1))
        where = cells if inside else ~cells
        noise = torch.randn(mem.shape, generator=g) * NOISE
        memories.append(mem + noise * where[None, :, None])
    return replace(frame, memories=memories)


def perturb_mask_features(frame, region: np.ndarray, inside: bool, seed: int = 2):
    """Add noise to mask features outside (or inside) the coarsest memory cells touched."""
    coarse = _side(frame.memories[0])
    hm = frame.mask_features.shape[-1]
    cells = touched_cells(region, coarse)
    up = np.kron(cells, np.ones((hm // coarse, hm // coarse), bool))  # (Hm, Hm)
    where = torch.from_numpy(up if inside else ~up)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(frame.mask_features.shape, generator=g) * NOISE
    return replace(frame, mask_features=frame.mask_features + noise * where)


def _decode(model, frame, q):
    with torch.no_grad():
        return model.decode_prompts(frame, q.kinds, q.boxes, q.restrict)


def _change(a, b) -> float:
    return float((a.query_feat - b.query_feat).abs().max())


def _queries(model, box, prompt: VisualPrompt):
    q = prompt_queries([prompt], box, model.config.mask_size)
    return q, q.restrict[0, 0].numpy()


def _disk(height: int, width: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


RESTRICTED = {
    # a box on the stride-32 grid of the 128x128 padded input (the image is 90x150 -> x0.853)
    'box-aligned': VisualPrompt('box', box=(37.5, 37.5, 112.4, 74.9)),
    'box-unaligned': VisualPrompt('box', box=(20.0, 10.0, 61.0, 50.0)),
    'mask': VisualPrompt('mask', mask=_disk(90, 150, 100, 40, 18)),
}
POINT = VisualPrompt('point', point=(75.0, 45.0))


@pytest.mark.parametrize('name', sorted(RESTRICTED))
@pytest.mark.parametrize('what', ['memories', 'mask_features'])
def test_restriction_blocks_outside(tiny_model, tiny_frame, name: str, what: str) -> None:
    """Outside the region's cells nothing reaches the query; inside, changes do."""
    frame, box = tiny_frame
    q, region = _queries(tiny_model, box, RESTRICTED[name])
    assert region.any() and not region.all()
    perturb = perturb_memories if what == 'memories' else perturb_mask_features
    base = _decode(tiny_model, frame, q)
    outside = _decode(tiny_model, perturb(frame, region, inside=False), q)
    inside = _decode(tiny_model, perturb(frame, region, inside=True), q)
    assert _change(base, outside) <= 1e-6
    assert _change(base, inside) > 1e-3


def test_aligned_box_region_is_its_cells(tiny_model, tiny_frame) -> None:
    """The aligned box covers whole stride-32 cells: 2 x 1 of the 4 x 4 grid."""
    frame, box = tiny_frame
    _, region = _queries(tiny_model, box, RESTRICTED['box-aligned'])
    cells = touched_cells(region, _side(frame.memories[0]))
    assert cells.sum() == 2 and cells[1, 1:3].all()
    coarse = np.kron(cells, np.ones((4, 4), bool))
    assert (coarse == region).all()


def test_point_window_is_around_the_point(tiny_model, tiny_frame) -> None:
    """A point's query may attend to the cells within POINT_WINDOW of it, and only those."""
    from ros_segcap.models.segcap.decoder import POINT_WINDOW
    frame, box = tiny_frame
    hm = tiny_model.config.mask_size
    q, region = _queries(tiny_model, box, POINT)
    x, y = box.to_unit(75.0, 45.0)
    centres = (np.arange(hm) + 0.5) / hm
    near_x = np.abs(centres - x) <= POINT_WINDOW
    near_y = np.abs(centres - y) <= POINT_WINDOW
    assert (region == (near_y[:, None] & near_x[None, :])).all()
    assert region[int(y * hm), int(x * hm)]
    base = _decode(tiny_model, frame, q)
    outside = _decode(tiny_model, perturb_memories(frame, region, inside=False), q)
    inside = _decode(tiny_model, perturb_memories(frame, region, inside=True), q)
    assert _change(base, outside) <= 1e-6
    assert _change(base, inside) > 1e-3


def _random_prompts(n: int, seed: int, height: int = 90, width: int = 150):
    rng = np.random.default_rng(seed)
    prompts = []
    for i in range(n):
        kind = ('point', 'box', 'mask')[i % 3]
        x1, x2 = sorted(rng.uniform(0, width - 1, 2))
        y1, y2 = sorted(rng.uniform(0, height - 1, 2))
        if kind == 'point':
            prompts.append(VisualPrompt('point', point=(x1, y1)))
        elif kind == 'box':
            prompts.append(VisualPrompt('box', box=(x1, y1, x2 + 1, y2 + 1)))
        else:
            prompts.append(VisualPrompt('mask', mask=_disk(height, width, x1, y1, 12)))
    return prompts


def test_queries_are_independent_of_batch(tiny_model, tiny_frame) -> None:
    """40 prompt queries decoded 1, 7 or 40 at a time give the same per-query outputs."""
    frame, box = tiny_frame
    prompts = _random_prompts(40, seed=3)
    hm = tiny_model.config.mask_size
    outputs = {}
    for chunk in (1, 7, 40):
        feats, masks, classes = [], [], []
        for start in range(0, len(prompts), chunk):
            q = prompt_queries(prompts[start:start + chunk], box, hm)
            out = _decode(tiny_model, frame, q)
            feats.append(out.query_feat[0])
            masks.append(out.mask_logits[-1][0])
            classes.append(out.class_logits[-1][0])
        outputs[chunk] = [torch.cat(t) for t in (feats, masks, classes)]
    assert outputs[40][0].shape == (40, tiny_model.config.dim)
    for chunk in (7, 40):
        for got, want in zip(outputs[chunk], outputs[1]):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # and the queries really differ from each other (the comparison is not vacuous)
    feats = outputs[1][0]
    assert float((feats - feats.mean(0)).abs().max()) > 0.1


def test_seg_queries_are_independent(tiny_model, tiny_frame) -> None:
    """[SEG] queries (no restriction) too: one at a time equals all at once."""
    frame, _ = tiny_frame
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(5, tiny_model.config.llm_hidden, generator=g)
    with torch.no_grad():
        together = tiny_model.decode_seg(frame, hidden).mask_logits[-1][0]
        alone = torch.cat([tiny_model.decode_seg(frame, hidden[i:i + 1]).mask_logits[-1][0]
                           for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_point_on_a_kept_object_becomes_that_object(tiny_model, tiny_frame):
    """visual_prompts: a point inside a kept frame mask takes that query's outputs; a point
    outside every kept mask and a box keep their own prompt queries."""
    frame, box = tiny_frame
    hm = tiny_model.config.mask_size
    masks = torch.full_like(frame.mask_logits, -8.0)
    masks[0, 1, :hm // 4, :hm // 4] = 8.0  # query 1 owns the top-left corner only
    cls = torch.zeros_like(frame.class_logits)
    cls[0, :, -1] = 8.0  # every query void ...
    cls[0, 1, 0] = 8.0  # ... but query 1
    frame = replace(frame, mask_logits=masks, class_logits=cls)
    assert tiny_model.kept_queries(frame).tolist() == [1]
    inside = VisualPrompt('point', point=(5.0, 3.0))  # image pixels; 90x150 in the top-left
    outside = VisualPrompt('point', point=(140.0, 85.0))
    corner = VisualPrompt('box', box=(0, 0, 10, 10))
    q = prompt_queries([inside, outside, corner], box, hm)
    with torch.no_grad():
        plain = tiny_model.decode_prompts(frame, q.kinds, q.boxes, q.restrict)
        out = tiny_model.visual_prompts(frame, q)
    assert torch.equal(out.query_feat[0, 0], frame.query_feat[0, 1])
    assert torch.equal(out.mask_logits[-1][0, 0], masks[0, 1])
    assert torch.equal(out.class_logits[-1][0, 0], cls[0, 1])
    assert not torch.equal(plain.query_feat[0, 0], frame.query_feat[0, 1])
    for i in (1, 2):
        assert torch.equal(out.query_feat[0, i], plain.query_feat[0, i])
        assert torch.equal(out.mask_logits[-1][0, i], plain.mask_logits[-1][0, i])

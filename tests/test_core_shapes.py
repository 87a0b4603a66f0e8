"""Shapes and dtypes through every stage of tiny-random on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_image
from ros_segcap.models.segcap.config import SEG_TOKEN
from ros_segcap.models.segcap.model import FrameFeatures
from ros_segcap.core.pipeline import mask_box
from ros_segcap.core.preprocess import Letterbox, letterbox, prompt_queries, unletterbox
from ros_segcap.models.segcap.prior import foreground_queries
from ros_segcap.core.types import VisualPrompt


def _check_frame(frame: FrameFeatures, cfg, dtype=torch.float32) -> None:
    """Every FrameFeatures field has the shape the config implies."""
    d, nq, hm, k1 = cfg.dim, cfg.num_queries, cfg.mask_size, cfg.num_classes + 1
    assert frame.pixel_tokens.shape == (1, cfg.token_grid ** 2, cfg.pixel_token_dim)
    assert frame.mask_features.shape == (1, d, hm, hm)
    sides = [cfg.image_size // s for s in (32, 16, 8)]
    assert [tuple(m.shape) for m in frame.memories] == [(1, s * s, d) for s in sides]
    assert [tuple(p.shape) for p in frame.memory_pos] == [(s * s, d) for s in sides]
    assert frame.class_logits.shape == (1, nq, k1)
    assert frame.mask_logits.shape == (1, nq, hm, hm)
    assert frame.query_feat.shape == frame.query_pos.shape == (1, nq, d)
    tensors = [frame.pixel_tokens, frame.mask_features, frame.class_logits, frame.mask_logits,
               frame.query_feat, frame.query_pos, *frame.memories, *frame.memory_pos]
    assert all(t.dtype == dtype for t in tensors)


def test_encode(tiny_model, tiny_frame) -> None:
    frame, box = tiny_frame
    cfg = tiny_model.config
    assert cfg.token_grid == 2 and cfg.pixel_token_dim == 4 * 1280
    _check_frame(frame, cfg)
    assert all(bool(torch.isfinite(t).all()) for t in
               (frame.pixel_tokens, frame.mask_logits, frame.class_logits, frame.query_feat))
    assert box == Letterbox(90, 150, cfg.image_size, cfg.image_size / 150)


def test_visual_block_and_prompt_embeds(tiny_model, tiny_frame) -> None:
    frame, _ = tiny_frame
    cfg = tiny_model.config
    with torch.no_grad():
        block = tiny_model.visual_block(frame)
        embeds, labels = tiny_model.prompt_embeds(frame, 'segment the cup')
    n_obj = min(int(foreground_queries(frame.class_logits, frame.mask_logits).sum()),
                cfg.max_object_tokens)
    assert block.shape == (cfg.token_grid ** 2 + 1 + n_obj, cfg.llm_hidden)
    assert block.dtype == torch.float32
    n_ids = len(tiny_model.llm.prompt_ids('segment the cup', block.shape[0])[0])
    assert embeds.shape == (1, n_ids, cfg.llm_hidden) and labels.shape == (n_ids,)


PROMPTS = [VisualPrompt('point', point=(10.0, 80.0)),
           VisualPrompt('box', box=(5.0, 5.0, 140.0, 60.0)),
           VisualPrompt('mask', mask=np.pad(np.ones((20, 30), bool), ((40, 30), (100, 20))))]


def test_decode_prompts(tiny_model, tiny_frame) -> None:
    frame, box = tiny_frame
    cfg = tiny_model.config
    q = prompt_queries(PROMPTS, box, cfg.mask_size)
    assert q.kinds.tolist() == [[0, 1, 2]] and q.kinds.dtype == torch.int64
    assert q.boxes.shape == (1, 3, 4) and q.restrict.shape == (1, 3, cfg.mask_size, cfg.mask_size)
    assert q.restrict.dtype == torch.bool
    assert 0 < int(q.restrict[0, 0].sum()) < cfg.mask_size ** 2  # a window around the point
    with torch.no_grad():
        out = tiny_model.decode_prompts(frame, q.kinds, q.boxes, q.restrict)
        tokens = tiny_model.prompt_tokens(out, frame)
    assert len(out.class_logits) == len(out.mask_logits) == cfg.decoder_layers + 1
    assert all(c.shape == (1, 3, cfg.num_classes + 1) for c in out.class_logits)
    assert all(m.shape == (1, 3, cfg.mask_size, cfg.mask_size) for m in out.mask_logits)
    assert out.query_feat.shape == out.query_pos.shape == (1, 3, cfg.dim)
    assert tokens.shape == (3, cfg.llm_hidden) and tokens.dtype == torch.float32


@pytest.mark.parametrize('n', [1, 3])
def test_decode_seg(tiny_model, tiny_frame, n: int) -> None:
    frame, _ = tiny_frame
    cfg = tiny_model.config
    with torch.no_grad():
        out = tiny_model.decode_seg(frame, torch.randn(n, cfg.llm_hidden))
    assert out.mask_logits[-1].shape == (1, n, cfg.mask_size, cfg.mask_size)
    assert out.class_logits[-1].shape == (1, n, cfg.num_classes + 1)


@pytest.mark.parametrize('height, width', [(90, 150), (150, 90), (37, 37)])
def test_pipeline_masks_at_original_size(tiny_model, tiny_pipeline, force_answer,
                                         height: int, width: int) -> None:
    """Masks, boxes and scores of a forced [SEG] answer refer to the original image."""
    force_answer(tiny_model, f'<p> thing </p> {SEG_TOKEN}')
    result = tiny_pipeline.run(make_image(height, width, seed=height), 'segment the thing',
                               VisualPrompt('box', box=(2.0, 3.0, width - 5.0, height - 9.0)))
    assert result.phrases == ['thing'] and len(result.masks) == 1
    mask = result.masks[0]
    assert mask.shape == (height, width) and mask.dtype == np.bool_
    assert result.boxes == [mask_box(mask)]
    assert 0.0 <= result.scores[0] <= 1.0
    assert (result.scores[0] > 0.5) == bool(mask.any())
    assert {'preprocess', 'vision', 'prompt_decode', 'prior_projectors', 'llm_prefill',
            'llm_decode', 'mask_decode'} <= set(result.timing.ms)


def test_letterbox_round_trip() -> None:
    """A region of the padded square maps back onto the same region of the original."""
    image = make_image(60, 100)
    tensor, box = letterbox(image, 64)
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == torch.float32
    assert box.scale == pytest.approx(0.64)
    logits = torch.full((1, 32, 32), -10.0)
    logits[0, :, :8] = 10.0  # left quarter of the square = left 0.25 * 64 / 0.64 = 25 px
    back = unletterbox(logits, box)
    assert back.shape == (1, 60, 100)
    cols = (back[0] > 0).all(0).numpy()
    assert cols[:24].all() and not cols[26:].any()


@pytest.mark.parametrize('height, width', [(90, 150), (150, 90), (61, 100), (100, 100)])
def test_unletterbox_edges(height: int, width: int) -> None:
    """Any aspect ratio: a cell edge of the square lands on the matching original pixel."""
    size, hm = 128, 16
    box = Letterbox(height, width, size, size / max(height, width))
    logits = torch.full((2, hm, hm), -10.0)
    logits[0, :8] = 10.0  # top half of the square: y < 64 px -> y < 64 / scale original
    logits[1, :, :5] = 10.0  # left 5 cells: x < 40 px -> x < 40 / scale original
    back = unletterbox(logits, box) > 0
    assert back.shape == (2, height, width)
    rows = back[0].all(1).numpy() | ~back[0].any(1).numpy()
    cols = back[1].all(0).numpy() | ~back[1].any(0).numpy()
    assert rows.all() and cols.all()  # each map is a clean band
    edge_y, edge_x = 64 / box.scale, 40 / box.scale
    got_y, got_x = int(back[0, :, 0].sum()), int(back[1, 0].sum())
    assert abs(got_y - min(edge_y, height)) <= 1.0, (got_y, edge_y)
    assert abs(got_x - min(edge_x, width)) <= 1.0, (got_x, edge_x)


def test_unletterbox_keeps_the_edge_of_lopsided_logits() -> None:
    """Decoder logits are far more negative outside than positive inside (-300 against
    +10); the resized mask must still end at the cell edge, not half a cell inside it."""
    size, hm = 128, 16
    box = Letterbox(128, 128, size, 1.0)
    logits = torch.full((1, hm, hm), -300.0)
    logits[0, 4:12, 4:12] = 10.0  # cells 4-11: pixels 32-95
    back = (unletterbox(logits, box)[0] > 0).numpy()
    rows, cols = np.nonzero(back.any(1))[0], np.nonzero(back.any(0))[0]
    assert abs(rows[0] - 32) <= 1 and abs(rows[-1] - 95) <= 1, (rows[0], rows[-1])
    assert abs(cols[0] - 32) <= 1 and abs(cols[-1] - 95) <= 1, (cols[0], cols[-1])
    assert abs(int(back.sum()) - 64 * 64) <= 2 * 64 + 1


@pytest.mark.parametrize('height, width', [(90, 150), (150, 90), (64, 64)])
def test_mask_prompt_cells(height: int, width: int) -> None:
    """A mask prompt allows exactly the mask cells under its pixels (any aspect ratio)."""
    size, hm = 128, 16
    box = Letterbox(height, width, size, size / max(height, width))
    rng = np.random.default_rng(height)
    mask = np.zeros((height, width), bool)
    for _ in range(3):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        mask[y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = True
    region = prompt_queries([VisualPrompt('mask', mask=mask)], box, hm).restrict[0, 0].numpy()
    want = np.zeros((hm, hm), bool)
    for y, x in zip(*np.nonzero(mask)):
        cy = int((y + 0.5) * box.scale / size * hm)
        cx = int((x + 0.5) * box.scale / size * hm)
        want[cy, cx] = True
    assert (region == want).all(), np.argwhere(region != want)


def test_mask_box() -> None:
    m = np.zeros((10, 20), bool)
    assert mask_box(m) == (0, 0, -1, -1)
    m[2:5, 7:9] = True
    assert mask_box(m) == (7, 2, 8, 4)


def test_a_box_partly_outside_the_image_is_clipped_to_it() -> None:
    """The query box and its cells cover only the part of the box inside the image: the
    box's centre outside the image must not wrap to the far side of the grid."""
    box = letterbox(make_image(60, 60, seed=3), 64)[1]
    q = prompt_queries([VisualPrompt('box', box=(-50.0, 0.0, 10.0, 10.0))], box, 16)
    cx, cy, w, h = q.boxes[0, 0].tolist()
    assert 0.0 <= cx - w / 2 and abs(cx - 5 / 60) < 1e-6 and abs(w - 10 / 60) < 1e-6
    cols = q.restrict[0, 0].any(0).nonzero()[:, 0].tolist()
    assert cols and max(cols) <= 3  # only the left edge of the grid, nothing on the right

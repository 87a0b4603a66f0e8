"""Proposals: centre targets and loss, peak picking, and frames that gain proposal queries."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.decoder import DecoderOutput
from ros_segcap.models.segcap.model import build_model
from ros_segcap.core.preprocess import letterbox
from ros_segcap.models.segcap.proposals import (PROPOSAL_THRESHOLD, centre_loss,
                                                centre_targets, new_masks, peak_cells)
from ros_segcap.models.segcap.weights import load_model, save_model
from training.cache import build_shard
from training.config import make_config
from training.train import run
from conftest import make_image


def _two_objects(hm: int = 16) -> torch.Tensor:
    m = torch.zeros(3, hm, hm, dtype=torch.bool)
    m[0, 2:7, 2:7] = True  # 5x5: inner-most cell (4, 4)
    m[1, 10:15, 9:14] = True  # 5x5: (12, 11)
    return m  # m[2] is empty


def test_centre_targets_peak_at_inner_cells():
    heat = centre_targets(_two_objects())
    assert (heat == 1).nonzero().tolist() == [[4, 4], [12, 11]]
    assert 0 < heat[4, 6] < heat[4, 5] < 1  # decays away from the centre
    assert heat[0, 15] < 1e-3


def test_centre_loss_prefers_the_true_centres():
    heat = centre_targets(_two_objects())
    right = torch.full((16, 16), -6.0)
    right[4, 4] = right[12, 11] = 6.0
    wrong = torch.full((16, 16), -6.0)
    wrong[8, 0] = wrong[0, 8] = 6.0
    assert centre_loss(right, heat) < 0.01 < centre_loss(wrong, heat)


def test_peaks_are_local_maxima_above_threshold():
    logits = torch.full((16, 16), -6.0)
    logits[4, 4], logits[12, 11], logits[8, 8] = 3.0, 2.0, -2.0  # last one below threshold
    logits[4, 5] = 2.5  # next to a stronger peak: not a local maximum
    assert torch.sigmoid(torch.tensor(-2.0)) < PROPOSAL_THRESHOLD
    assert peak_cells(logits, 5) == [(4, 4), (12, 11)]
    assert peak_cells(logits, 1) == [(4, 4)]
    assert peak_cells(logits, 5, threshold=0.05) == [(4, 4), (12, 11), (8, 8)]


def test_new_masks_drop_empty_and_known_objects():
    m = _two_objects()
    kept = m[:1]
    nearly_kept = m[0].clone()
    nearly_kept[2, 2] = False
    candidates = torch.stack([nearly_kept, m[2], m[1], m[1]])
    assert new_masks(candidates, kept) == [2]  # not the kept one, the empty one, the repeat


class FixedHeat(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, mask_features: torch.Tensor) -> torch.Tensor:
        return self.logits[None]


def test_proposals_split_look_alikes_out_of_a_merged_mask():
    torch.manual_seed(0)
    model = build_model(get_config('tiny-random').replace(proposals=4), pretrained=False).eval()
    tensor, _ = letterbox(make_image(90, 150), model.config.image_size)
    with torch.no_grad():
        frame = model.encode(tensor)
    n, hm = frame.class_logits.shape[1], model.config.mask_size
    two = _two_objects(hm)
    two[0] = False
    two[0, 3:6, 3:6] = True  # a small object (9 cells) around (4, 4)
    merged = two[0] | two[1]  # one query holds two look-alikes (9 + 25 cells)
    masks = torch.full_like(frame.mask_logits, -10.0)
    masks[0, 0][merged] = 10.0
    frame = replace(frame, mask_logits=masks)
    heat = torch.full((hm, hm), -8.0)
    heat[4, 4], heat[12, 11], heat[8, 0] = 4.0, 3.0, 2.0  # the last one is on nothing
    model.decoder.centre_head = FixedHeat(heat)
    calls = []

    def decode(frame, kinds, boxes, restrict):  # every point query finds the merged mask
        calls.append(boxes[0, :, :2].tolist())
        p = boxes.shape[1]
        out = torch.full((1, p, hm, hm), -10.0)
        out[:, :, merged] = 10.0
        cls = torch.randn(1, p, model.config.num_classes + 1)
        feat = torch.randn(1, p, model.config.dim)
        return DecoderOutput([cls], [out], feat, feat + 1)

    with torch.no_grad():
        out = model.with_proposals(frame, decode)
    assert calls == [[[4.5 / hm, 4.5 / hm], [11.5 / hm, 12.5 / hm], [0.5 / hm, 8.5 / hm]]]
    # the first peak's part (IoU 9/34 with the merged mask) is new; the second's (25/34)
    # is the merged query's own object; the third holds no mask
    assert out.class_logits.shape[1] == n + 1
    for name in ('class_logits', 'query_feat', 'query_pos'):
        assert getattr(out, name).shape[1] == n + 1
        assert torch.equal(getattr(out, name)[:, :n], getattr(frame, name))
    assert torch.equal(out.mask_logits[0, n] > 0, two[0])
    assert torch.equal(out.mask_logits[0, 0] > 0, two[1])  # carved out of the merged mask
    assert torch.equal(out.mask_logits[0, 1:n], frame.mask_logits[0, 1:n].clamp(max=-10.0))
    model.decoder.centre_head = FixedHeat(torch.full((hm, hm), -8.0))
    assert model.with_proposals(frame, decode) is frame  # no peak: nothing to add


def test_plain_model_frames_are_unchanged(tiny_model, tiny_frame):
    frame, _ = tiny_frame
    assert tiny_model.decoder.centre_head is None
    assert tiny_model.with_proposals(frame) is frame


def test_stage0_trains_the_centre_head_and_stage2_runs_on_proposals(tmp_path):
    torch.manual_seed(0)
    config = get_config('tiny-random').replace(proposals=4, place_anchor=True)
    cache = tmp_path / 'cache'
    cache.mkdir()
    torch.save(build_shard(config, 'train', 0, 2), cache / 'shard-0000000.pt')
    init = save_model(build_model(config, pretrained=False), tmp_path / 'init')
    common = dict(model='tiny-random', cache=str(cache), steps=3, accum=1, log_every=1,
                  ckpt_every=3, threads=1, init=str(init))
    s0 = run(make_config(0, dict(common, out=str(tmp_path / 's0'))))
    header = (tmp_path / 's0' / 'metrics.csv').read_text().splitlines()[0].split(',')
    assert 'centre' in header and 'prompt_class' in header
    before, after = load_model(str(init)), load_model(str(s0))
    assert not torch.equal(before.decoder.centre_head.conv.weight,
                           after.decoder.centre_head.conv.weight)
    s2 = run(make_config(2, dict(common, init=str(s0), out=str(tmp_path / 's2'))))
    trained = load_model(str(s2))
    assert trained.config.proposals == 4 and trained.config.place_anchor
    assert not torch.equal(trained.projectors.place_head.weight,
                           after.projectors.place_head.weight)


def test_onnxruntime_pipeline_adds_the_same_proposals(tmp_path):
    """The Pipeline runs proposals on the engines' seg graph: same queries as torch."""
    pytest.importorskip('onnxruntime')
    from engines_util import exported
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    torch.manual_seed(0)
    model = build_model(get_config('tiny-random').replace(proposals=16), pretrained=False)
    model.eval()
    hm = model.config.mask_size
    heat = torch.full((hm, hm), -8.0)
    heat[1::4, 1::4] = torch.linspace(4.0, 1.0, 16).view(4, 4)  # 16 peaks, some find a part
    model.decoder.centre_head = FixedHeat(heat)
    engines = exported(model)
    base = dict(model='tiny-random', engines_dir=str(engines))
    pt = open_pipeline(PipelineConfig(backend='torch', **base), model=model)
    po = open_pipeline(PipelineConfig(backend='onnxruntime', **base), model=model)
    assert po.engine.backend == 'onnxruntime'
    image = make_image(90, 150, seed=3)
    (ft, _), (fo, _) = pt.encode(image), po.encode(image)
    plain = model.encode(letterbox(image, model.config.image_size)[0])
    assert ft.class_logits.shape == fo.class_logits.shape
    assert ft.class_logits.shape[1] > plain.class_logits.shape[1]  # proposals were added
    torch.testing.assert_close(fo.mask_logits, ft.mask_logits, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(fo.query_feat, ft.query_feat, atol=2e-3, rtol=1e-3)

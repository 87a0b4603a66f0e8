"""depth_places: where masks sit in the image, checked against the tabletop world's truth."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ros_segcap.core.config import SegCapConfig, get_config
from ros_segcap.core.model import build_model
from ros_segcap.core.places import extent_of, image_places, table_top
from ros_segcap.core.preprocess import letterbox
from ros_segcap.world import render, sample_scene, split_seed
from ros_segcap.world.render import FIRST_OBJECT_ID, TABLE_ID
from training.cache import letterbox_mask

HM = 64


def _scene(index: int, h: int, w: int):
    scene = render(sample_scene(split_seed('val', index)), h, w)
    _, box = letterbox(scene.image, 512)
    return scene, box


@pytest.mark.parametrize('h, w', [(480, 640), (512, 384)])
def test_image_places_match_the_world(h, w):
    for index in range(8):
        scene, box = _scene(index, h, w)
        spec = scene.spec
        near = len(spec.objects) - 1  # painted last: nothing stands in front of it
        o = spec.objects[near]
        grid = torch.from_numpy(letterbox_mask(scene.panoptic == FIRST_OBJECT_ID + near, box, HM))
        table = torch.from_numpy(letterbox_mask(scene.panoptic == TABLE_ID, box, HM))
        logits = torch.stack([table, grid]).float() * 20 - 10
        classes = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])  # table is class 1
        top = table_top(classes, logits, 1)
        assert top == pytest.approx(spec.horizon * box.extent[0], abs=2 / HM)
        x, bottom, depth = image_places(logits[1:], box.extent, top)[0].tolist()
        assert x == pytest.approx(o.x, abs=0.06)
        assert bottom == pytest.approx(o.y, abs=2 / HM / box.extent[0])
        truth = (o.y - spec.horizon) / (1 - spec.horizon)
        assert depth == pytest.approx(truth, abs=0.06)


def test_extent_is_the_letterboxed_image():
    for h, w in ((480, 640), (512, 384)):
        scene, box = _scene(0, h, w)
        masks = torch.from_numpy(np.stack([letterbox_mask(scene.panoptic == i, box, HM)
                                           for i in np.unique(scene.panoptic)]))
        assert extent_of(masks) == pytest.approx(box.extent, abs=1 / HM)
    assert extent_of(torch.zeros(2, 8, 8, dtype=torch.bool)) == (1.0, 1.0)


def test_places_without_a_table_or_a_mask():
    logits = torch.full((2, 8, 8), -10.0)
    logits[0, 2:4, 6:8] = 10.0  # a hard mask at the top right; the second mask is empty
    places = image_places(logits)
    assert places.shape == (2, 3)
    assert places[0].tolist() == pytest.approx([0.875, 0.5, 0.5])
    assert torch.isfinite(places[1]).all()  # soft fallback, no division by zero
    assert table_top(torch.zeros(2, 3), logits, None) == 0.0


def test_depth_places_start_at_the_world_rule():
    config = get_config('tiny-random').to_dict()
    plain_config = SegCapConfig.from_dict(dict(config, place_anchor=True, seg_pointer=True))
    torch.manual_seed(0)
    plain = build_model(plain_config, pretrained=False).eval()
    grown = build_model(SegCapConfig.from_dict(dict(plain_config.to_dict(), depth_places=True)),
                        pretrained=False).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ['projectors.place_extra.bias', 'projectors.place_extra.weight',
                               'projectors.seg_place_extra.bias',
                               'projectors.seg_place_extra.weight']
    # the place words start at the rule: (x, bottom, depth) -> left, right, front, back
    places = torch.tensor([[0.1, 0.9, 0.9], [0.9, 0.2, 0.1], [0.5, 0.6, 0.45]])
    words = grown.projectors.place_weights(torch.zeros(3, 3), places)
    assert (words[0, [0, 2]] > 0.9).all() and (words[0, [1, 3]] < -0.9).all()  # front left
    assert (words[1, [1, 3]] > 0.9).all() and (words[1, [0, 2]] < -0.9).all()  # back right
    assert (words[2] < 0).all()  # centre: none of the four
    torch.manual_seed(1)
    size = plain_config.image_size
    image = torch.randint(0, 255, (1, 3, size, size)).float()
    hidden = torch.randn(2, plain_config.llm_hidden)
    with torch.no_grad():
        frame = replace(plain.encode(image), extent=(0.75, 1.0))
        assert not grown.projectors.seg_place_extra.weight.any()  # the pointer's: zero start
        assert not torch.equal(grown.object_rows(frame)[1], plain.object_rows(frame)[1])
        scores = grown.seg_pointer(frame, hidden)[0]
        grown.projectors.seg_place_extra.weight.fill_(1.0)  # trained: the place moves it
        assert not torch.equal(grown.seg_pointer(frame, hidden)[0], scores)
        with pytest.raises(ValueError, match='depth_places'):
            grown.image_places(None, frame.mask_logits[0])

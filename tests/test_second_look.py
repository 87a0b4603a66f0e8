"""The second look: crops around masks, the kind fusion, and a model that looks again."""
from __future__ import annotations

import dataclasses

import torch

from ros_segcap.core.preprocess import Letterbox, prompt_queries
from ros_segcap.core.torch_engine import TorchEngine
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import SegCapModel
from ros_segcap.models.segcap.second_look import fuse_kinds, mask_boxes, square_crops


def test_mask_boxes_in_pixels_and_empty_mask_is_whole_image():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:4, 5:7] = True  # rows 2-3, columns 5-6
    boxes = mask_boxes(masks, stride=4)
    assert boxes[0].tolist() == [20.0, 8.0, 28.0, 16.0]
    assert boxes[1].tolist() == [0.0, 0.0, 32.0, 32.0]


def test_square_crop_is_centred_on_the_box():
    image = torch.zeros(1, 3, 64, 64)
    image[0, :, 20:30, 40:50] = 255.0  # a white square, centre (45, 25)
    crop = square_crops(image, torch.tensor([[40.0, 20.0, 50.0, 30.0]]), size=16,
                        margin=2.0)[0]
    # side 2 x 10 + 8 * 64 / 512 = 21 pixels: the square is the middle half of the crop
    assert crop[:, 8, 8].min() > 250
    assert crop[:, 0, 0].max() < 5 and crop[:, 15, 15].max() < 5
    per_crop = square_crops(torch.stack([image[0], 255 - image[0]]),
                            torch.tensor([[40.0, 20.0, 50.0, 30.0]] * 2), size=16, margin=2.0)
    assert per_crop[0, :, 8, 8].min() > 250 and per_crop[1, :, 8, 8].max() < 5


def test_fuse_kinds_keeps_stuff_void_and_thing_mass():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)  # background, table, 4 kinds, void
    kinds = torch.randn(5, 4) * 3
    fused = fuse_kinds(logits, kinds, first_kind=2, num_kinds=4)
    assert torch.equal(fused[:, :2], logits[:, :2]) and torch.equal(fused[:, -1], logits[:, -1])
    assert torch.allclose(fused[:, 2:6].logsumexp(-1), logits[:, 2:6].logsumexp(-1), atol=1e-5)
    joint = logits[:, 2:6].log_softmax(-1) + kinds.log_softmax(-1)
    assert torch.equal(fused[:, 2:6].argmax(-1), joint.argmax(-1))
    # a sure second look decides the kind
    sure = torch.full((5, 4), -30.0)
    sure[:, 3] = 30.0
    assert (fuse_kinds(logits, sure, 2, 4)[:, 2:6].argmax(-1) == 3).all()


def letterbox_of(image: torch.Tensor) -> Letterbox:
    side = image.shape[-1]
    return Letterbox(side, side, side, 1.0, 0.0, 0.0)


def _looking_model(seed: int) -> SegCapModel:
    config = dataclasses.replace(get_config('tiny-random'), second_look=32)
    torch.manual_seed(seed)
    return SegCapModel(config, pretrained=False).eval()


def test_untrained_second_look_changes_nothing_and_a_trained_one_names_kinds(
        cached_tokenizer):
    model = _looking_model(0)
    image = torch.rand(1, 3, 128, 128) * 255
    engine = TorchEngine(model)
    with torch.no_grad():
        frame = model.frame(image, engine)
        assert frame.image is image
        keep = model.kept_queries(frame)
        logits, masks = frame.class_logits[0, keep], frame.mask_logits[0, keep]
        # the head starts at zero: uniform kinds, the decoder's classes unchanged
        assert torch.allclose(model.looked_again(frame, logits, masks), logits, atol=1e-5)
        model.second_look.head.bias[3] = 50.0  # a look that always sees kind 3
        looked = model.looked_again(frame, logits, masks)
        q = prompt_queries([VisualPrompt('box', box=(10, 10, 60, 50))], letterbox_of(image),
                           model.config.mask_size)
        prompt = model.visual_prompts(frame, q).class_logits[-1][0, 0]
        alone = model.decode_prompts(frame, q.kinds, q.boxes, q.restrict).class_logits[-1][0, 0]
        hm = model.config.mask_size
        cell = (frame.mask_logits[0, keep] >= 0).nonzero()
        point = None
        if len(cell):  # a point on a kept object keeps that object's own classes
            k, row, col = cell[0].tolist()
            scale = 128 / hm
            xy = ((col + 0.5) * scale, (row + 0.5) * scale)
            point = prompt_queries([VisualPrompt('point', point=xy)], letterbox_of(image), hm)
            snapped = model.visual_prompts(frame, point).class_logits[-1][0, 0]
        no_image = model.looked_again(dataclasses.replace(frame, image=None), logits, masks)
    things = logits[:, :-1].argmax(-1) >= 2
    assert (looked[things, 2:-1].argmax(-1) == 3).all()
    assert torch.equal(looked[~things], logits[~things])
    assert torch.equal(no_image, logits)
    if point is not None:
        owner = frame.mask_logits[0, keep, row, col].argmax()
        assert torch.equal(snapped, frame.class_logits[0, keep[owner]])
    if alone[:-1].argmax() >= 2:  # a box prompt's kind is looked at again too
        assert prompt[2:-1].argmax() == 3
    else:
        assert torch.equal(prompt, alone)

"""The release's image-in (centred square, pad (122, 116, 104), PIL bicubic) through
core.preprocess: the input matches expand2square + resize done by hand with PIL, and masks,
points and mask prompts map between the image and the padded square exactly. segcap-tiny's
letterbox (top-left, mean colour, cv2 area/linear) stays as it was."""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
import pytest
import torch
import torch.nn.functional as F

from ros_segcap.core.preprocess import (InputGeometry, Letterbox, letterbox, MEAN_RGB,
                                        prompt_queries, unletterbox)
from ros_segcap.core.types import VisualPrompt
from ros_segcap.models.omg_llava.config import OFFICIAL, TINY

from conftest import make_image

RELEASE = InputGeometry.of(OFFICIAL)


def test_the_release_geometry_is_read_from_the_config() -> None:
    assert RELEASE == InputGeometry('centre', (122, 116, 104), 'bicubic')
    assert InputGeometry.of(TINY) == RELEASE
    assert InputGeometry.of(object()) == InputGeometry('top-left', MEAN_RGB, 'area')
    with pytest.raises(ValueError, match='placement'):
        InputGeometry(placement='middle')
    with pytest.raises(ValueError, match='interpolation'):
        InputGeometry(interpolation='nearest')


def test_segcap_defaults_are_unchanged(tiny_model) -> None:
    """A config without the optional attributes: the image resized with cv2, top-left."""
    assert InputGeometry.of(tiny_model.config) == InputGeometry()
    image = make_image(90, 150)
    tensor, box = letterbox(image, 64)
    scale = 64 / 150
    resized = cv2.resize(image, (64, 38), interpolation=cv2.INTER_AREA)
    want = np.empty((64, 64, 3), np.uint8)
    want[:] = MEAN_RGB
    want[:38] = resized
    assert torch.equal(tensor[0].permute(1, 2, 0), torch.from_numpy(want).float())
    assert box == Letterbox(90, 150, 64, scale) and (box.left, box.top) == (0.0, 0.0)


def _expand2square(image: np.ndarray, size: int) -> np.ndarray:
    """xtuner's expand2square + CLIPImageProcessor's resize, by hand with PIL."""
    pil = Image.fromarray(image)
    w, h = pil.size
    side = max(w, h)
    square = Image.new('RGB', (side, side), (122, 116, 104))
    square.paste(pil, ((side - w) // 2, (side - h) // 2))
    return np.asarray(square.resize((size, size), Image.BICUBIC))


@pytest.mark.parametrize('height, width', [(90, 150), (151, 64), (100, 100)])
def test_release_input_matches_pil(height: int, width: int) -> None:
    image = make_image(height, width, seed=3)
    tensor, box = letterbox(image, 128, RELEASE)
    want = torch.from_numpy(_expand2square(image, 128).copy()).permute(2, 0, 1).float()
    assert torch.equal(tensor[0], want)
    side = max(height, width)
    assert box.scale == 128 / side
    assert box.left == (side - width) // 2 * box.scale
    assert box.top == (side - height) // 2 * box.scale


@pytest.mark.parametrize('height, width', [(90, 150), (151, 64), (61, 100)])
def test_centred_masks_map_back_exactly(height: int, width: int) -> None:
    """Logits linear in the square's coordinates come back as the same line on the image
    (bilinear is exact on a line), and equal the release's resize-to-square-then-crop."""
    size, hm = 128, 32
    _, box = letterbox(make_image(height, width), size, RELEASE)
    u = (torch.arange(hm, dtype=torch.float64) + 0.5) / hm  # cell centres, unit square
    grid = torch.stack([(u[None, :] - 0.5).expand(hm, hm),  # x - 0.5
                        (u[:, None] - 0.4).expand(hm, hm)]) * 6  # y - 0.4, within +-8
    back = unletterbox(grid.float(), box).double()
    ys = ((torch.arange(height, dtype=torch.float64) + 0.5) * box.scale + box.top) / size
    xs = ((torch.arange(width, dtype=torch.float64) + 0.5) * box.scale + box.left) / size
    inner_x = (xs > 0.5 / hm) & (xs < 1 - 0.5 / hm)  # away from the repeated edge cells
    inner_y = (ys > 0.5 / hm) & (ys < 1 - 0.5 / hm)
    assert torch.allclose(back[0][:, inner_x], ((xs - 0.5) * 6)[inner_x].expand(height, -1),
                          atol=1e-5)
    assert torch.allclose(back[1][inner_y], ((ys - 0.4) * 6)[inner_y, None].expand(-1, width),
                          atol=1e-5)
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    release = F.interpolate(grid.float()[None], size=(side, side), mode='bilinear',
                            align_corners=False)[0, :, top:top + height, left:left + width]
    assert torch.allclose(back.float(), release, atol=1e-5)


def test_centred_points_and_mask_prompts_land_on_the_image() -> None:
    """A point prompt's unit position is where that image pixel is in the model input, and a
    mask prompt allows exactly the grid cells under its pixels."""
    image = np.zeros((90, 150, 3), np.uint8)
    image[20:60, 60:100] = (255, 0, 0)
    size, hm = 64, 16
    tensor, box = letterbox(image, size, RELEASE)
    q = prompt_queries([VisualPrompt('point', point=(80.0, 40.0))], box, hm)
    cx, cy = (float(v) * size for v in q.boxes[0, 0, :2])
    assert (cx, cy) == pytest.approx((80 * box.scale + box.left, 40 * box.scale + box.top))
    assert tensor[0, :, int(cy), int(cx)].tolist() == [255.0, 0.0, 0.0]
    mask = np.zeros((90, 150), bool)
    mask[20:60, 60:100] = True
    region = prompt_queries([VisualPrompt('mask', mask=mask)], box, hm).restrict[0, 0]
    red = (tensor[0, 0] > 128) & (tensor[0, 1] < 128)  # model-input pixels of the block
    cells = F.adaptive_max_pool2d(red[None].float(), hm)[0] > 0
    inner = F.avg_pool2d(red[None].float(), size // hm)[0] == 1  # cells fully inside
    assert (region >= inner).all() and (region <= cells).all()
    want = torch.zeros((hm, hm), dtype=torch.bool)
    for y, x in zip(*np.nonzero(mask)):
        want[int(((y + 0.5) * box.scale + box.top) / size * hm),
             int(((x + 0.5) * box.scale + box.left) / size * hm)] = True
    assert torch.equal(region, want)

"""Pixel decoder: mask_positions gives the mask features a sense of place.

Without positions the FPN is (away from the padded border) translation invariant: two
identical patches get identical mask features, so no query can segment one and not the
other. With positions the features at the two places differ, and a zero-initialised
projection leaves a model carried over from mask_positions=False unchanged.
"""
from __future__ import annotations

import math

import torch

from ros_segcap.core.config import get_config
from ros_segcap.core.encoder import MASK_POSITION_BANDS, PixelDecoder, fourier_position


def _feats(config, side: int = 32) -> dict[str, torch.Tensor]:
    """Backbone features of a frame holding the same patch at two places (stride-8 grid)."""
    c8, c16, c32 = config.backbone_channels
    g = torch.Generator().manual_seed(0)
    s8 = torch.zeros(1, c8, side, side)
    patch = torch.randn(c8, 2, 2, generator=g)
    s8[:, :, 14:16, 10:12] = patch  # both copies clear of the border's receptive field
    s8[:, :, 14:16, 18:20] = patch
    return {'s8': s8, 's16': torch.zeros(1, c16, side // 2, side // 2),
            's32': torch.zeros(1, c32, side // 4, side // 4)}


def test_fourier_position_shape_range_and_periods() -> None:
    pos = fourier_position(8, 32)
    assert pos.shape == (2 + 4 * MASK_POSITION_BANDS, 8, 32)
    assert pos.abs().max() <= 1.0
    x = pos[0, 0]
    assert torch.all(x[1:] > x[:-1])  # x grows along the width, y is constant along it
    assert torch.allclose(pos[1, :, 0], pos[1, :, 5])
    # the fastest band (16 cycles per side) repeats every 32 / 16 = 2 cells across the width
    fastest = pos[2 + 4 * (MASK_POSITION_BANDS - 1)]  # sin of x at the last band
    assert torch.allclose(fastest[0, :-2], fastest[0, 2:], atol=1e-5)
    assert not torch.allclose(fastest[0, :-1], fastest[0, 1:], atol=1e-3)
    assert math.isclose(float(pos[2 + 4 * (MASK_POSITION_BANDS - 1) + 1, 0, 0]),
                        math.cos(math.pi * 16 * (0.5 / 32 * 2 - 1)), abs_tol=1e-5)


def test_mask_positions_tell_identical_patches_apart() -> None:
    config = get_config('tiny-random')
    torch.manual_seed(1)
    plain = PixelDecoder(config.replace(mask_positions=False)).eval()
    placed = PixelDecoder(config.replace(mask_positions=True)).eval()
    missing, unexpected = placed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ['mask_pos.bias', 'mask_pos.weight'] and not unexpected
    feats = _feats(config)
    with torch.no_grad():
        a = plain(feats)[0][0]
        b = placed(feats)[0][0]
        assert torch.equal(a, b)  # zero-initialised: a carried-over model is unchanged
        # the two copies look the same without positions ...
        assert torch.allclose(a[:, 14:16, 10:12], a[:, 14:16, 18:20], atol=1e-5)
        torch.nn.init.normal_(placed.mask_pos.weight, std=0.5)
        c = placed(feats)[0][0]
    # ... and different with them
    assert (c[:, 14:16, 10:12] - c[:, 14:16, 18:20]).abs().max() > 0.1

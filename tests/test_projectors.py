"""Projectors: token_norm puts visual / region tokens at the word embeddings' scale."""
from __future__ import annotations

import pytest
import torch

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.models.segcap.projectors import Projectors


def test_token_norm_scales_tokens_to_the_gain():
    config = get_config('tiny-random').replace(token_norm=True)
    proj = Projectors(config)
    with torch.no_grad():
        proj.token_gain.fill_(0.25)
    d2 = 2 * config.dim
    tok = proj.object_tokens(torch.randn(5, config.dim) * 30, torch.randn(5, config.dim),
                             torch.randn(5, config.backbone_channels[0]))
    rms = tok.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full((5,), 0.25), rtol=1e-4, atol=1e-5)
    pix = proj.pixel_tokens(torch.randn(1, 4, config.pixel_token_dim) * 50, torch.randn(1, 4, d2))
    torch.testing.assert_close(pix.pow(2).mean(-1).sqrt(), torch.full((1, 4), 0.25))
    plain = Projectors(config.replace(token_norm=False))
    assert plain.token_gain is None
    assert 'token_gain' not in dict(plain.named_parameters())


def test_token_gain_starts_at_the_word_embedding_rms():
    config = get_config('tiny-random').replace(token_norm=True)
    model = build_model(config, pretrained=False)
    table = model.llm.lm.get_input_embeddings().weight
    expected = float(table.pow(2).mean().sqrt())
    torch.testing.assert_close(model.projectors.token_gain.detach(),
                               torch.full_like(model.projectors.token_gain, expected))


def test_word_anchor_adds_the_expected_word_embeddings():
    config = get_config('tiny-random').replace(token_norm=True, word_anchor=True)
    model = build_model(config, pretrained=False)
    k, n_col = config.num_classes, len(config.colour_names)
    assert model.anchor_ids.shape == (k + n_col,)
    words = model.llm.embed(model.anchor_ids)
    tokens = torch.randn(3, config.llm_hidden)
    logits = torch.full((3, k + 1), -30.0)
    logits[torch.arange(3), torch.tensor([2, 4, 10])] = 30.0  # sure of one class each
    with torch.no_grad():
        out = model.anchored(tokens, logits)
        # colour head starts at zero: the colour part is the mean colour word
        expected = tokens + words[[2, 4, 10]] + words[k:].mean(0)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
        model.projectors.colour_head.bias[1] = 50.0  # now sure of colour 1
        out = model.anchored(tokens, logits)
        torch.testing.assert_close(out, tokens + words[[2, 4, 10]] + words[k + 1],
                                   rtol=1e-4, atol=1e-4)
    plain = build_model(get_config('tiny-random'), pretrained=False)
    assert plain.anchored(tokens, logits) is tokens


def test_colour_from_pool_reads_colour_off_the_pooled_features():
    config = get_config('tiny-random').replace(token_norm=True, word_anchor=True,
                                               colour_from_pool=True)
    model = build_model(config, pretrained=False)
    k, c8 = config.num_classes, config.backbone_channels[0]
    assert model.projectors.colour_head.in_features == c8
    words = model.llm.embed(model.anchor_ids)
    tokens, logits = torch.randn(2, config.llm_hidden), torch.zeros(2, k + 1)
    pooled = torch.zeros(2, c8)
    pooled[0, 0], pooled[1, 1] = 1.0, 1.0
    with torch.no_grad():
        model.projectors.colour_head.weight[2, 0] = 60.0  # feature 0 means colour 2
        model.projectors.colour_head.weight[5, 1] = 60.0  # feature 1 means colour 5
        out = model.anchored(tokens, logits, pooled=pooled)
        class_part = logits[:, :k].softmax(-1) @ words[:k]
        torch.testing.assert_close(out - tokens - class_part, words[[k + 2, k + 5]],
                                   rtol=1e-4, atol=1e-4)
        changed = model.anchored(tokens * 3, logits, pooled=pooled) - tokens * 3
        torch.testing.assert_close(changed, out - tokens)  # the token itself plays no part
    with pytest.raises(ValueError, match='pooled'):
        model.anchored(tokens, logits)
    with pytest.raises(ValueError, match='colour_from_pool=True: needs fine_pool'):
        config.replace(fine_pool=False)


def test_place_anchor_adds_place_words_by_mask_position():
    config = get_config('tiny-random').replace(token_norm=True, place_anchor=True)
    model = build_model(config, pretrained=False)
    words = model.llm.embed(model.place_ids)  # left, right, front, back
    hm = config.mask_size
    masks = torch.full((2, hm, hm), -20.0)
    masks[0, :, :3] = 20.0  # a column at the left edge
    masks[1, :, -3:] = 20.0  # one at the right edge
    tokens = torch.randn(2, config.llm_hidden)
    logits = torch.zeros(2, config.num_classes + 1)
    with torch.no_grad():
        assert torch.equal(model.anchored(tokens, logits, masks), tokens)  # zero at init
        model.projectors.place_head.weight[0, 0] = -4.0  # 'left' grows as x falls
        model.projectors.place_head.bias[0] = 2.0
        out = model.anchored(tokens, logits, masks)
    shift = out - tokens
    left_weight = (shift @ words[0]) / words[0].pow(2).sum()
    assert left_weight[0] > 0.8 and left_weight[1] < -0.8  # tanh(+-~2)
    with pytest.raises(ValueError, match='mask_logits'):
        model.anchored(tokens, logits)

"""OMG-LLaVA vision modules: exact pieces against hand computations, a tiny end-to-end
forward, ONNX parity of deformable attention, and the official sizes on the meta device."""
import math

import pytest
import torch

from ros_segcap.models.omg_llava.convnext import ConvNeXtConfig, ConvNeXtTrunk, \
    build_convnext_large
from ros_segcap.models.omg_llava.decoder import HeadConfig, LOGIT_SCALE, OMGSegHead, \
    build_omg_seg_head, text_classifier
from ros_segcap.models.omg_llava.deform_attn import MultiScaleDeformableAttention
from ros_segcap.models.omg_llava.positional import box_encoding, sine_2d, \
    sine_3d_single_frame
from ros_segcap.models.omg_llava.prior import perception_prior, pixel_shuffle


def bilinear(img, x, y):
    """Sample img (C, H, W) at normalised (x, y), pixel centres at (i + 0.5) / size, zeros
    outside: grid_sample(align_corners=False, padding zeros) written out by hand."""
    c, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(c)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                out += img[:, yy, xx] * (1 - abs(px - xx)) * (1 - abs(py - yy))
    return out


def identity_projections(attn):
    with torch.no_grad():
        for lin in (attn.value_proj, attn.output_proj):
            lin.weight.copy_(torch.eye(lin.in_features))
            lin.bias.zero_()
        attn.sampling_offsets.weight.zero_()
        attn.attention_weights.weight.zero_()


@pytest.mark.parametrize('shift', [(0.0, 0.0), (0.7, -1.3)])
def test_deform_attn_is_weighted_bilinear_sampling(shift):
    torch.manual_seed(0)
    dim, heads, levels, points = 16, 8, 2, 3
    shapes = [(3, 4), (2, 2)]
    attn = MultiScaleDeformableAttention(embed_dims=dim, num_heads=heads, num_levels=levels,
                                         num_points=points)
    identity_projections(attn)
    with torch.no_grad():  # every point offset by `shift` pixels; per-head level/point logits
        attn.sampling_offsets.bias.copy_(torch.tensor(shift).repeat(heads * levels * points))
        attn.attention_weights.bias.normal_()
    nq = 5
    value = torch.randn(1, sum(h * w for h, w in shapes), dim)
    query = torch.randn(1, nq, dim)
    ref = torch.rand(1, nq, 1, 2).expand(1, nq, levels, 2) * 1.2 - 0.1  # some outside [0, 1]
    out = attn(query, torch.randn(1, nq, dim), ref, shapes, value=value)

    logits = attn.attention_weights.bias.view(heads, levels * points)
    wts = logits.softmax(-1).view(heads, levels, points).sum(-1)  # points coincide
    maps, start = [], 0
    for h, w in shapes:
        maps.append(value[0, start:start + h * w].T.reshape(dim, h, w))
        start += h * w
    hd = dim // heads
    for q in range(nq):
        expect = query[0, q].clone()
        for lvl, (h, w) in enumerate(shapes):
            x = ref[0, q, lvl, 0].item() + shift[0] / w
            y = ref[0, q, lvl, 1].item() + shift[1] / h
            s = bilinear(maps[lvl], x, y)
            for k in range(heads):
                expect[k * hd:(k + 1) * hd] += wts[k, lvl] * s[k * hd:(k + 1) * hd]
        torch.testing.assert_close(out[0, q], expect, atol=1e-5, rtol=1e-5)


def test_deform_attn_onnx_matches_torch(tmp_path):
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(1)
    shapes = [(4, 5), (2, 3)]
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=8, num_levels=2,
                                         num_points=2).eval()
    with torch.no_grad():
        attn.sampling_offsets.bias.normal_(std=2.0)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, q, pos, ref):
            return self.attn(q, pos, ref, shapes)

    n = sum(h * w for h, w in shapes)
    q, pos = torch.randn(1, n, 32), torch.randn(1, n, 32)
    ref = torch.rand(1, n, 2, 2)
    path = tmp_path / 'msda.onnx'
    torch.onnx.export(Wrap(), (q, pos, ref), str(path), dynamo=False, opset_version=16,
                      input_names=['q', 'pos', 'ref'], output_names=['out'])
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    got = sess.run(None, {'q': q.numpy(), 'pos': pos.numpy(), 'ref': ref.numpy()})[0]
    with torch.no_grad():
        want = Wrap()(q, pos, ref).numpy()
    assert abs(got - want).max() < 1e-4


def hand_sine(value, num_feats, temperature=10000.0):
    """[sin(v / T^(0/F)), cos(v / T^(0/F)), sin(v / T^(2/F)), ...] for one scalar v."""
    out = []
    for k in range(num_feats):
        angle = value / temperature ** (2 * (k // 2) / num_feats)
        out.append(math.sin(angle) if k % 2 == 0 else math.cos(angle))
    return out


def test_sine_2d_and_3d_by_hand():
    h, w, f = 2, 3, 8
    pos = sine_2d(h, w, num_feats=f)
    pos3 = sine_3d_single_frame(h, w, num_feats=f)
    z = hand_sine(1.0 / (1.0 + 1e-6) * 2 * math.pi, 2 * f)
    for r in range(h):
        for c in range(w):
            y = (r + 1) / (h + 1e-6) * 2 * math.pi
            x = (c + 1) / (w + 1e-6) * 2 * math.pi
            want = torch.tensor(hand_sine(y, f) + hand_sine(x, f))
            torch.testing.assert_close(pos[:, r, c], want, atol=1e-6, rtol=0)
            torch.testing.assert_close(pos3[r * w + c], want + torch.tensor(z), atol=1e-6,
                                       rtol=0)
    assert sine_2d(4, 4).shape == (256, 4, 4)  # official num_feats 128


def test_box_encoding_order_by_hand():
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])  # cx cy w h
    got = box_encoding(box, num_feats=4)[0]
    s = 2 * math.pi
    want = sum((hand_sine(v * s, 4) for v in (0.2, 0.1, 0.3, 0.4)), [])  # y, x, w, h
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)


def test_pixel_shuffle_channel_order():
    c = 3
    feat = torch.arange(c * 4 * 6, dtype=torch.float32).reshape(1, c, 4, 6)
    out = pixel_shuffle(feat)
    assert out.shape == (1, 4 * c, 2, 3)
    for dy in range(2):
        for dx in range(2):
            for ch in range(c):
                for i in range(2):
                    for j in range(3):
                        assert out[0, (dy * 2 + dx) * c + ch, i, j] == \
                            feat[0, ch, 2 * i + dy, 2 * j + dx]


def test_prior_and_kept_queries_by_hand():
    # 3 queries on a 4x4 image, token grid 2x2: bilinear 4 -> 2 is the 2x2 block mean
    logits = torch.full((1, 3, 4, 4), -4.0)
    logits[0, 0, :2, :2] = 4.0   # query 0 owns the top-left cell
    logits[0, 1, :, 2:] = 3.0    # query 1 owns the right column of cells
    logits[0, 1, 2:, :2] = 2.0   # ... and bottom-left
    logits[0, 2, 2:, :2] = 1.0   # query 2 is weaker everywhere: owns nothing
    cls = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # K = 2
    feat = torch.randn(1, 3, 4)
    pos = torch.randn(1, 3, 4)
    out = perception_prior(logits, cls, feat, pos, (4, 4), (2, 2))
    assert out.keep.tolist() == [[True, True, False]]
    assert out.owner.tolist() == [[[0, 1], [1, 1]]]

    fp = torch.cat([feat, pos], -1)[0]
    scale = []
    for q in range(3):
        e = [math.exp(v) for v in cls[0, q].tolist()]
        scale.append(max(e[:2]) / sum(e) * 0.5 + 0.5)
    for i in range(2):
        for j in range(2):
            cell = [scale[q] * sum(1 / (1 + math.exp(-logits[0, q, 2 * i + a, 2 * j + b]))
                                   for a in range(2) for b in range(2)) / 4 for q in range(3)]
            wts = [math.exp(v) for v in cell]
            want = sum(wts[q] / sum(wts) * fp[q] for q in range(3))
            torch.testing.assert_close(out.prior[0, i * 2 + j], want, atol=1e-5, rtol=1e-5)


TINY_TRUNK = ConvNeXtConfig(depths=(1, 1, 1, 1), dims=(16, 16, 32, 32))
TINY_HEAD = HeadConfig(in_channels=(16, 16, 32, 32), dim=32, num_queries=5, num_layers=4,
                       num_heads=4, ffn_channels=64, encoder_layers=2,
                       encoder_ffn_channels=48, num_groups=8, clip_dim=16, llm_decoder=True)


def test_tiny_end_to_end_shapes():
    torch.manual_seed(0)
    trunk, head = ConvNeXtTrunk(TINY_TRUNK).eval(), OMGSegHead(TINY_HEAD).eval()
    image = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        feats = trunk(image)
        assert [tuple(f.shape) for f in feats] == [(2, 16, 32, 16), (2, 16, 16, 8),
                                                   (2, 32, 8, 4), (2, 32, 4, 2)]
        mem = head.encode(feats)
        assert mem.mask_features.shape == (2, 32, 32, 16)
        assert [tuple(m.shape) for m in mem.memories] == [(2, 32, 4, 2), (2, 32, 8, 4),
                                                          (2, 32, 16, 8)]
        torch.testing.assert_close(mem.memory_pos[1], sine_3d_single_frame(8, 4,
                                                                           num_feats=16))
        text_embeds = torch.nn.functional.normalize(torch.randn(7, 3, 16), dim=-1)
        pan = head(mem, text_classifier(text_embeds))
        assert pan.query_feat.shape == pan.query_pos.shape == (2, 5, 32)
        assert pan.mask_logits.shape == (2, 5, 32, 16)
        assert pan.class_logits.shape == (2, 5, 8) and pan.iou_logits.shape == (2, 5, 1)
        assert torch.all(pan.class_logits[..., -1] == 0)  # zero background embedding
        assert pan.class_logits.abs().max() <= LOGIT_SCALE * 1.0001

        prior = perception_prior(pan.mask_logits, pan.class_logits, pan.query_feat,
                                 pan.query_pos, (128, 64), (2, 1))
        assert prior.prior.shape == (2, 2, 64) and prior.keep.shape == (2, 5)
        assert pixel_shuffle(feats[-1]).shape == (2, 128, 2, 1)

        seg = head.decode_seg(mem, torch.randn(3, 64), torch.tensor([1, 0, 1]))
        assert seg.mask_logits.shape == (3, 1, 32, 16) and seg.query_feat.shape == (3, 1, 32)
        pts = head.decode_points(mem, torch.tensor([[10.0, 20.0]]), torch.tensor([0]),
                                 (128, 64), boxes=[[0.0, 0.0, 30.0, 60.0]])
        assert pts.mask_logits.shape == (1, 1, 32, 16) and pts.query_pos.shape == (1, 1, 32)

        head.mask_embed_llm[4].weight.zero_()  # [SEG] goes through the *_llm copy
        head.mask_embed_llm[4].bias.zero_()
        assert torch.all(head.decode_seg(mem, torch.randn(1, 64),
                                         torch.tensor([0])).mask_logits == 0)


def test_fully_masked_rows_are_unmasked():
    head = OMGSegHead(TINY_HEAD)
    with torch.no_grad():
        head.mask_embed[4].weight.zero_()
        head.mask_embed[4].bias.fill_(-1.0)
    mf = torch.ones(1, 32, 8, 8)
    q = torch.randn(1, 5, 32)
    with torch.no_grad():  # every logit negative: every key blocked
        _, _, blocked = head._mask_head(head.transformer_decoder, head.mask_embed, q, mf,
                                        (4, 4), None)
    assert blocked.shape == (1 * 4, 5, 16) and not blocked.any()


def test_official_sizes_on_meta(capsys):
    with torch.device('meta'):
        trunk, head = build_convnext_large(), build_omg_seg_head(llm_decoder=True)
    t_sd, h_sd = trunk.state_dict(), head.state_dict()
    for name, t in list(t_sd.items()) + list(h_sd.items()):
        print(name, tuple(t.shape))
    n_trunk = sum(p.numel() for p in trunk.parameters())
    n_head = sum(p.numel() for k, p in head.named_parameters() if '_llm' not in k)
    print(f'{len(t_sd)} trunk keys, {n_trunk} params; {len(h_sd)} head keys with the '
          f'*_llm copies, {n_head} params without')
    assert abs(n_trunk / 196e6 - 1) < 0.02 and abs(n_head / 21.0e6 - 1) < 0.02
    expect = {
        'stem.0.weight': (192, 3, 4, 4), 'stem.1.weight': (192,),
        'stages.1.downsample.0.weight': (192,), 'stages.1.downsample.1.weight': (384, 192, 2, 2),
        'stages.2.blocks.26.conv_dw.weight': (768, 1, 7, 7),
        'stages.2.blocks.26.mlp.fc1.weight': (3072, 768), 'stages.3.blocks.2.gamma': (1536,),
    }
    expect_head = {
        'pixel_decoder.input_convs.0.conv.weight': (256, 1536, 1, 1),
        'pixel_decoder.input_convs.2.gn.weight': (256,),
        'pixel_decoder.encoder.layers.5.self_attn.sampling_offsets.weight': (192, 256),
        'pixel_decoder.encoder.layers.5.self_attn.attention_weights.weight': (96, 256),
        'pixel_decoder.encoder.layers.0.ffn.layers.0.0.weight': (1024, 256),
        'pixel_decoder.level_encoding.weight': (3, 256),
        'pixel_decoder.lateral_convs.0.conv.weight': (256, 192, 1, 1),
        'pixel_decoder.output_convs.0.conv.weight': (256, 256, 3, 3),
        'pixel_decoder.mask_feature.weight': (256, 256, 1, 1),
        'transformer_decoder.layers.8.cross_attn.attn.in_proj_weight': (768, 256),
        'transformer_decoder.layers.8.ffn.layers.1.weight': (256, 2048),
        'transformer_decoder.post_norm.weight': (256,), 'query_feat.weight': (300, 256),
        'cls_proj.4.weight': (768, 256), 'iou_embed.4.weight': (1, 256),
        'mask_pooling_proj.0.weight': (256,), 'pos_linear.weight': (256, 512),
        'pb_embedding.weight': (2, 256), 'mask_tokens.weight': (1, 256),
        'transformer_decoder_llm.layers.8.norms.2.bias': (256,),
        'mask_embed_llm.4.weight': (256, 256),
    }
    for sd, table in ((t_sd, expect), (h_sd, expect_head)):
        for k, shape in table.items():
            assert tuple(sd[k].shape) == shape, k
    assert 'stages.0.downsample.0.weight' not in t_sd
    assert 'pixel_decoder.lateral_convs.0.conv.bias' not in h_sd

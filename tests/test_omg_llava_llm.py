"""OMG-LLaVA LLM import: LoRA merge vs peft, InternLM2 -> Llama vs a plain InternLM2 forward,
and strict key mapping (the tokenizer: test_omg_llava_tokenizer.py).

All weights are tiny and random; nothing is downloaded.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from ros_segcap.models.omg_llava.llm_convert import (
    internlm2_to_llama, llama_config, merge_lora, split_wqkv,
)

peft = pytest.importorskip('peft')
transformers = pytest.importorskip('transformers')

CFG = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
           intermediate_size=128, vocab_size=100, rope_theta=1e6, rms_norm_eps=1e-5,
           max_position_embeddings=64, rope_scaling={'type': 'dynamic', 'factor': 2.0},
           bias=False, hidden_act='silu')
HEAD_DIM = 16


# ---------------------------------------------------------------- a tiny InternLM2 in names
class _Attention(nn.Module):
    def __init__(self, c: int, qkv: int) -> None:
        super().__init__()
        self.wqkv = nn.Linear(c, qkv, bias=False)
        self.wo = nn.Linear(c, c, bias=False)


class _FeedForward(nn.Module):
    def __init__(self, c: int, f: int) -> None:
        super().__init__()
        self.w1, self.w3 = nn.Linear(c, f, bias=False), nn.Linear(c, f, bias=False)
        self.w2 = nn.Linear(f, c, bias=False)


class _Layer(nn.Module):
    def __init__(self, c: int, f: int, qkv: int) -> None:
        super().__init__()
        self.attention, self.feed_forward = _Attention(c, qkv), _FeedForward(c, f)
        self.attention_norm = nn.Parameter(torch.ones(c))
        self.ffn_norm = nn.Parameter(torch.ones(c))


class _Inner(nn.Module):
    def __init__(self, v: int, c: int, f: int, qkv: int, n: int) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(v, c)
        self.layers = nn.ModuleList(_Layer(c, f, qkv) for _ in range(n))
        self.norm = nn.Parameter(torch.ones(c))


class TinyInternLM2(nn.Module):
    """InternLM2's module names; a simple forward that uses every linear layer."""

    def __init__(self, v: int = 50, c: int = 32, f: int = 48, qkv: int = 64, n: int = 2):
        super().__init__()
        self.model = _Inner(v, c, f, qkv, n)
        self.output = nn.Linear(c, v, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.model.tok_embeddings(ids)  # (T, C)
        for layer in self.model.layers:
            a = layer.attention
            h = h + a.wo(a.wqkv(h)[..., :h.shape[-1]])
            m = layer.feed_forward
            h = h + m.w2(torch.nn.functional.silu(m.w1(h)) * m.w3(h))
        return self.output(h)


def _norm_names(sd: dict) -> dict:
    """Plain module state dict keys: norms are Parameters named <x>_norm / norm (no .weight)."""
    return {k if k.endswith('.weight') else f'{k}.weight': v for k, v in sd.items()}


def _peft_trained(seed: int = 0, r: int = 4, alpha: int = 8):
    """(base state, trained checkpoint as OMG-LLaVA saves it, peft model with random LoRA)."""
    torch.manual_seed(seed)
    tiny = TinyInternLM2()
    base = _norm_names({k: v.detach().clone() for k, v in tiny.state_dict().items()})
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias='none',
                             target_modules=['wqkv', 'wo', 'w1', 'w2', 'w3', 'output'])
    model = peft.get_peft_model(copy.deepcopy(tiny), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'lora_' in name:
                p.normal_(0, 0.2)  # lora_B starts at zero: make the update non-trivial
            elif 'output.base_layer' in name or 'tok_embeddings' in name:
                p.add_(0.05 * torch.randn_like(p))  # trained in full, like the official head
    trained = {f'llm.{k}': v.detach().clone() for k, v in model.named_parameters()
               if 'lora_' in k or 'output.' in k or 'tok_embeddings' in k}
    return base, trained, model


def test_merge_lora_matches_peft_merge_and_outputs() -> None:
    base, trained, model = _peft_trained()
    assert any('.default.' in k for k in trained)
    assert 'llm.base_model.model.output.base_layer.weight' in trained
    ids = torch.arange(10)
    with torch.no_grad():
        expected_out = model(ids)
        expected_64 = copy.deepcopy(model).double()(ids)  # unmerged: x A^T B^T on the side
    merged = merge_lora(base, trained, alpha=8, r=4)
    reference = _norm_names(model.merge_and_unload().state_dict())
    assert set(merged) == set(reference)
    for key, ref in reference.items():
        torch.testing.assert_close(merged[key], ref, atol=1e-6, rtol=0, msg=key)
    for name in ('model.layers.0.attention.wqkv.weight', 'output.weight'):
        assert merged[name].dtype == torch.float32
        assert not torch.allclose(merged[name], base[name], atol=1e-3)  # the merge did work
    plain = TinyInternLM2()
    names = plain.state_dict()
    plain.load_state_dict({k if k in names else k.removesuffix('.weight'): v
                           for k, v in merged.items()})
    with torch.no_grad():  # float64 forwards: only the fp32 rounding of the merge remains
        err = (plain.double()(ids) - expected_64).abs().max() / expected_64.abs().max()
        assert err < 1e-6, f'merged vs unmerged outputs differ by {err:.1e} of the logit scale'
        assert (expected_out - plain.float()(ids)).abs().max() < 1e-4


def test_merge_lora_accepts_keys_without_default_and_base_layer() -> None:
    base, trained, _ = _peft_trained(seed=1)
    old_form = {k.replace('.default.', '.').replace('.base_layer.', '.'): v
                for k, v in trained.items()}
    assert 'llm.base_model.model.output.weight' in old_form
    a, b = merge_lora(base, trained, alpha=8, r=4), merge_lora(base, old_form, alpha=8, r=4)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_merge_lora_refuses_what_does_not_fit() -> None:
    base, trained, _ = _peft_trained(seed=2)
    with pytest.raises(ValueError, match='rank 4.*r=8'):
        merge_lora(base, trained, alpha=8, r=8)
    key_a = 'llm.base_model.model.model.layers.1.feed_forward.w2.lora_A.default.weight'
    no_a = {k: v for k, v in trained.items() if k != key_a}
    with pytest.raises(ValueError, match='feed_forward.w2.*only lora_B'):
        merge_lora(base, no_a, alpha=8, r=4)
    no_layer = {k: v for k, v in trained.items() if 'layers.1.feed_forward.w2.lora' not in k}
    with pytest.raises(ValueError, match=r'layers\.1\.feed_forward\.w2\.weight: no LoRA'):
        merge_lora(base, no_layer, alpha=8, r=4)
    stray = dict(trained, **{'llm.base_model.model.model.extra.weight': torch.zeros(2)})
    with pytest.raises(ValueError, match='model.extra.weight'):
        merge_lora(base, stray, alpha=8, r=4)


# ---------------------------------------------------------------- InternLM2 -> Llama numerics
def _random_internlm2(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    c, f, v = CFG['hidden_size'], CFG['intermediate_size'], CFG['vocab_size']
    qkv = (CFG['num_attention_heads'] + 2 * CFG['num_key_value_heads']) * HEAD_DIM

    def rnd(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    sd = {'model.tok_embeddings.weight': rnd(v, c, std=1.0), 'output.weight': rnd(v, c),
          'model.norm.weight': 1 + rnd(c)}
    for i in range(CFG['num_hidden_layers']):
        p = f'model.layers.{i}.'
        sd.update({p + 'attention.wqkv.weight': rnd(qkv, c),
                   p + 'attention.wo.weight': rnd(c, c),
                   p + 'feed_forward.w1.weight': rnd(f, c),
                   p + 'feed_forward.w3.weight': rnd(f, c),
                   p + 'feed_forward.w2.weight': rnd(c, f),
                   p + 'attention_norm.weight': 1 + rnd(c), p + 'ffn_norm.weight': 1 + rnd(c)})
    return sd


def _rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + CFG['rms_norm_eps'])


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def internlm2_logits(sd: dict, ids: torch.Tensor) -> torch.Tensor:
    """InternLM2 written out plainly: packed grouped wqkv, rotate_half RoPE, causal softmax."""
    heads, kv, d = CFG['num_attention_heads'], CFG['num_key_value_heads'], HEAD_DIM
    per = heads // kv
    t = ids.shape[0]
    inv = 1.0 / CFG['rope_theta'] ** (torch.arange(0, d, 2).float() / d)
    angle = torch.arange(t).float()[:, None] * inv[None]
    emb = torch.cat((angle, angle), -1)[:, None]  # (T, 1, D): broadcast over heads
    cos, sin = emb.cos(), emb.sin()
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    h = sd['model.tok_embeddings.weight'][ids]  # (T, C)
    for i in range(CFG['num_hidden_layers']):
        p = f'model.layers.{i}.'
        x = _rms(h, sd[p + 'attention_norm.weight'])
        qkv = (x @ sd[p + 'attention.wqkv.weight'].T).view(t, kv, per + 2, d)
        q = qkv[:, :, :per].reshape(t, heads, d)  # query head j belongs to KV group j // per
        k = qkv[:, :, per].repeat_interleave(per, dim=1)  # (T, H, D)
        v = qkv[:, :, per + 1].repeat_interleave(per, dim=1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        scores = torch.einsum('thd,shd->hts', q, k) / math.sqrt(d)
        att = scores.masked_fill(~causal, float('-inf')).softmax(-1)
        h = h + torch.einsum('hts,shd->thd', att, v).reshape(t, heads * d) @ sd[
            p + 'attention.wo.weight'].T
        x = _rms(h, sd[p + 'ffn_norm.weight'])
        gate = torch.nn.functional.silu(x @ sd[p + 'feed_forward.w1.weight'].T)
        h = h + (gate * (x @ sd[p + 'feed_forward.w3.weight'].T)) @ sd[
            p + 'feed_forward.w2.weight'].T
    return _rms(h, sd['model.norm.weight']) @ sd['output.weight'].T


def _llama(state: dict):
    config = transformers.LlamaConfig(**llama_config(CFG))
    model = transformers.LlamaForCausalLM(config).eval()
    model.config._attn_implementation = 'eager'
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def test_converted_llama_matches_plain_internlm2_forward() -> None:
    sd = _random_internlm2()
    ids = torch.tensor([3, 17, 42, 99, 0, 5, 64, 7, 23, 11, 88, 2])
    with torch.no_grad():
        expected = internlm2_logits(sd, ids)
        got = _llama(internlm2_to_llama(sd, CFG))(ids[None]).logits[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the grouped layout matters: a naive [q; k; v] row split gives other logits
    naive = internlm2_to_llama(sd, CFG)
    for i in range(CFG['num_hidden_layers']):
        w = sd[f'model.layers.{i}.attention.wqkv.weight']
        a = f'model.layers.{i}.self_attn.'
        naive[a + 'q_proj.weight'], naive[a + 'k_proj.weight'], naive[a + 'v_proj.weight'] = (
            w[:64], w[64:96], w[96:])
    with torch.no_grad():
        wrong = _llama(naive)(ids[None]).logits[0]
    assert (wrong - expected).abs().max() > 1e-3


def test_llama_config_fields() -> None:
    kw = llama_config(CFG, vocab_size=104)
    assert kw['vocab_size'] == 104 and kw['tie_word_embeddings'] is False
    assert kw['rope_parameters'] == {'rope_type': 'dynamic', 'rope_theta': 1e6, 'factor': 2.0}
    assert (kw['num_key_value_heads'], kw['head_dim'], kw['rms_norm_eps']) == (2, 16, 1e-5)
    plain = llama_config({**CFG, 'rope_scaling': None})
    assert plain['rope_parameters'] == {'rope_type': 'default', 'rope_theta': 1e6}


def test_split_wqkv_layout_and_shape_check() -> None:
    rows = torch.arange(8 * 2).float()[:, None].expand(16, 3)  # 2 groups x (2 q + k + v) x D=2
    q, k, v = split_wqkv(rows, num_heads=4, num_kv_heads=2, head_dim=2)
    assert q[:, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert k[:, 0].tolist() == [4, 5, 12, 13] and v[:, 0].tolist() == [6, 7, 14, 15]
    with pytest.raises(ValueError, match=r'\(15, 3\)'):
        split_wqkv(rows[:15], num_heads=4, num_kv_heads=2, head_dim=2)


def test_merge_then_convert_casts_after_the_split() -> None:
    sd = _random_internlm2(seed=3)
    wqkv = 'model.layers.0.attention.wqkv.weight'
    a, b = torch.randn(8, 64) * 0.1, torch.randn(sd[wqkv].shape[0], 8) * 0.1
    trained = {f'llm.base_model.model.{k[:-len(".weight")]}.lora_{n}.default.weight': t
               for k in sd if k.endswith(('wqkv.weight', 'wo.weight', 'w1.weight', 'w2.weight',
                                          'w3.weight')) or k == 'output.weight'
               for n, t in (('A', torch.zeros(8, sd[k].shape[1])),
                            ('B', torch.zeros(sd[k].shape[0], 8)))}
    trained[f'llm.base_model.model.{wqkv[:-7]}.lora_A.default.weight'] = a
    trained[f'llm.base_model.model.{wqkv[:-7]}.lora_B.default.weight'] = b
    bf16 = {k: v.bfloat16() for k, v in sd.items()}
    out = internlm2_to_llama(merge_lora(bf16, trained, alpha=16, r=8), CFG, dtype=torch.float16)
    assert {v.dtype for v in out.values()} == {torch.float16}
    q32, _, _ = split_wqkv(bf16[wqkv].float() + 2 * b @ a, 4, 2, HEAD_DIM)
    assert torch.equal(out['model.layers.0.self_attn.q_proj.weight'], q32.half())


# ---------------------------------------------------------------- strictness
def test_conversion_is_strict_about_keys_and_shapes() -> None:
    sd = _random_internlm2()
    with pytest.raises(ValueError, match=r'model\.layers\.0\.attention\.extra\.weight'):
        internlm2_to_llama({**sd, 'model.layers.0.attention.extra.weight': torch.zeros(1)}, CFG)
    missing = {k: v for k, v in sd.items() if k != 'model.layers.1.ffn_norm.weight'}
    with pytest.raises(ValueError, match=r'model\.layers\.1\.ffn_norm\.weight: missing'):
        internlm2_to_llama(missing, CFG)
    wrong = {**sd, 'model.layers.1.feed_forward.w2.weight': torch.zeros(64, 127)}
    with pytest.raises(ValueError, match=r'w2\.weight: shape \(64, 127\), expected \(64, 128\)'):
        internlm2_to_llama(wrong, CFG)
    grown = {**sd, 'output.weight': torch.zeros(104, 64)}
    with pytest.raises(ValueError,
                       match=r'output\.weight: shape \(104, 64\), expected \(100, 64\)'):
        internlm2_to_llama(grown, CFG)
    inv = {**sd, 'model.layers.0.attention.rotary_emb.inv_freq': torch.zeros(8)}
    assert set(internlm2_to_llama(inv, CFG)) == set(internlm2_to_llama(sd, CFG))
    with pytest.raises(ValueError, match='bias'):
        internlm2_to_llama(sd, {**CFG, 'bias': True})

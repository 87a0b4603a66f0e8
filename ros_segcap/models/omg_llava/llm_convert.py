"""InternLM2 weights (+ the OMG-LLaVA LoRA) -> a transformers LlamaForCausalLM state dict.

Pure functions on state dicts (name -> tensor); nothing is downloaded or run here.

The official OMG-LLaVA checkpoint holds only what was trained: the full token embeddings and
output head (92548 rows), and UNMERGED LoRA factors on wqkv, wo, w1, w2, w3 and output (xtuner's
find_all_linear_names excludes only `lm_head` / `output_layer`, so InternLM2's `output` gets one
too). The frozen base comes from internlm2-chat-7b. Steps, in this order:

1. `merge_lora(base, trained, alpha=256, r=512)`: W + (alpha / r) B A in fp32.
2. `internlm2_to_llama(merged, config)`: split the packed wqkv, rename; cast with `dtype`.

InternLM2 and Llama both use rotate_half RoPE, so q and k need no permutation (InternLM's own
tools/convert2llama.py only reshapes wqkv).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import torch

Tensor = torch.Tensor

# InternLM2 linear layers that carry LoRA in the official release (suffix of the module name).
LORA_TARGETS = ('attention.wqkv', 'attention.wo', 'feed_forward.w1', 'feed_forward.w2',
                'feed_forward.w3', 'output')

# Tensors whose row count may grow when tokens are added (vocabulary rows).
VOCAB_KEYS = ('model.tok_embeddings.weight', 'output.weight')

# Source keys that are dropped on purpose, with the reason (the conversion is otherwise strict).
DROPPED = {
    r'model\.layers\.\d+\.attention\.rotary_emb\.inv_freq':
        'RoPE frequencies are recomputed from rope_theta by LlamaRotaryEmbedding',
}

# peft / xtuner prefixes in front of the InternLM2 module names in the OMG-LLaVA checkpoint.
_PEFT_PREFIXES = ('llm.', 'base_model.model.')


def peft_key(key: str) -> str:
    """The InternLM2 name of a key from a peft-wrapped checkpoint.

    `llm.base_model.model.output.base_layer.weight` -> `output.weight`;
    `...wqkv.lora_A.default.weight` -> `...wqkv.lora_A.weight` (peft's adapter name `default`
    is kept in keys saved from named_parameters and removed by get_peft_model_state_dict).
    """
    for prefix in _PEFT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key.replace('.default.', '.').replace('.base_layer.', '.')


def _lora_factors(trained: Mapping[str, Tensor]) -> tuple[dict, dict]:
    """Split a trained state dict into full tensors and LoRA factors per module.

    Returns (full: name -> (original key, tensor), factors: module -> {'A'|'B': (key, tensor)}).
    """
    full: dict[str, tuple[str, Tensor]] = {}
    factors: dict[str, dict[str, tuple[str, Tensor]]] = {}
    for key, tensor in trained.items():
        name = peft_key(key)
        match = re.fullmatch(r'(.+)\.lora_([AB])\.weight', name)
        if match:
            factors.setdefault(match.group(1), {})[match.group(2)] = (key, tensor)
        elif 'lora_' in name:
            raise ValueError(f'{key}: not a LoRA weight of the form <module>.lora_A|B.weight')
        else:
            full[name] = (key, tensor)
    return full, factors


def _replace_full(merged: dict[str, Tensor], full: dict) -> None:
    """Put trained full tensors (embeddings, output head) in place of the base ones."""
    for name, (key, tensor) in full.items():
        if name not in merged:
            raise ValueError(f'{key}: no base weight {name} to replace; is this an InternLM2 '
                             'checkpoint of the same model?')
        old = tuple(merged[name].shape)
        new = tuple(tensor.shape)
        grows = name in VOCAB_KEYS and new[1:] == old[1:] and new[0] >= old[0]
        if new != old and not grows:
            raise ValueError(f'{key}: shape {new} does not fit base {name} {old}')
        merged[name] = tensor


def merge_lora(base: Mapping[str, Tensor], trained: Mapping[str, Tensor], *,
               alpha: float, r: int) -> dict[str, Tensor]:
    """Base InternLM2 weights with the trained tensors put in and the LoRA merged.

    base: InternLM2 HF state dict (`model.layers.0.attention.wqkv.weight`, `output.weight`, ...).
    trained: the LLM part of the OMG-LLaVA checkpoint (keys may keep `llm.base_model.model.`,
    `.default.` and `.base_layer.`): LoRA factors A (r, in), B (out, r) for every target module,
    and full tensors that replace base ones (embeddings and output may have more rows).
    Every LoRA target module of the base must have factors. Merged weights are
    W + (alpha / r) B A computed in fp32 and returned in fp32; other tensors are returned as
    given. ValueError names the key that does not fit.
    """
    merged = dict(base)
    full, factors = _lora_factors(trained)
    _replace_full(merged, full)
    scale = alpha / r
    for module, pair in factors.items():
        first_key = next(iter(pair.values()))[0]
        if set(pair) != {'A', 'B'}:
            raise ValueError(f'{first_key}: LoRA {module} has only lora_{"".join(pair)}')
        if not module.endswith(LORA_TARGETS) or f'{module}.weight' not in merged:
            raise ValueError(f'{first_key}: {module} is not a LoRA target of the base '
                             f'(targets: {", ".join(LORA_TARGETS)})')
        (key_a, a), (key_b, b) = pair['A'], pair['B']
        if a.shape[0] != r or b.shape[1] != r:
            raise ValueError(f'{key_a}: rank {a.shape[0]} / {key_b}: rank {b.shape[1]}, expected '
                             f'r={r}; pass the r of the LoRA config')
        weight = merged[f'{module}.weight']
        delta_shape = (b.shape[0], a.shape[1])
        if delta_shape != tuple(weight.shape):
            raise ValueError(f'{key_b}: LoRA update {delta_shape} does not fit {module}.weight '
                             f'{tuple(weight.shape)}')
        merged[f'{module}.weight'] = weight.float() + scale * (b.float() @ a.float())
    missing = sorted(k for k in merged if k.endswith(tuple(f'{t}.weight' for t in LORA_TARGETS))
                     and k[:-len('.weight')] not in factors)
    if missing:
        raise ValueError(f'{missing[0]}: no LoRA factors for it in the trained weights '
                         f'({len(missing)} target weights without LoRA)')
    return merged


def split_wqkv(wqkv: Tensor, num_heads: int, num_kv_heads: int,
               head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split InternLM2's packed wqkv [(H + 2 KV) * D, C] into q [H*D, C], k, v [KV*D, C].

    Rows are grouped per KV head: its H/KV query heads, then its key head, then its value
    head (modeling_internlm2.py: rearrange '(h gs d)' with gs = 2 + H/KV).
    """
    if num_heads % num_kv_heads:
        raise ValueError(f'{num_heads} heads do not split into {num_kv_heads} KV groups')
    per_group = num_heads // num_kv_heads
    rows = (num_heads + 2 * num_kv_heads) * head_dim
    if wqkv.dim() != 2 or wqkv.shape[0] != rows:
        raise ValueError(f'wqkv has shape {tuple(wqkv.shape)}, expected ({rows}, C) for '
                         f'{num_heads} heads, {num_kv_heads} KV heads, head dim {head_dim}')
    grouped = wqkv.reshape(num_kv_heads, per_group + 2, head_dim, wqkv.shape[1])
    q = grouped[:, :per_group].reshape(num_heads * head_dim, -1)
    k = grouped[:, per_group].reshape(num_kv_heads * head_dim, -1)
    v = grouped[:, per_group + 1].reshape(num_kv_heads * head_dim, -1)
    return q, k, v


def _sizes(config: Mapping[str, Any], vocab_size: Optional[int]) -> dict[str, int]:
    """Model sizes from an InternLM2 config.json dict."""
    if config.get('bias', False):
        raise ValueError('this InternLM2 config has attention biases (bias: true); only the '
                         'bias-free models (all released InternLM2 chat models) convert')
    heads = config['num_attention_heads']
    return dict(hidden=config['hidden_size'], ffn=config['intermediate_size'], heads=heads,
                kv_heads=config.get('num_key_value_heads', heads),
                head_dim=config['hidden_size'] // heads, layers=config['num_hidden_layers'],
                vocab=vocab_size if vocab_size is not None else config['vocab_size'])


def _layer_plan(i: int, s: dict[str, int]) -> dict[str, tuple]:
    """Source key -> (target key or q/k/v keys, expected source shape) for layer i."""
    src, dst = f'model.layers.{i}.', f'model.layers.{i}.'
    h, f = s['hidden'], s['ffn']
    qkv_rows = (s['heads'] + 2 * s['kv_heads']) * s['head_dim']
    attn = dst + 'self_attn.'
    return {
        src + 'attention.wqkv.weight': ((attn + 'q_proj.weight', attn + 'k_proj.weight',
                                         attn + 'v_proj.weight'), (qkv_rows, h)),
        src + 'attention.wo.weight': (attn + 'o_proj.weight', (h, s['heads'] * s['head_dim'])),
        src + 'feed_forward.w1.weight': (dst + 'mlp.gate_proj.weight', (f, h)),
        src + 'feed_forward.w3.weight': (dst + 'mlp.up_proj.weight', (f, h)),
        src + 'feed_forward.w2.weight': (dst + 'mlp.down_proj.weight', (h, f)),
        src + 'attention_norm.weight': (dst + 'input_layernorm.weight', (h,)),
        src + 'ffn_norm.weight': (dst + 'post_attention_layernorm.weight', (h,)),
    }


def _plan(s: dict[str, int]) -> dict[str, tuple]:
    """Every source key of the model -> (target key(s), expected shape)."""
    plan = {
        'model.tok_embeddings.weight': ('model.embed_tokens.weight', (s['vocab'], s['hidden'])),
        'model.norm.weight': ('model.norm.weight', (s['hidden'],)),
        'output.weight': ('lm_head.weight', (s['vocab'], s['hidden'])),
    }
    for i in range(s['layers']):
        plan.update(_layer_plan(i, s))
    return plan


def internlm2_to_llama(state: Mapping[str, Tensor], config: Mapping[str, Any], *,
                       vocab_size: Optional[int] = None,
                       dtype: Optional[torch.dtype] = None) -> dict[str, Tensor]:
    """An InternLM2 state dict (LoRA already merged) as a LlamaForCausalLM state dict.

    config: the InternLM2 config.json dict. vocab_size: rows of the embedding and head when
    tokens were added (OMG-LLaVA: 92548), else config['vocab_size']. dtype: cast every output
    tensor (after the split, so a merged fp32 weight is rounded once). Strict: every source key
    is used exactly once or is in DROPPED; any other key, a missing key or a wrong shape raises
    ValueError naming the key (and both shapes).
    """
    sizes = _sizes(config, vocab_size)
    plan = _plan(sizes)
    for key in state:
        if key not in plan and not any(re.fullmatch(p, key) for p in DROPPED):
            raise ValueError(f'{key}: unknown InternLM2 weight (not converted, not dropped on '
                             'purpose); is the checkpoint an InternLM2 model with this config?')
    out: dict[str, Tensor] = {}
    for key, (target, shape) in plan.items():
        if key not in state:
            raise ValueError(f'{key}: missing from the InternLM2 weights '
                             f'({sizes["layers"]} layers expected by the config)')
        tensor = state[key]
        if tuple(tensor.shape) != shape:
            raise ValueError(f'{key}: shape {tuple(tensor.shape)}, expected {shape} from the '
                             'config (vocab_size covers added tokens: pass vocab_size=)')
        if isinstance(target, tuple):
            parts = split_wqkv(tensor, sizes['heads'], sizes['kv_heads'], sizes['head_dim'])
            out.update(zip(target, parts))
        else:
            out[target] = tensor
    if dtype is not None:
        out = {k: v.to(dtype) for k, v in out.items()}
    return {k: v.contiguous() for k, v in out.items()}


def llama_config(config: Mapping[str, Any], *,
                 vocab_size: Optional[int] = None) -> dict[str, Any]:
    """transformers LlamaConfig keyword arguments for an InternLM2 config.json dict.

    rope_scaling {type: dynamic, factor: F} becomes rope_type 'dynamic' with the same factor
    (both scale the base only past max_position_embeddings, with the same formula). The head is
    untied from the embeddings, as in InternLM2.
    """
    sizes = _sizes(config, vocab_size)
    rope: dict[str, Any] = {'rope_type': 'default', 'rope_theta': float(config['rope_theta'])}
    scaling = config.get('rope_scaling')
    if scaling:
        kind = scaling.get('type', scaling.get('rope_type'))
        if kind not in ('dynamic', 'linear'):
            raise ValueError(f'rope_scaling type {kind!r} has no Llama equivalent here')
        rope.update(rope_type=kind, factor=float(scaling['factor']))
    return dict(
        vocab_size=sizes['vocab'], hidden_size=sizes['hidden'], intermediate_size=sizes['ffn'],
        num_hidden_layers=sizes['layers'], num_attention_heads=sizes['heads'],
        num_key_value_heads=sizes['kv_heads'], head_dim=sizes['head_dim'],
        hidden_act=config.get('hidden_act', 'silu'),
        max_position_embeddings=config['max_position_embeddings'],
        rms_norm_eps=config['rms_norm_eps'], rope_parameters=rope,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        bos_token_id=config.get('bos_token_id', 1), eos_token_id=config.get('eos_token_id', 2),
        pad_token_id=config.get('pad_token_id', 2))

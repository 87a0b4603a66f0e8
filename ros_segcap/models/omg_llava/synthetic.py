"""The official OMG-LLaVA release's files in small: key names and layout, random tensors.

`official_manifest(config)` lists every tensor of each downloaded file with its shape, as the
official code names them (omg_llava/model/omg_llava.py state_dict(), peft, InternLM2's HF
layout, open_clip's convnext_large_d_320). `write_release` writes such files with random
values for tests of `segcap convert omg-llava`; `write_tokenizer` an InternLM2-style
tokenizer.model + tokenizer_config.json (placeholder pieces at the top ids).
"""
from __future__ import annotations

import json
from pathlib import Path
import tempfile
from typing import Any

import torch

from .config import OMGLlavaConfig
from .convnext import ConvNeXtTrunk
from .decoder import OMGSegHead
from .tokenizer import load_tokenizer

Shapes = dict[str, tuple[int, ...]]
PEFT = 'llm.base_model.model.'
WORDS = ('user', 'assistant', 'Please', 'segment', 'the', 'cup', 'person', 'in', 'this',
         'image', 'It', 'is', 'a', 'red')
PLACEHOLDERS = ('<|plugin|>', '<|interpreter|>', '<|action_end|>', '<|action_start|>',
                '<|im_end|>', '<|im_start|>')
# open_clip keys outside the trunk (text tower, visual projection head): a few stand-ins
CLIP_EXTRA = {'visual.trunk.head.norm.weight': (-1,), 'visual.head.mlp.fc1.weight': (8, -1),
              'token_embedding.weight': (16, 8), 'positional_embedding': (4, 8),
              'text_projection': (8, 8), 'logit_scale': (), 'ln_final.weight': (8,),
              'transformer.resblocks.0.mlp.c_fc.weight': (16, 8)}


def official_manifest(config: OMGLlavaConfig, *, dot_default: bool = False) -> dict[str, Shapes]:
    """{file: {key: shape}} of the release: 'llm' (internlm2-chat-7b shards), 'pth' (the
    finetune checkpoint), 'omg_seg' (omg_seg_convl.pth state_dict), 'text' (one tensor),
    'clip' (open_clip checkpoint). dot_default: LoRA keys with peft's `.default.`."""
    c = config
    h, f, hd = c.llm_hidden, c.llm_ffn, c.llm_hidden // c.llm_heads
    qkv = (c.llm_heads + 2 * c.llm_kv_heads) * hd
    llm: Shapes = {'model.tok_embeddings.weight': (c.added_at, h), 'model.norm.weight': (h,),
                   'output.weight': (c.added_at, h)}
    lora: dict[str, tuple[int, int]] = {'output': (c.added_at, h)}
    for i in range(c.llm_layers):
        p = f'model.layers.{i}.'
        mods = {'attention.wqkv': (qkv, h), 'attention.wo': (h, c.llm_heads * hd),
                'feed_forward.w1': (f, h), 'feed_forward.w3': (f, h), 'feed_forward.w2': (h, f)}
        llm.update({f'{p}{m}.weight': s for m, s in mods.items()})
        llm.update({f'{p}attention_norm.weight': (h,), f'{p}ffn_norm.weight': (h,),
                    f'{p}attention.rotary_emb.inv_freq': (hd // 2,)})
        lora.update({p + m: s for m, s in mods.items()})
    rows = c.vocab_rows
    pth: Shapes = {PEFT + 'model.tok_embeddings.weight': (rows, h),
                   PEFT + 'output.base_layer.weight': (rows, h)}
    adapter = '.default' if dot_default else ''
    for module, (out, cin) in lora.items():
        out = rows if module == 'output' else out
        pth[f'{PEFT}{module}.lora_A{adapter}.weight'] = (c.lora_rank, cin)
        pth[f'{PEFT}{module}.lora_B{adapter}.weight'] = (out, c.lora_rank)
    pc, q = c.pixel_token_dim, c.prior_dim
    for name, (cin, cout) in {'projector.model.query_proj': (q, pc),
                              'projector.model.model.0': (pc, h),
                              'projector.model.model.2': (h, h),
                              'projector.model.model_feat.0': (pc + q, h),
                              'projector.model.model_feat.2': (h, h),
                              'projector_text2vision.model.0': (h, q),
                              'projector_text2vision.model.2': (q, q)}.items():
        pth.update({f'{name}.weight': (cout, cin), f'{name}.bias': (cout,)})
    pth['projector.model.seperate_embed.weight'] = (1, h)
    head = _shapes(OMGSegHead(config.head()))
    if c.seg_decoder_copy:
        pth.update({f'visual_encoder.panoptic_head.{k}': s for k, s in head.items()
                    if k.startswith(('transformer_decoder_llm.', 'mask_embed_llm.'))})
    omg = {f'panoptic_head.{k}': s for k, s in head.items()
           if not k.startswith(('transformer_decoder_llm.', 'mask_embed_llm.'))}
    clip = {f'visual.trunk.{k}': s for k, s in _shapes(ConvNeXtTrunk(config.trunk())).items()}
    clip.update({k: tuple(c.trunk_dims[-1] if d == -1 else d for d in s)
                 for k, s in CLIP_EXTRA.items()})
    return {'llm': llm, 'pth': pth, 'omg_seg': omg, 'clip': clip,
            'text': {'': (c.num_classes, c.text_templates, c.clip_dim)}}


def _shapes(module: torch.nn.Module) -> Shapes:
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _rand(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    fan_in = shape[-1] if len(shape) > 1 else 1
    return torch.randn(shape, generator=gen) / max(1.0, fan_in ** 0.5)


def write_release(directory: Path, config: OMGLlavaConfig, *, seed: int = 0,
                  shards: int = 2) -> dict[str, Path]:
    """Random files in the official layout; returns {'llm', 'pth', 'omg_seg', 'text',
    'clip'} paths. The tokenizer's vocabulary is config.added_at."""
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(seed)
    man = official_manifest(config)
    llm_dir = directory / 'internlm2-chat-7b'
    llm_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizer(llm_dir, vocab_size=config.added_at)
    keys = sorted(man['llm'])
    weight_map = {}
    for s in range(shards):
        name = f'model-{s + 1:05d}-of-{shards:05d}.safetensors'
        part = {k: _rand(man['llm'][k], gen) for k in keys[s::shards]}
        for k in part:
            if k.endswith(('norm.weight',)):
                part[k] = 1.0 + 0.1 * part[k]
        save_file(part, str(llm_dir / name))
        weight_map.update({k: name for k in part})
    (llm_dir / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
    (llm_dir / 'config.json').write_text(json.dumps(internlm2_config(config)))
    paths = {'llm': llm_dir, 'pth': directory / 'omg_llava_7b_finetune_8gpus.pth',
             'omg_seg': directory / 'omg_seg_convl.pth',
             'text': directory / 'convnext_large_d_320_CocoPanopticOVDataset.pth',
             'clip': directory / 'open_clip_model.safetensors'}
    torch.save({k: _rand(s, gen) for k, s in man['pth'].items()}, paths['pth'])
    torch.save({'state_dict': {k: _rand(s, gen) for k, s in man['omg_seg'].items()}},
               paths['omg_seg'])
    text = torch.nn.functional.normalize(_rand(man['text'][''], gen), dim=-1)
    torch.save(text, paths['text'])
    save_file({k: _rand(s, gen) for k, s in man['clip'].items()}, str(paths['clip']))
    return paths


def internlm2_config(config: OMGLlavaConfig) -> dict[str, Any]:
    """An InternLM2 config.json of the config's LLM sizes."""
    c = config
    return {'architectures': ['InternLM2ForCausalLM'], 'hidden_size': c.llm_hidden,
            'intermediate_size': c.llm_ffn, 'num_attention_heads': c.llm_heads,
            'num_key_value_heads': c.llm_kv_heads, 'num_hidden_layers': c.llm_layers,
            'vocab_size': c.added_at, 'rope_theta': c.rope_theta, 'rms_norm_eps': c.rms_eps,
            'max_position_embeddings': c.max_positions, 'bias': False, 'hidden_act': 'silu',
            'rope_scaling': ({'type': 'dynamic', 'factor': c.rope_scaling}
                             if c.rope_scaling else None),
            'bos_token_id': 1, 'eos_token_id': 2, 'pad_token_id': 2}


def _pieces(vocab_size: int) -> list[tuple[str, float, int]]:
    """(piece, score, type) in InternLM2's layout: specials, bytes, BPE pieces, control
    fillers up to vocab_size - 6, then the six placeholder pieces."""
    pieces = [('<unk>', 0.0, 2), ('<s>', 0.0, 3), ('</s>', 0.0, 3)]
    pieces += [(f'<0x{b:02X}>', 0.0, 6) for b in range(256)]
    normal: list[str] = sorted(set(''.join(WORDS)) | set('\n.▁'))
    for word in WORDS:
        for w in (word, '▁' + word):
            normal += [w[:n] for n in range(2, len(w) + 1) if w[:n] not in normal]
    pieces += [(p, -float(i), 1) for i, p in enumerate(normal)]
    fill = vocab_size - len(pieces) - len(PLACEHOLDERS)
    if fill < 0:
        raise ValueError(f'vocab_size {vocab_size} is below the {len(pieces) + 6} base pieces')
    pieces += [(f'<ctrl{i}>', 0.0, 3) for i in range(fill)]
    return pieces + [(f'[UNUSED_TOKEN_{141 + i}]', 0.0, 4) for i in range(len(PLACEHOLDERS))]


def write_tokenizer(directory: Path, *, vocab_size: int = 400) -> int:
    """tokenizer.model + tokenizer_config.json like internlm2-chat-7b's; returns the size."""
    from transformers.convert_slow_tokenizer import import_protobuf
    proto = import_protobuf().ModelProto()
    proto.trainer_spec.model_type = 2
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.normalizer_spec.name = 'identity'
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    for piece, score, kind in _pieces(vocab_size):
        proto.pieces.add(piece=piece, score=score, type=kind)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'tokenizer.model').write_bytes(proto.SerializeToString())
    n = len(proto.pieces)
    entries = {0: '<unk>', 1: '<s>', 2: '</s>'}
    entries.update({n - len(PLACEHOLDERS) + i: t for i, t in enumerate(PLACEHOLDERS)})
    decoder = {str(i): {'content': t, 'lstrip': False, 'normalized': False, 'rstrip': False,
                        'single_word': False, 'special': True} for i, t in entries.items()}
    (directory / 'tokenizer_config.json').write_text(json.dumps({
        'auto_map': {'AutoTokenizer': ['tokenization_internlm2.InternLM2Tokenizer', None]},
        'bos_token': '<s>', 'eos_token': '</s>', 'added_tokens_decoder': decoder}))
    return n


def tokenizer_for(config: OMGLlavaConfig) -> Any:
    """A synthetic tokenizer whose OMG tokens land at config.added_at (no download)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp), vocab_size=config.added_at)
        return load_tokenizer(tmp, added_at=config.added_at)

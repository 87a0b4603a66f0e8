"""The official OMG-LLaVA download -> one model directory this package loads.

Sources (flag names after the official files): the internlm2-chat-7b directory (safetensors
shards, config.json, tokenizer), the finetune .pth (trained embeddings / head, unmerged LoRA,
projectors, and in refseg / gcg the [SEG] decoder copy), omg_seg_convl.pth (the OMG-Seg head),
the CLIP text embeddings of the classes, and open_clip's convnext_large_d_320 checkpoint
(the trunk). Files are read with safetensors or torch.load(weights_only=True): no code runs.

Strict: every source key is mapped exactly once or dropped with a reason (DROPPED); an
unknown key, a missing target or a wrong shape stops with the key and both shapes. The LLM is
merged (fp32) and converted layer by layer and written in shards, so memory stays near one
layer plus one shard. Output: model-*.safetensors + model.safetensors.index.json,
config.json ({"family": "omg_llava", ...}), the tokenizer files, conversion_report.json.
"""
from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
import re
import shutil
from typing import Any, Callable, Iterable, Optional

import torch

from ros_segcap.core.files import atomic_write

from .config import OFFICIAL, OMGLlavaConfig
from .family import FORMAT, INDEX_FILE
from .llm_convert import _layer_plan, _sizes, merge_lora, peft_key, split_wqkv
from .model import build_meta
from .tokenizer import load_tokenizer

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
TOKENIZER_FILES = ('tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json')
DROPPED = {  # source -> [(key pattern, why)]
    'clip': [(r'visual\.trunk\.head\..*', 'timm classifier-head norm: OMG-LLaVA reads the four '
              'stage maps only'),
             (r'visual\.head\..*', 'open_clip image projection head: unused by OMG-LLaVA'),
             (r'(token_embedding|positional_embedding|text_projection|logit_scale|ln_final|'
              r'transformer|attn_mask)\b.*', 'CLIP text tower: the class embeddings come '
              'precomputed in the text embeddings file')],
    'llm': [(r'model\.layers\.\d+\.attention\.rotary_emb\.inv_freq', 'RoPE frequencies are '
             'recomputed from rope_theta'),
            (r'model\.tok_embeddings\.weight|output\.weight', 'replaced by the trained rows of '
             'the finetune checkpoint (base vocabulary + 4 OMG tokens)')],
}
SEG_COPY = ('visual_encoder.panoptic_head.transformer_decoder_llm.',
            'visual_encoder.panoptic_head.mask_embed_llm.')


class ConversionError(ValueError):
    """A source file does not fit: the message names the key (and both shapes)."""


@dataclass(frozen=True)
class Sources:
    llm: Path  # internlm2-chat-7b/
    pth: Path  # omg_llava_7b_finetune_8gpus.pth (or finetuned_refseg / finetuned_gcg)
    omg_seg: Path  # omg_seg_convl.pth
    text_embeds: Path  # convnext_large_d_320_CocoPanopticOVDataset.pth
    clip: Path  # open_clip convnext_large_d_320 checkpoint (.safetensors or .bin)


def _torch_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found')
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as exc:  # noqa: B902 - pickle refusals and broken zips alike
        raise ConversionError(f'{path}: not a plain tensor file ({str(exc)[:200]})') from None


def _state(obj: Any, path: Path, *, wrapped: bool = False) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and set(obj) == {'state_dict'}:
        obj = obj['state_dict']
    elif wrapped:
        raise ConversionError(f'{path}: expected {{"state_dict": ...}} (omg_seg_convl.pth)')
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f'{path}: expected a flat state dict of tensors')
    return obj


class Reader:
    """Lazy access to every source tensor under (source, key) names."""

    def __init__(self, src: Sources) -> None:
        from safetensors import safe_open
        index = src.llm / INDEX_FILE
        if not index.is_file():
            raise FileNotFoundError(f'{index} not found: pass the internlm2-chat-7b directory')
        weight_map = json.loads(index.read_text())['weight_map']
        self.handles = {n: safe_open(str(src.llm / n), framework='pt')
                        for n in sorted(set(weight_map.values()))}
        self.llm_map = weight_map
        self.pth = _state(_torch_file(src.pth), src.pth)
        self.omg = _state(_torch_file(src.omg_seg), src.omg_seg, wrapped=True)
        text = _torch_file(src.text_embeds)
        if not isinstance(text, torch.Tensor) or text.dim() != 3:
            raise ConversionError(f'{src.text_embeds}: expected one tensor [classes, templates, '
                                  f'dim], got {type(text).__name__}')
        self.text = text
        if src.clip.suffix == '.safetensors':
            handle = safe_open(str(src.clip), framework='pt')
            self.clip = {k: handle.get_tensor for k in handle.keys()}
        else:
            clip = _state(_torch_file(src.clip), src.clip)
            self.clip = {k: (lambda key, c=clip: c[key]) for k in clip}

    def llm(self, key: str) -> torch.Tensor:
        return self.handles[self.llm_map[key]].get_tensor(key)

    def clip_tensor(self, key: str) -> torch.Tensor:
        return self.clip[key](key)


def _dropped(source: str, key: str) -> Optional[str]:
    for pattern, why in DROPPED.get(source, ()):
        if re.fullmatch(pattern, key):
            return why
    return None


def derive_config(sizes: OMGLlavaConfig, reader: Reader, llm_config: dict, *,
                  lora_alpha: int) -> OMGLlavaConfig:
    """sizes, with what the files state: LLM sizes, vocabulary, LoRA rank, classes, copy."""
    s = _sizes(llm_config, None)
    ranks = {int(v.shape[0]) for k, v in reader.pth.items() if '.lora_A.' in peft_key(k) + '.'}
    if len(ranks) != 1:
        raise ConversionError(f'{len(ranks)} LoRA ranks in the finetune checkpoint: {ranks}')
    scaling = llm_config.get('rope_scaling') or {}
    k, p, c = reader.text.shape
    return sizes.replace(
        llm_hidden=s['hidden'], llm_layers=s['layers'], llm_heads=s['heads'],
        llm_kv_heads=s['kv_heads'], llm_ffn=s['ffn'], added_at=s['vocab'],
        rope_theta=float(llm_config['rope_theta']), rms_eps=float(llm_config['rms_norm_eps']),
        max_positions=int(llm_config['max_position_embeddings']),
        rope_scaling=float(scaling['factor']) if scaling else None, lora_rank=ranks.pop(),
        lora_alpha=lora_alpha, num_classes=k, text_templates=p, clip_dim=c,
        seg_decoder_copy=any(key.startswith(SEG_COPY) for key in reader.pth))


def vision_plan(reader: Reader) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(target -> (source, key) for every non-LLM tensor, dropped 'source:key' -> why)."""
    plan: dict[str, tuple[str, str]] = {'visual_encoder.class_embeds': ('text', '')}
    dropped: dict[str, str] = {}

    def put(target: str, source: str, key: str) -> None:
        if target in plan:
            raise ConversionError(f'{source}:{key} maps to {target}, already given by '
                                  f'{plan[target][0]}:{plan[target][1]}')
        plan[target] = (source, key)

    for key in reader.clip:
        why = _dropped('clip', key)
        if why:
            dropped[f'clip:{key}'] = why
        elif key.startswith('visual.trunk.'):
            put('visual_encoder.backbone.' + key[len('visual.trunk.'):], 'clip', key)
        else:
            raise ConversionError(f'clip:{key}: unknown open_clip key (not mapped, not dropped)')
    for key in reader.omg:
        if not key.startswith('panoptic_head.'):
            raise ConversionError(f'omg_seg:{key}: expected panoptic_head.* keys')
        put('visual_encoder.' + key, 'omg_seg', key)
    for key in reader.pth:
        if key.startswith(('projector.', 'projector_text2vision.') + SEG_COPY):
            put(key, 'pth', key)
        elif not key.startswith('llm.'):
            raise ConversionError(f'pth:{key}: unknown finetune key (not mapped, not dropped)')
    return plan, dropped


def check_llm_keys(reader: Reader, config: OMGLlavaConfig, s: dict) -> dict[str, str]:
    """Every base / trained LLM key is in the layer plans or dropped; returns dropped."""
    plans = [_layer_plan(i, s) for i in range(config.llm_layers)]
    base = {'model.norm.weight'}.union(*plans)
    dropped = {}
    for key in reader.llm_map:
        why = _dropped('llm', key)
        if why:
            dropped[f'llm:{key}'] = why
        elif key not in base:
            raise ConversionError(f'llm:{key}: unknown InternLM2 weight (not mapped, not '
                                  'dropped); is the LLM directory internlm2-chat-7b?')
    missing = sorted(base - set(reader.llm_map)) + [
        k for k in ('model.tok_embeddings.weight', 'output.weight') if k not in reader.llm_map]
    if missing:
        raise ConversionError(f'llm:{missing[0]}: missing from the LLM shards')
    modules = {k[:-len('.weight')] for k in base if k.endswith(
        ('wqkv.weight', 'wo.weight', 'w1.weight', 'w2.weight', 'w3.weight'))} | {'output'}
    allowed = {'model.tok_embeddings.weight', 'output.weight'} | {
        f'{m}.lora_{ab}.weight' for m in modules for ab in 'AB'}
    for key in reader.pth:
        if key.startswith('llm.') and peft_key(key) not in allowed:
            raise ConversionError(f'pth:{key}: not a trained LLM tensor of this InternLM2 '
                                  '(embeddings, output head or LoRA of wqkv/wo/w1-w3/output)')
    return dropped


def trained_for(reader: Reader, prefix: str, exact: Iterable[str] = ()) -> dict:
    """The finetune's LLM tensors of one layer (prefix) or of the named modules."""
    exact = tuple(exact)
    out = {}
    for key, tensor in reader.pth.items():
        if not key.startswith('llm.'):
            continue
        name = peft_key(key)
        if (prefix and name.startswith(prefix)) or name in exact or \
                any(name.startswith(e + '.lora_') for e in exact):
            out[key] = tensor
    return out


def convert_llm(reader: Reader, config: OMGLlavaConfig, s: dict, dtype: torch.dtype,
                emit: Callable[[str, torch.Tensor], None], tick: Callable[[], None]) -> None:
    """Merge the LoRA (fp32) and convert to Llama names, one layer at a time."""
    alpha, r = config.lora_alpha, config.lora_rank
    top = {k: reader.llm(k) for k in ('model.tok_embeddings.weight', 'output.weight',
                                      'model.norm.weight')}
    merged = merge_lora(top, trained_for(reader, '', ('model.tok_embeddings.weight', 'output',
                                                      'output.weight')), alpha=alpha, r=r)
    for src, dst in (('model.tok_embeddings.weight', 'model.embed_tokens.weight'),
                     ('output.weight', 'lm_head.weight'), ('model.norm.weight',
                                                           'model.norm.weight')):
        emit('llm.' + dst, merged[src].to(dtype))
    del top, merged
    tick()
    for i in range(config.llm_layers):
        plan = _layer_plan(i, s)
        base = {k: reader.llm(k) for k in plan}
        merged = merge_lora(base, trained_for(reader, f'model.layers.{i}.'), alpha=alpha, r=r)
        for key, (target, shape) in plan.items():
            tensor = merged[key]
            if tuple(tensor.shape) != shape:
                raise ConversionError(f'llm:{key}: shape {tuple(tensor.shape)}, expected {shape}')
            if isinstance(target, tuple):
                parts = split_wqkv(tensor, s['heads'], s['kv_heads'], s['head_dim'])
                for name, part in zip(target, parts):
                    emit('llm.' + name, part.to(dtype))
            else:
                emit('llm.' + target, tensor.to(dtype))
        del base, merged
        tick()


class ShardWriter:
    """Writes tensors into model-XXXXX.safetensors files of about shard_bytes each."""

    def __init__(self, out: Path, shard_bytes: int) -> None:
        self.out, self.limit = out, shard_bytes
        self.part: dict[str, torch.Tensor] = {}
        self.size, self.files, self.weight_map = 0, [], {}

    def add(self, key: str, tensor: torch.Tensor) -> None:
        if key in self.weight_map or key in self.part:
            raise ConversionError(f'{key} written twice')
        self.part[key] = tensor.contiguous()
        self.size += tensor.numel() * tensor.element_size()
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        from safetensors.torch import save_file
        if not self.part:
            return
        name = f'model-{len(self.files) + 1:05d}.safetensors'
        part = self.part
        atomic_write(self.out / name, lambda f: save_file(part, f, metadata={'format': 'pt'}))
        self.files.append(name)
        self.weight_map.update({k: name for k in self.part})
        self.part, self.size = {}, 0


def convert(src: Sources, out: Path, *, sizes: OMGLlavaConfig = OFFICIAL, dtype: str = 'bf16',
            lora_alpha: int = 256, shard_bytes: int = 2 << 30, progress: bool = True) -> dict:
    """Convert the official files into the model directory `out`; returns the report."""
    from tqdm import tqdm
    if dtype not in DTYPES:
        raise ConversionError(f'--dtype {dtype}: choose one of {", ".join(DTYPES)}')
    reader = Reader(src)
    llm_config = json.loads((src.llm / 'config.json').read_text())
    config = derive_config(sizes, reader, llm_config, lora_alpha=lora_alpha)
    s = _sizes(llm_config, config.vocab_rows)
    tokenizer = load_tokenizer(src.llm, added_at=config.added_at)
    expected = {k: tuple(v.shape) for k, v in build_meta(config, tokenizer).state_dict().items()}
    plan, dropped = vision_plan(reader)
    dropped.update(check_llm_keys(reader, config, s))
    missing = sorted(k for k in expected if k not in plan and not k.startswith('llm.'))
    if missing:
        raise ConversionError(f'{missing[0]}: no source key gives it ({len(missing)} missing; '
                              'is the .pth a finetune checkpoint with its projectors?)')
    out.mkdir(parents=True, exist_ok=True)
    writer, written = ShardWriter(out, shard_bytes), set()

    def emit(key: str, tensor: torch.Tensor) -> None:
        if key not in expected:
            raise ConversionError(f'{key}: not a tensor of the {config.name} model')
        if tuple(tensor.shape) != expected[key]:
            raise ConversionError(f'{key}: source shape {tuple(tensor.shape)}, model shape '
                                  f'{expected[key]}')
        writer.add(key, tensor)
        written.add(key)

    bar = tqdm(total=len(plan) + config.llm_layers + 1, unit='step', disable=not progress,
               desc='convert omg-llava')
    for target, (source, key) in sorted(plan.items()):
        tensor = {'clip': reader.clip_tensor, 'omg_seg': reader.omg.get,
                  'pth': reader.pth.get}.get(source, lambda _: reader.text)(key)
        emit(target, tensor.float())
        bar.update()
    convert_llm(reader, config, s, DTYPES[dtype], emit, bar.update)
    writer.flush()
    bar.close()
    left = sorted(set(expected) - written)
    if left:
        raise ConversionError(f'{left[0]}: not written ({len(left)} model tensors missing)')
    return _finish(src, out, config, writer, dropped, dtype)


def _finish(src: Sources, out: Path, config: OMGLlavaConfig, writer: ShardWriter,
            dropped: dict[str, str], dtype: str) -> dict:
    """Index, config.json, tokenizer files and the report."""
    total = sum((out / f).stat().st_size for f in writer.files)
    (out / INDEX_FILE).write_text(json.dumps(
        {'metadata': {'total_size': total}, 'weight_map': writer.weight_map}, indent=1))
    (out / 'config.json').write_text(json.dumps(
        {'family': 'omg_llava', 'format': FORMAT, 'trained': True, 'dtype': dtype,
         'config': config.to_dict()}, indent=1))
    for name in TOKENIZER_FILES:
        if (src.llm / name).is_file():
            shutil.copyfile(src.llm / name, out / name)
    report = {'sources': {k: str(v) for k, v in vars(src).items()},
              'dtype': {'llm': dtype, 'vision_and_projectors': 'fp32'},
              'lora': {'rank': config.lora_rank, 'alpha': config.lora_alpha,
                       'merged_in': 'fp32'},
              'tensors_written': len(writer.weight_map), 'shards': writer.files,
              'dropped': dropped, 'bytes': total}
    (out / 'conversion_report.json').write_text(json.dumps(report, indent=1))
    return report

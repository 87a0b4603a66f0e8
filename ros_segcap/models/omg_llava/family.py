"""The omg_llava family: the official OMG-LLaVA release, converted (`segcap convert omg-llava`).

What users load is a converted model DIRECTORY: config.json ({"family": "omg_llava", ...}),
sharded safetensors with model.safetensors.index.json, and the InternLM2 tokenizer files.
Registered names: `omg-llava-7b` (the official sizes, meta device only: a shape check) and
`omg-llava-tiny-random` (tiny random weights, for tests).

The loader builds the model on the meta device and assigns each shard's tensors in their
stored dtype (LLM bf16 / fp16, vision fp32), so RAM never holds an fp32 copy of the LLM.
"""
from __future__ import annotations

import json
from pathlib import Path
import tempfile
from typing import Any, Optional

import torch
from torch import nn

from ros_segcap.core.files import read_json_object
from ros_segcap.core.torch_engine import TorchEngine
from ros_segcap.models import Family

from .config import OFFICIAL, OMGLlavaConfig, TINY
from .model import build_llm, build_meta, OMGLlavaModel
from .template import chat_prompt
from .tokenizer import load_tokenizer

CONFIGS = {OFFICIAL.name: OFFICIAL, TINY.name: TINY}
META_ONLY = (OFFICIAL.name,)
INDEX_FILE = 'model.safetensors.index.json'
FORMAT = 1


def names() -> tuple[str, ...]:
    return tuple(CONFIGS)


def read_info(directory: Path) -> dict[str, Any]:
    """config.json of a converted directory; ValueError when it is not an omg_llava one."""
    path = directory / 'config.json'
    try:
        info = read_json_object(path)
    except ValueError as exc:
        raise ValueError(f'{path} {exc}') from None
    if info.get('family') != 'omg_llava' or \
            info.get('format') != FORMAT or not isinstance(info.get('config'), dict):
        raise ValueError(f'{path} is not an omg_llava model directory of format {FORMAT}; '
                         'make one with `segcap convert omg-llava`')
    return info


def load_directory(directory: str | Path, *, device: str | torch.device = 'cpu'
                   ) -> OMGLlavaModel:
    """A converted model directory, tensors assigned shard by shard (strict)."""
    from safetensors import safe_open
    directory = Path(directory)
    info = read_info(directory)
    config = OMGLlavaConfig.from_dict(info['config'])
    model = build_meta(config, load_tokenizer(directory, added_at=config.added_at))
    try:
        weight_map = json.loads((directory / INDEX_FILE).read_text())['weight_map']
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f'{directory / INDEX_FILE}: unreadable shard index ({exc})') from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weight_map))
    unknown = sorted(set(weight_map) - set(expected))
    if missing or unknown:
        raise ValueError(f'{directory}: the shards do not fit {config.name}: missing '
                         f'{missing[:3]} ({len(missing)}), unknown {unknown[:3]} ({len(unknown)})')
    dev = torch.device(device)
    for name in sorted(set(weight_map.values())):
        with safe_open(str(directory / name), framework='pt', device=str(dev)) as f:
            shard = {k: f.get_tensor(k) for k in f.keys()}
        for key, tensor in shard.items():
            if weight_map.get(key) != name or tensor.shape != expected[key].shape:
                raise ValueError(f'{directory / name}: {key} {tuple(tensor.shape)} does not '
                                 f'fit {tuple(expected[key].shape)} (or the index)')
        model.load_state_dict(shard, strict=False, assign=True)
        del shard
    _rebuild_buffers(model, dev)
    model.trained = bool(info.get('trained', True))
    return model.eval()


def _rebuild_buffers(model: OMGLlavaModel, device: torch.device) -> None:
    """Non-persistent buffers (RoPE frequencies) are computed, not stored."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    with torch.device(device):
        model.llm.model.rotary_emb = LlamaRotaryEmbedding(config=model.llm.config)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_meta]
    if left:
        raise ValueError(f'{len(left)} tensors were not loaded, e.g. {left[0]}')


def build_random(config: OMGLlavaConfig, *, device: str | torch.device = 'cpu',
                 tokenizer_dir: Optional[Path] = None) -> OMGLlavaModel:
    """Random weights of a small config, with the synthetic tokenizer (tests only)."""
    from .synthetic import write_tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        directory = tokenizer_dir or Path(tmp)
        if tokenizer_dir is None:
            write_tokenizer(directory)
        tokenizer = load_tokenizer(directory, added_at=config.added_at)
    torch.manual_seed(0)
    model = OMGLlavaModel(config, tokenizer, build_llm(config, 'cpu'))
    with torch.no_grad():
        embeds = torch.randn_like(model.visual_encoder.class_embeds)
        model.visual_encoder.class_embeds.copy_(nn.functional.normalize(embeds, dim=-1))
    model.trained = False
    return model.to(device).eval()


def build(name: str, *, pretrained: bool = True,
          device: str | torch.device = 'cpu') -> OMGLlavaModel:
    """A registered name: the official sizes only on the meta device; tiny random weights."""
    if name not in CONFIGS:
        raise KeyError(f'unknown model {name!r}; known: {", ".join(CONFIGS)}')
    config = CONFIGS[name]
    if torch.device(device).type == 'meta':
        from .synthetic import tokenizer_for
        return build_meta(config, tokenizer_for(config))
    if name in META_ONLY:
        raise ValueError(f'{name} is a shape check (meta device only): convert the official '
                         'release with `segcap convert omg-llava ... --out DIR` and load DIR')
    return build_random(config, device=device)


def load(name_or_dir: str, *, device: str | torch.device = 'cpu', allow_pickle: bool = False,
         decode_path: str = 'reference') -> OMGLlavaModel:
    """A converted directory (safetensors only: allow_pickle is never needed) or a name."""
    path = Path(name_or_dir)
    model = load_directory(path, device=device) if path.is_dir() else build(name_or_dir,
                                                                            device=device)
    prepare(model, decode_path=decode_path)
    return model


def prepare(model: OMGLlavaModel, *, decode_path: str = 'reference') -> None:
    """OMG-LLaVA decodes with the transformers Llama forward on the model's device (a GPU
    too); other decode paths are segcap-tiny's, and model.decode_note says so in one line
    (the runtime prints it)."""
    device = model.llm.get_input_embeddings().weight.device
    model.decode_note = '' if decode_path == 'reference' else (
        f'decode path {decode_path} is not used: omg-llava decodes with the transformers '
        f"forward on {device} (segcap-tiny's fast paths and CPU kernels do not apply)")


def torch_engine(model: OMGLlavaModel, device: str | torch.device = 'cpu',
                 reason: str = 'requested') -> TorchEngine:
    return TorchEngine(model, device, reason)


def tokenizer(config: OMGLlavaConfig) -> Any:
    from .synthetic import tokenizer_for
    return tokenizer_for(config)


def chat_template(config: OMGLlavaConfig) -> str:
    """internlm2_chat without a system block, '{question}' where the question goes."""
    return chat_prompt('{question}')


def weights_warning(name_or_dir: str) -> Optional[str]:
    path = Path(name_or_dir)
    if path.is_dir():
        return None if read_info(path).get('trained', True) else \
            f'{path} holds random weights (a synthetic conversion): answers are noise'
    if name_or_dir == TINY.name:
        return f'{TINY.name} has random weights: answers are noise'
    return None


FAMILY = Family(name='omg_llava', names=names, build=build, load=load, prepare=prepare,
                torch_engine=torch_engine, tokenizer=tokenizer, chat_template=chat_template,
                weights_warning=weights_warning)

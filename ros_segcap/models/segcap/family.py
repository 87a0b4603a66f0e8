"""The segcap family: EfficientNet-Lite0 / ConvNeXt vision, the OMG decoder, a Llama LLM."""
from __future__ import annotations

import torch

from ros_segcap.core.torch_engine import TorchEngine
from ros_segcap.core.tokens import IMAGE_TOKEN
from ros_segcap.models import Family

from .config import check_loadable, DEFAULT_DECODE_PATH, get_config, model_names, SegCapConfig
from .llm import load_tokenizer
from .model import build_meta_model, build_model, SegCapModel
from .weights import load_model, weights_warning


def load(name_or_dir: str, *, device: str | torch.device = 'cpu', allow_pickle: bool = False,
         decode_path: str = DEFAULT_DECODE_PATH) -> SegCapModel:
    """A registered name or model directory, weights loaded, LLM decoding on `decode_path`."""
    model = load_model(name_or_dir, device=device, allow_pickle=allow_pickle)
    prepare(model, decode_path=decode_path)
    return model


def prepare(model: SegCapModel, *, decode_path: str = DEFAULT_DECODE_PATH) -> None:
    """Decode the LLM's answers on `decode_path` (one of DECODE_PATHS)."""
    model.llm.set_decode_path(decode_path)


def build(name: str, *, pretrained: bool = True,
          device: str | torch.device = 'cpu') -> SegCapModel:
    """The registered architecture `name` with asset weights and untrained new parts.

    A meta-only name (omg-llava-7b) is built on the meta device only (shapes, no memory).
    """
    config = get_config(name)
    if torch.device(device).type == 'meta':
        return build_meta_model(config)
    check_loadable(name)
    return build_model(config, pretrained=pretrained, device=device)


def torch_engine(model: SegCapModel, device: str | torch.device = 'cpu',
                 reason: str = 'requested') -> TorchEngine:
    return TorchEngine(model, device, reason)


def chat_template(config: SegCapConfig) -> str:
    """The prompt text the LLM sees, with '{question}' where the question goes."""
    tokenizer = load_tokenizer(config)
    messages = [{'role': 'system', 'content': config.system_prompt},
                {'role': 'user', 'content': f'{IMAGE_TOKEN}\n{{question}}'}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


FAMILY = Family(name='segcap', names=model_names, build=build, load=load, prepare=prepare,
                torch_engine=torch_engine, tokenizer=load_tokenizer, chat_template=chat_template,
                weights_warning=weights_warning)

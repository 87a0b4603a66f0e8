"""LoRA on the LLM's linear layers (peft), applied in place so the model keeps its layout."""
from __future__ import annotations

from typing import Sequence

from torch import nn

LLM_LINEARS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')


def apply_lora(model: nn.Module, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               target_modules: Sequence[str] = LLM_LINEARS) -> None:
    """Inject LoRA adapters into model.llm.lm and record their settings in model.lora_info."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=list(target_modules), bias='none')
    inject_adapter_in_model(config, model.llm.lm)
    model.lora_info = dict(r=r, alpha=alpha, dropout=dropout,
                           target_modules=list(target_modules))


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if 'lora_' in n]


def set_lora_dropout(model: nn.Module, p: float) -> None:
    """Set the dropout rate of every LoRA adapter already in the model (e.g. loaded ones)."""
    for module in model.modules():
        drops = getattr(module, 'lora_dropout', None)
        if isinstance(drops, nn.ModuleDict):
            for key in list(drops.keys()):
                drops[key] = nn.Dropout(p=p) if p > 0 else nn.Identity()
    if getattr(model, 'lora_info', None) is not None:
        model.lora_info['dropout'] = p

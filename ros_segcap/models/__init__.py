"""Model families behind one protocol (ros_segcap.core.protocol.SegModel).

A family gives, for each of its registered model names: a builder, a weights loader, its
torch engine, its tokenizer and its chat template (`Family`). `family_of` finds the family
of a registered name or of a model directory (its config.json names the family; directories
without that key are segcap's). The Pipeline, the exporter and the node only ever see the
protocol; adding a family means adding a subpackage and one line to FAMILIES.
"""
from __future__ import annotations

from dataclasses import dataclass
import importlib
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ros_segcap.core.files import read_json_object

# family name -> module whose FAMILY attribute is its Family (imported on first use)
FAMILIES = {'segcap': 'ros_segcap.models.segcap.family',
            'omg_llava': 'ros_segcap.models.omg_llava.family'}
DEFAULT_FAMILY = 'segcap'


@dataclass(frozen=True)
class Family:
    """What the runtime needs of one model family."""

    name: str
    names: Callable[[], Sequence[str]]  # the registered model names
    build: Callable[..., Any]  # (name, *, pretrained=True, device='cpu') -> model
    load: Callable[..., Any]  # (name or directory, *, device, allow_pickle, decode_path)
    prepare: Callable[..., None]  # (model, *, decode_path): run options on a loaded model
    torch_engine: Callable[..., Any]  # (model, device, reason) -> core.protocol.Engine
    tokenizer: Callable[[Any], Any]  # (config) -> tokenizer with the family's added tokens
    chat_template: Callable[[Any], str]  # (config) -> prompt text with a '{question}' slot
    weights_warning: Callable[[str], Optional[str]]  # (name or dir) -> why answers are noise


def family(name: str) -> Family:
    """The Family called `name`; ValueError naming the known ones."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ValueError(f'unknown model family {name!r}; known: {", ".join(FAMILIES)}')
    return importlib.import_module(FAMILIES[name]).FAMILY


def model_names() -> list[str]:
    """Every registered model name, of every family."""
    return sorted(n for f in FAMILIES for n in family(f).names())


def family_of(name_or_dir: str) -> Family:
    """The family of a model directory (its config.json) or of a registered model name."""
    path = Path(name_or_dir)
    config = path / 'config.json'
    if config.is_file():
        try:
            info = read_json_object(config)
        except ValueError as exc:
            raise ValueError(f'{config} {exc}') from None
        return family(info.get('family', DEFAULT_FAMILY))
    for name in FAMILIES:
        if name_or_dir in family(name).names():
            return family(name)
    if path.is_dir():
        raise FileNotFoundError(f'{path} has no config.json: not a model directory')
    return family(DEFAULT_FAMILY)  # its loader says what is wrong with the name or path


def load_model(name_or_dir: str, **kwargs: Any) -> Any:
    """Load a registered model or a model directory with its family's loader."""
    return family_of(name_or_dir).load(name_or_dir, **kwargs)


def weights_warning(name_or_dir: str) -> Optional[str]:
    """One line for the user when a model's weights are not trained ones, else None."""
    try:
        return family_of(name_or_dir).weights_warning(name_or_dir)
    except (OSError, ValueError):
        return None  # the loader reports a broken model itself

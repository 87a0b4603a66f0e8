"""engines/manifest.json: which weights each engine file came from, and staleness checks.

One manifest per engines directory, one entry per model name:

    {"format": 1, "models": {"segcap-tiny": {
        "weights_sha256": ..., "spec_version": 2, "opset": 17, "versions": {...},
        "graphs": {"vision": {"onnx": "segcap-tiny.vision.onnx", "onnx_sha256": ...,
                              "inputs": [...], "outputs": [...],
                              "plans": {"<key>": {"file": ..., "precision": "fp16", ...}}},
                   "seg": {...}}}}}

An engine is used only when the loaded model's weights hash, the spec version and the file's
own sha256 all match the manifest; anything else is stale (`EngineCheck.ok` False, with the
reason and the command that rebuilds it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import json
import os
from pathlib import Path
import tempfile
from typing import Any, Optional

import torch

from ros_segcap.core.spec import SPEC_VERSION

MANIFEST_FILE = 'manifest.json'
FORMAT = 1
GRAPHS = ('vision', 'seg')
# The parts of the model that end up in the engines; the LLM and projectors stay in torch.
ENGINE_PREFIXES = ('backbone.', 'pixel_decoder.', 'decoder.')
# Config fields that change the graphs' shapes or arithmetic.
GRAPH_CONFIG_KEYS = ('image_size', 'backbone', 'backbone_channels', 'shuffle', 'dim',
                     'num_queries', 'class_names', 'decoder_layers', 'num_heads', 'ffn_dim',
                     'mask_stride')


def weights_hash(model: Any) -> str:
    """sha256 of the engine parts' state tensors (name, dtype, shape, bytes) and config."""
    h = hashlib.sha256()
    cfg = model.config.to_dict()
    h.update(json.dumps({k: cfg[k] for k in GRAPH_CONFIG_KEYS}, sort_keys=True).encode())
    state = model.state_dict()
    for name in sorted(state):
        if not name.startswith(ENGINE_PREFIXES) or name.endswith('num_batches_tracked'):
            continue
        t = state[name].detach().to('cpu').contiguous()
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def export_command(model_name: str, out: Path, tensorrt: bool = False) -> str:
    """The command that (re)builds the engines, for error messages."""
    flag = ' --tensorrt' if tensorrt else ''
    return f'segcap export --model {model_name} --out {out}{flag}'


def read_manifest(engines_dir: Path) -> dict[str, Any]:
    """The manifest of a directory ({'format', 'models'}; empty when there is none)."""
    path = Path(engines_dir) / MANIFEST_FILE
    if not path.is_file():
        return {'format': FORMAT, 'models': {}}
    data = json.loads(path.read_text())
    if data.get('format') != FORMAT:
        raise ValueError(f'{path} has manifest format {data.get("format")}, this version '
                         f'reads {FORMAT}; delete it and run segcap export again')
    return data


def write_entry(engines_dir: Path, name: str, entry: dict[str, Any]) -> Path:
    """Replace one model's entry (atomically rewrites manifest.json)."""
    engines_dir = Path(engines_dir)
    data = read_manifest(engines_dir)
    data['models'][name] = entry
    path = engines_dir / MANIFEST_FILE
    fd, tmp = tempfile.mkstemp(prefix='.manifest.', dir=engines_dir)
    with os.fdopen(fd, 'w') as f:
        f.write(json.dumps(data, indent=2) + '\n')
    os.replace(tmp, path)
    return path


@dataclass
class EngineCheck:
    """Whether a model's engines of one kind ('onnx' or 'tensorrt') may be used."""

    ok: bool
    reason: str  # why not (or a one-line summary when ok)
    files: dict[str, Path] = field(default_factory=dict)  # graph -> file
    entry: Optional[dict[str, Any]] = None


def check_engines(engines_dir: Path, model: Any, model_arg: str, *, kind: str = 'onnx',
                  plan_key: Optional[str] = None, digest: Optional[str] = None) -> EngineCheck:
    """Check the manifest entry and files of `model` in `engines_dir`.

    kind 'tensorrt' needs plan_key (see tensorrt_build.plan_key). digest: the model's
    weights_hash when already computed. The reason names the fix.
    """
    engines_dir = Path(engines_dir)
    fix = export_command(model_arg, engines_dir, kind == 'tensorrt')
    name = model.config.name
    try:
        entry = read_manifest(engines_dir)['models'].get(name)
    except (ValueError, json.JSONDecodeError) as exc:
        return EngineCheck(False, f'unreadable {engines_dir / MANIFEST_FILE} ({exc}); run: {fix}')
    if entry is None:
        return EngineCheck(False, f'no {kind} engines for model {name} in {engines_dir}; '
                                  f'build them: {fix}')
    digest = digest or weights_hash(model)
    if entry.get('spec_version') != SPEC_VERSION:
        return EngineCheck(False, f'engines of {name} in {engines_dir} use engine spec '
                                  f'v{entry.get("spec_version")}, this code needs '
                                  f'v{SPEC_VERSION}; rebuild: {fix}', entry=entry)
    if entry.get('weights_sha256') != digest:
        return EngineCheck(False, f'stale engines: {engines_dir} holds {name} exported from '
                                  f'weights {str(entry.get("weights_sha256"))[:12]} '
                                  f'({entry.get("created", "?")}), the loaded model has '
                                  f'{digest[:12]}; rebuild: {fix}', entry=entry)
    files = {}
    for graph in GRAPHS:
        g = entry['graphs'][graph]
        if kind == 'onnx':
            rec = {'file': g['onnx'], 'sha256': g['onnx_sha256']}
        else:
            rec = g.get('plans', {}).get(plan_key or '')
            if rec is None:
                return EngineCheck(False, f'no TensorRT plan of {name}/{graph} for {plan_key} '
                                          f'in {engines_dir}; build it: {fix}', entry=entry)
        path = engines_dir / rec['file']
        if not path.is_file():
            return EngineCheck(False, f'{path} is listed in the manifest but missing; '
                                      f'rebuild: {fix}', entry=entry)
        if file_sha256(path) != rec['sha256']:
            return EngineCheck(False, f'{path} does not match its manifest hash (changed '
                                      f'after export); rebuild: {fix}', entry=entry)
        files[graph] = path
    return EngineCheck(True, f'{kind} engines of {name} in {engines_dir} match weights '
                             f'{digest[:12]}', files, entry)

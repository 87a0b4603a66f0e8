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
from pathlib import Path
from typing import Any, Optional

import torch

from ros_segcap.core.files import atomic_write, read_json_object
from ros_segcap.core.spec import SPEC_VERSION


MANIFEST_FILE = 'manifest.json'
FORMAT = 1
GRAPHS = ('vision', 'seg')
# The parts of the model that end up in the engines; the LLM and projectors stay in torch.
ENGINE_PREFIXES = ('backbone.', 'pixel_decoder.', 'decoder.', 'visual_encoder.')
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
    """The manifest of a directory ({'format', 'models'}; empty when there is none).

    ValueError (one line, naming the file) when it is not JSON or not shaped as above; the
    entries themselves are checked by check_entry when they are used.
    """
    path = Path(engines_dir) / MANIFEST_FILE
    try:
        return _parse(path)
    except ValueError as exc:
        raise ValueError(f'{path}: {exc}; delete it and run segcap export again') from None


def _parse(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {'format': FORMAT, 'models': {}}
    data = read_json_object(path)
    if data.get('format') != FORMAT:
        raise ValueError(f'manifest format {data.get("format")!r}, this version reads {FORMAT}')
    if not isinstance(data.get('models'), dict):
        raise ValueError('no "models" object')
    return data


def _need(value: Any, kind: type, where: str) -> None:
    if value is None:
        raise ValueError(f'{where} is missing')
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {dict: 'an object', str: 'a string', int: 'an integer'}
        raise ValueError(f'{where} must be {names[kind]}, not {type(value).__name__}')


def check_entry(entry: Any) -> None:
    """ValueError naming the first field of a manifest entry that is missing or mistyped."""
    _need(entry, dict, 'the entry')
    _need(entry.get('weights_sha256'), str, 'weights_sha256')
    _need(entry.get('spec_version'), int, 'spec_version')
    _need(entry.get('graphs'), dict, 'graphs')
    for graph in GRAPHS:
        rec = entry['graphs'].get(graph)
        _need(rec, dict, f'graphs.{graph}')
        for key in ('onnx', 'onnx_sha256'):
            _need(rec.get(key), str, f'graphs.{graph}.{key}')
        _need(rec.get('plans', {}), dict, f'graphs.{graph}.plans')
        for key, plan in rec.get('plans', {}).items():
            _need(plan, dict, f'graphs.{graph}.plans.{key}')
            for field_ in ('file', 'sha256', 'precision'):
                _need(plan.get(field_), str, f'graphs.{graph}.plans.{key}.{field_}')


def engine_file(engines_dir: Path, name: str) -> Path:
    """The file a manifest names, resolved (symlinks too); ValueError if outside the folder."""
    root = Path(engines_dir).resolve()
    path = (root / name).resolve()
    if path == root or not path.is_relative_to(root):
        raise ValueError(f'the manifest names {name!r}, which resolves to {path}, outside '
                         f'{engines_dir}')
    return path


def write_entry(engines_dir: Path, name: str, entry: dict[str, Any]) -> Path:
    """Replace one model's entry (atomically rewrites manifest.json, mode from the umask)."""
    engines_dir = Path(engines_dir)
    data = read_manifest(engines_dir)
    data['models'][name] = entry
    path = engines_dir / MANIFEST_FILE
    atomic_write(path, lambda f: Path(f).write_text(json.dumps(data, indent=2) + '\n'))
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
        entry = _parse(engines_dir / MANIFEST_FILE)['models'].get(name)
        if entry is not None:
            check_entry(entry)
    except ValueError as exc:
        return EngineCheck(False, f'broken {engines_dir / MANIFEST_FILE}: {exc}; rebuild: '
                                  f'{fix}')
    if entry is None:
        return EngineCheck(False, f'no {kind} engines for model {name} in {engines_dir}; '
                                  f'build them: {fix}')
    digest = digest or weights_hash(model)
    if entry['spec_version'] != SPEC_VERSION:
        return EngineCheck(False, f'engines of {name} in {engines_dir} use engine spec '
                                  f'v{entry["spec_version"]}, this code needs '
                                  f'v{SPEC_VERSION}; rebuild: {fix}', entry=entry)
    if entry['weights_sha256'] != digest:
        return EngineCheck(False, f'stale engines: {engines_dir} holds {name} exported from '
                                  f'weights {entry["weights_sha256"][:12]} '
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
        try:
            path = engine_file(engines_dir, rec['file'])
        except ValueError as exc:
            return EngineCheck(False, f'refused: {exc}; rebuild: {fix}', entry=entry)
        if not path.is_file():
            return EngineCheck(False, f'{engines_dir / rec["file"]} is listed in the manifest '
                                      f'but missing; rebuild: {fix}', entry=entry)
        if file_sha256(path) != rec['sha256']:
            return EngineCheck(False, f'{path} does not match its manifest hash (changed '
                                      f'after export); rebuild: {fix}', entry=entry)
        files[graph] = path
    return EngineCheck(True, f'{kind} engines of {name} in {engines_dir} match weights '
                             f'{digest[:12]}', files, entry)

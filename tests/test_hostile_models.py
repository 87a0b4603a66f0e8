"""Hostile model and engine folders: each damage is refused with one line that names it.

MODEL_ROWS damage a copy of a valid tiny-random model directory (or name a model that must
not be loaded); ENGINE_ROWS damage a copy of a valid engines folder. A named backend must
refuse a damaged folder with one line, and `auto` must fall back to torch saying why.
"""
from __future__ import annotations

import json
from pathlib import Path
import re
import shutil
from typing import Callable, Optional

import pytest
import torch
from safetensors.torch import load_file, save_file

from engines_util import copy_engines, exported
from ros_segcap.backends.base import EngineError
from ros_segcap.backends.manifest import file_sha256, MANIFEST_FILE
from ros_segcap.core.types import ModelError
from ros_segcap.models.segcap.weights import CONFIG_FILE, save_model, WEIGHTS_FILE

pytestmark = pytest.mark.usefixtures('cached_tokenizer')

ONE_LINE_ERRORS = (ValueError, EngineError, ModelError, FileNotFoundError)


# ----- damages to a model directory (each returns what to load, None = the directory) -----

def _edit_json(d: Path, **changes) -> None:
    info = json.loads((d / CONFIG_FILE).read_text())
    info['config'].update(changes)
    (d / CONFIG_FILE).write_text(json.dumps(info))


def _write(text: str) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        (d / CONFIG_FILE).write_text(text)
    return damage


def _config(**changes) -> Callable[[Path], None]:
    return lambda d: _edit_json(d, **changes)


def _tensors(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        tensors = load_file(str(d / WEIGHTS_FILE))
        edit(tensors)
        save_file(tensors, str(d / WEIGHTS_FILE))
    return damage


def _truncate(d: Path) -> None:
    data = (d / WEIGHTS_FILE).read_bytes()
    (d / WEIGHTS_FILE).write_bytes(data[:len(data) // 2])


def _bad_header(d: Path) -> None:
    data = bytearray((d / WEIGHTS_FILE).read_bytes())
    size = int.from_bytes(data[:8], 'little')
    data[8:8 + size] = b'{' * size  # same length, not JSON
    (d / WEIGHTS_FILE).write_bytes(bytes(data))


def _to_pickle(d: Path) -> None:
    torch.save(load_file(str(d / WEIGHTS_FILE)), d / 'model.pt')
    (d / WEIGHTS_FILE).unlink()


MODEL_ROWS = [
    ('config not JSON', _write('{"config": '), 'config.json is not readable JSON'),
    ('config a JSON list', _write('[1, 2]'), 'config.json must hold a JSON object'),
    ('unknown key', _config(colour_mode='hsv'), r"unknown config keys \['colour_mode'\]"),
    ('image_size 100000', _config(image_size=100000), r'image_size=100000: .*in 64\.\.2048'),
    ('image_size -5', _config(image_size=-5), r'image_size=-5: .*in 64\.\.2048'),
    ('image_size 100', _config(image_size=100), 'image_size=100: .*multiple of 64'),
    ('num_queries 10**7', _config(num_queries=10 ** 7), r'num_queries=10000000: .*1\.\.1024'),
    ('image_size a string', _config(image_size='512'), "image_size='512': must be an integer"),
    ('huge random LLM', _config(llm_config={'hidden_size': 10 ** 6}),
     'llm_config.hidden_size=1000000'),
    ('name with a path', _config(name='../../x'), "name='../../x'"),
    ('missing tensor', _tensors(lambda t: t.pop('decoder.class_head.bias')),
     r"1 missing tensors \['decoder.class_head.bias'\]"),
    ('extra tensor', _tensors(lambda t: t.update({'decoder.spare.weight': torch.zeros(2)})),
     r"unknown keys \['decoder.spare.weight'\]"),
    ('wrong shape', _tensors(lambda t: t.update({'decoder.class_head.bias': torch.zeros(3)})),
     r'decoder.class_head.bias: stored shape \(3,\)'),
    ('truncated safetensors', _truncate, 'model.safetensors is not a readable safetensors'),
    ('bad safetensors header', _bad_header, 'model.safetensors is not a readable safetensors'),
    ('pickle, allow_pickle=False', _to_pickle, 'model.pt is a pickle file'),
    ('omg-llava-7b by name', lambda d: 'omg-llava-7b', 'omg-llava-7b is a shape check'),
]


@pytest.fixture(scope='module')
def model_dir(tiny_model, tmp_path_factory) -> Path:
    return save_model(tiny_model, tmp_path_factory.mktemp('hostile') / 'model')


def _assert_one_line(exc: BaseException, message: str) -> None:
    text = str(exc)
    assert '\n' not in text, f'not one line: {text!r}'
    assert re.search(message, text), f'{message!r} not in {text!r}'


@pytest.mark.parametrize('damage, message', [r[1:] for r in MODEL_ROWS],
                         ids=[r[0] for r in MODEL_ROWS])
def test_hostile_model(model_dir: Path, tmp_path: Path, damage, message: str) -> None:
    from ros_segcap.models import load_model

    d = Path(shutil.copytree(model_dir, tmp_path / 'model'))
    target: Optional[str] = damage(d)
    with pytest.raises(ONE_LINE_ERRORS) as info:
        load_model(target or str(d))
    _assert_one_line(info.value, message)


# ----- damages to an engines folder --------------------------------------------------------

def _manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST_FILE).read_text())


def _entry_edit(edit: Callable[[dict, Path], None]) -> Callable[[Path], None]:
    def damage(d: Path) -> None:
        data = _manifest(d)
        edit(data['models']['tiny-random'], d)
        (d / MANIFEST_FILE).write_text(json.dumps(data))
    return damage


def _vision_file(d: Path, name: str, target: Path) -> None:
    """Point the vision graph at `name` with the hash of `target` (so only the path is bad)."""
    def edit(entry: dict, _: Path) -> None:
        entry['graphs']['vision'].update(onnx=name, onnx_sha256=file_sha256(target))
    _entry_edit(edit)(d)


def _outside(d: Path) -> None:
    secret = d.parent / 'secret.onnx'
    secret.write_bytes((d / _manifest(d)['models']['tiny-random']['graphs']['vision']['onnx'])
                       .read_bytes())  # a good graph, but not this folder's
    _vision_file(d, '../secret.onnx', secret)


def _etc_hostname(d: Path) -> None:
    hostname = (d / '../../etc/hostname').resolve()
    _vision_file(d, '../../etc/hostname', hostname if hostname.is_file() else Path(__file__))


def _symlink_out(d: Path) -> None:
    secret = d.parent / 'secret.onnx'
    _outside(d)
    (d / 'link.onnx').symlink_to(secret)
    _vision_file(d, 'link.onnx', secret)


def _corrupt_onnx(d: Path) -> None:
    name = _manifest(d)['models']['tiny-random']['graphs']['vision']['onnx']
    (d / name).write_bytes(b'not an onnx graph' * 64)
    _vision_file(d, name, d / name)


ENGINE_ROWS = [
    ('manifest a JSON list', lambda d: (d / MANIFEST_FILE).write_text('[]'),
     'manifest.json: must hold a JSON object, not a list'),
    ('manifest models a list', lambda d: (d / MANIFEST_FILE).write_text(
        '{"format": 1, "models": []}'), 'manifest.json: no "models" object'),
    ("missing 'graphs'", _entry_edit(lambda e, d: e.pop('graphs')), 'graphs is missing'),
    ('wrong type', _entry_edit(lambda e, d: e['graphs']['seg'].update(onnx=7)),
     'graphs.seg.onnx must be a string, not int'),
    ('path outside the folder', _outside,
     r"'\.\./secret\.onnx', which resolves to .*secret\.onnx, outside"),
    ('../../etc/hostname', _etc_hostname,
     r"'\.\./\.\./etc/hostname', which resolves to .*, outside"),
    ('symlink out of the folder', _symlink_out,
     r"'link\.onnx', which resolves to .*secret\.onnx, outside"),
    ('corrupt ONNX, hash rewritten', _corrupt_onnx, 'onnxruntime cannot load .*INVALID_PROTOBUF'),
    ('stale hash', _entry_edit(lambda e, d: e.update(weights_sha256='0' * 64)),
     'stale engines: .* exported from weights 000000000000'),
]


@pytest.fixture(scope='module')
def engines(tiny_model) -> Path:
    return exported(tiny_model)


@pytest.mark.parametrize('damage, message', [r[1:] for r in ENGINE_ROWS],
                         ids=[r[0] for r in ENGINE_ROWS])
def test_hostile_engines(tiny_model, engines: Path, tmp_path: Path, damage,
                         message: str) -> None:
    from ros_segcap.backends.select import open_engine
    from ros_segcap.core.torch_engine import TorchEngine

    d = copy_engines(engines, tmp_path / 'engines')
    damage(d)
    said: list[str] = []

    def open_(backend: str):
        return open_engine(tiny_model, backend, directory=d, say=said.append,
                           torch_engine=lambda why: TorchEngine(tiny_model, 'cpu', why))

    with pytest.raises(EngineError) as info:
        open_('onnxruntime')
    _assert_one_line(info.value, message)
    engine = open_('auto')
    assert engine.backend == 'torch'
    assert re.search('not onnxruntime: .*' + message, engine.reason), engine.reason
    assert len(said) == 1 and said[0].startswith(f'segcap backend: torch ({engine.reason})')

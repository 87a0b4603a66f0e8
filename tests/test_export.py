"""Export: ONNX files (opset, checker, dynamic queries), manifest, staleness, FLOPs, CLI."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
import torch

from engines_util import copy_engines, exported
from ros_segcap.core.spec import QUERY_DIM, SPEC_VERSION
from ros_segcap.backends.manifest import check_engines, MANIFEST_FILE, weights_hash


@pytest.fixture(scope='module')
def engines_dir(tiny_model) -> Path:
    return exported(tiny_model)


def _entry(directory: Path) -> dict:
    return json.loads((directory / MANIFEST_FILE).read_text())['models']['tiny-random']


def _edit_entry(directory: Path, **changes) -> None:
    path = directory / MANIFEST_FILE
    data = json.loads(path.read_text())
    data['models']['tiny-random'].update(changes)
    path.write_text(json.dumps(data))


def test_onnx_files_opset_checker_dynamic_queries(engines_dir):
    entry = _entry(engines_dir)
    for graph in ('vision', 'seg'):
        proto = onnx.load(str(engines_dir / entry['graphs'][graph]['onnx']))
        onnx.checker.check_model(proto, full_check=True)
        opset = next(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx'))
        assert opset >= 17
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta['weights_sha256'] == entry['weights_sha256'] and meta['graph'] == graph
        bool_eye = [n for n in proto.graph.node if n.op_type == 'EyeLike'
                    and any(a.name == 'dtype' and a.i == onnx.TensorProto.BOOL
                            for a in n.attribute)]
        assert not bool_eye, 'onnxruntime has no bool EyeLike kernel'
    seg = onnx.load(str(engines_dir / entry['graphs']['seg']['onnx']))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in seg.graph.input}
    assert dims['query_feat'][1] == QUERY_DIM and dims['restrict'][1] == QUERY_DIM
    vision = onnx.load(str(engines_dir / entry['graphs']['vision']['onnx']))
    ops = {n.op_type for n in vision.graph.node}
    assert 'Shape' not in ops, 'shapes are folded'
    assert not ops & {'Pad', 'Einsum', 'IsNaN'}, 'fused pads, MatMul heads, no NaN guard'


def test_manifest_records_everything(engines_dir, tiny_model):
    entry = _entry(engines_dir)
    assert entry['weights_sha256'] == weights_hash(tiny_model)
    assert entry['spec_version'] == SPEC_VERSION and entry['opset'] >= 17
    assert {'torch', 'onnx', 'onnxruntime', 'tensorrt'} <= set(entry['versions'])
    vision = entry['graphs']['vision']
    assert vision['inputs'][0] == {'name': 'image', 'dtype': 'float32',
                                   'shape': [1, 3, 128, 128]}
    assert vision['gflops'] > 0 and len(vision['onnx_sha256']) == 64
    seg = entry['graphs']['seg']
    assert seg['inputs'][0]['shape'][1] == QUERY_DIM
    for graph in (vision, seg):
        assert graph['parity_onnxruntime']['ok']
        assert graph['parity_onnxruntime']['mask_iou'] >= 0.99
    assert check_engines(engines_dir, tiny_model, 'tiny-random').ok


def test_weights_hash_follows_engine_weights_only(tiny_model):
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    fake = SimpleNamespace(config=tiny_model.config, state_dict=lambda: state)
    h0 = weights_hash(fake)
    assert h0 == weights_hash(tiny_model)
    key = next(k for k in state if k.startswith('decoder.'))
    original = state[key]
    state[key] = original + 1e-3
    assert weights_hash(fake) != h0
    state[key] = original
    llm_key = next(k for k in state if k.startswith('llm.'))
    state[llm_key] = state[llm_key] + 1.0  # the LLM is not in the engines
    assert weights_hash(fake) == h0
    fake2 = SimpleNamespace(config=tiny_model.config.replace(image_size=256),
                            state_dict=lambda: state)
    assert weights_hash(fake2) != weights_hash(fake)


@pytest.mark.parametrize('tamper, message', [
    ('weights', 'stale engines: .* exported from weights 000000000000'),
    ('spec', 'engine spec v0, this code needs'),
    ('file', 'does not match its manifest hash'),
    ('missing', 'is listed in the manifest but missing'),
])
def test_stale_engines_are_refused(tiny_model, engines_dir, tmp_path, tamper, message):
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    d = copy_engines(engines_dir, tmp_path / 'engines')
    seg_file = d / _entry(d)['graphs']['seg']['onnx']
    if tamper == 'weights':
        _edit_entry(d, weights_sha256='0' * 64)
    elif tamper == 'spec':
        _edit_entry(d, spec_version=0)
    elif tamper == 'file':
        seg_file.write_bytes(seg_file.read_bytes() + b'\0')
    else:
        seg_file.unlink()
    check = check_engines(d, tiny_model, 'tiny-random')
    assert not check.ok
    cfg = PipelineConfig(model='tiny-random', backend='onnxruntime', engines_dir=str(d))
    with pytest.raises(ValueError, match=message) as info:
        open_pipeline(cfg, model=tiny_model)
    assert f'segcap export --model tiny-random --out {d}' in str(info.value)


def test_vision_flops_match_the_torch_convs(engines_dir, tiny_model):
    """Conv FLOPs counted from the ONNX graph equal the torch modules' own count."""
    from ros_segcap.models.segcap.graphs import VisionGraph
    from ros_segcap.export.flops import count_flops

    flops = count_flops(engines_dir / _entry(engines_dir)['graphs']['vision']['onnx'])
    expected = []

    def hook(mod, inp, out):
        expected.append(2 * out.numel() * mod.weight[0].numel())

    handles = [m.register_forward_hook(hook) for m in tiny_model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            VisionGraph(tiny_model)(torch.zeros(1, 3, 128, 128))
    finally:
        for h in handles:
            h.remove()
    assert flops['Conv'] == sum(expected)
    assert flops.get('MatMul', 0) + flops.get('Gemm', 0) > 0


def test_export_cli_usage_and_check(tiny_model, engines_dir, tmp_path, capsys):
    from ros_segcap.cli import main
    from ros_segcap.models.segcap.weights import save_model

    assert main(['export', '--model', 'tiny-random', '--out', str(tmp_path), '--fp16']) == 2
    assert '--fp16 applies to TensorRT plans; add --tensorrt' in capsys.readouterr().err
    assert main(['export', '--model', 'tiny-random', '--out', str(tmp_path), '--opset',
                 '13']) == 2
    model_dir = save_model(tiny_model, tmp_path / 'model')
    assert main(['export', '--model', str(model_dir), '--out', str(engines_dir),
                 '--check']) == 0
    assert 'fresh: onnx engines of tiny-random' in capsys.readouterr().out
    assert main(['export', '--model', str(model_dir), '--out', str(tmp_path / 'none'),
                 '--check']) == 1
    assert 'NOT usable: no onnx engines' in capsys.readouterr().out


@pytest.mark.gpu
def test_tensorrt_build_names_and_progress(tiny_model, tmp_path, capsys):
    """Plan names carry weights hash, TensorRT version and GPU; the timing cache is kept."""
    from ros_segcap.backends.tensorrt_backend import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f'TensorRT test: {why}')
    from ros_segcap.export.build import export_engines
    from ros_segcap.export.tensorrt_build import plan_key, TIMING_CACHE, tensorrt_version

    entry = export_engines(tiny_model, tmp_path, tensorrt=True, echo=print)
    plan = entry['graphs']['seg']['plans'][plan_key()]
    assert f'trt{tensorrt_version()}' in plan['file'] and plan['profile']['query_feat'][0][1] == 1
    assert (tmp_path / TIMING_CACHE).is_file()
    assert 'building TensorRT' in capsys.readouterr().out
    assert check_engines(tmp_path, tiny_model, 'tiny-random', kind='tensorrt',
                         plan_key=plan_key()).ok


class _Network:
    """A parsed network: only its input names."""

    def __init__(self) -> None:
        self.inputs: list[str] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> SimpleNamespace:
        return SimpleNamespace(name=self.inputs[i])


class _FakeTensorRT:
    """Just enough of the tensorrt module for build_plan's own logic (no GPU here)."""

    __version__ = '10.3.0'

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class MemoryPoolType:
        WORKSPACE = 'workspace'

    class BuilderFlag:
        FP16 = 'fp16'

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            self.network.inputs = [i.name for i in onnx.load(path).graph.input]
            return True

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> '_Network':
            return _Network()

        def create_builder_config(self):
            cfg = SimpleNamespace(flags=[], profiles=[], progress_monitor=None, cache=None)
            cfg.set_memory_pool_limit = lambda pool, size: None
            cfg.set_flag = cfg.flags.append
            cfg.create_timing_cache = lambda data: SimpleNamespace(serialize=lambda: b'CACHE')
            cfg.set_timing_cache = lambda cache, ignore_mismatch: setattr(cfg, 'cache', cache)
            cfg.get_timing_cache = lambda: cfg.cache
            cfg.add_optimization_profile = cfg.profiles.append
            return cfg

        def create_optimization_profile(self):
            shapes = {}
            return SimpleNamespace(shapes=shapes, set_shape=lambda n, *s: shapes.update({n: s}))

        def build_serialized_network(self, network, config):
            config.progress_monitor.phase_start('Building engine', None, 3)
            return b'PLAN'


def test_tensorrt_build_logic_with_a_stand_in(engines_dir, tiny_model, tmp_path, monkeypatch):
    """Profile over the query dim, fp16 flag, timing cache, file name, progress lines."""
    import sys

    from ros_segcap.core.spec import graph_specs
    from ros_segcap.export import tensorrt_build as tb

    monkeypatch.setitem(sys.modules, 'tensorrt', _FakeTensorRT())
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=0: 'NVIDIA Orin (nvgpu)')
    name = tb.plan_name('tiny-random', 'seg', 'ab' * 32, 'fp16')
    assert name == 'tiny-random.seg.abababababab.trt10.3.0.nvidia-orin-nvgpu.fp16.plan'
    assert tb.plan_key() == 'nvidia-orin-nvgpu-trt10.3.0'
    lines = []
    onnx_file = engines_dir / _entry(engines_dir)['graphs']['seg']['onnx']
    info = tb.build_plan(onnx_file, tmp_path / name, graph_specs(tiny_model.config)['seg'],
                         fp16=True, timing_cache=tmp_path / 'cache',
                         profile=tb.QueryProfile(1, 8, 64), echo=lines.append)
    d, hm = tiny_model.config.dim, tiny_model.config.mask_size
    assert info['precision'] == 'fp16' and info['gpu'] == 'NVIDIA Orin (nvgpu)'
    assert info['profile']['query_feat'] == [[1, 1, d], [1, 8, d], [1, 64, d]]
    assert info['profile']['restrict'][2] == [1, 64, hm, hm]
    assert (tmp_path / name).read_bytes() == b'PLAN'
    assert (tmp_path / 'cache').read_bytes() == b'CACHE'
    assert any('building TensorRT fp16 plan' in s for s in lines)
    assert any('Building engine (3 steps)' in s for s in lines)


def test_manifest_gets_the_umask_mode_and_refuses_a_broken_one(tmp_path):
    """manifest.json is readable by a node running as another user (not mkstemp's 0600)."""
    import os
    import stat

    from ros_segcap.backends.manifest import write_entry

    old = os.umask(0o022)
    try:
        path = write_entry(tmp_path, 'tiny-random', {'note': 'x'})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILE]  # no temporary left
    path.write_text('[]')
    with pytest.raises(ValueError, match='must hold a JSON object, not a list; delete it') as e:
        write_entry(tmp_path, 'tiny-random', {})
    assert '\n' not in str(e.value)

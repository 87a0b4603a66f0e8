"""Backends: the spec, torch as reference, onnxruntime parity, selection, pipeline and CLI.

Parity tolerances (fp32, onnxruntime vs torch, from ros_segcap.export.parity): every float
output within max abs error 2e-3 or scale-normalised relative error 5e-4 (max |error| /
max |torch value|), and masks (logit > 0) with IoU >= 0.99. Inputs are fresh random images
and queries each run; a failure prints the seed.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import make_image
from engines_util import exported, fresh_rng, random_restrict
from ros_segcap.backends.arrays import frame_arrays, frame_from_outputs
from ros_segcap.core.spec import graph_specs, QUERY_DIM, seg_inputs
from ros_segcap.core.types import VisualPrompt
from ros_segcap.export import parity
from ros_segcap.export.onnx_export import example_inputs


@pytest.fixture(scope='module')
def engines_dir(tiny_model):
    return exported(tiny_model)


@pytest.fixture(scope='module')
def runners(tiny_model, engines_dir):
    """{'torch': (vision, seg), 'onnxruntime': (vision, seg)} for the tiny model."""
    from ros_segcap.backends.select import open_runners
    from ros_segcap.export.torch_runner import torch_engines

    return {'torch': torch_engines(tiny_model),
            'onnxruntime': open_runners(tiny_model, 'onnxruntime', directory=engines_dir)}


def _assert_parity(ref, got, seed, what):
    bad = parity.failures(ref, got)
    assert not bad, f'{what} (seed {seed}): ' + '; '.join(bad)


# ----- spec and protocol -----------------------------------------------------------------

def test_spec_names_dims_and_input_checks(tiny_model):
    specs = graph_specs(tiny_model.config)
    vision, seg = specs['vision'], specs['seg']
    assert vision.input_names == ['image'] and 'pixel_tokens' in vision.output_names
    assert len(set(seg.input_names + seg.output_names)) == len(seg.input_names) + \
        len(seg.output_names), 'ONNX needs distinct input and output names'
    assert seg.dynamic_axes()['query_feat'] == {1: QUERY_DIM}
    assert vision.dynamic_axes() == {}
    d, hm = tiny_model.config.dim, tiny_model.config.mask_size
    rng = np.random.default_rng(0)
    inputs = example_inputs(seg, rng, queries=5)
    del inputs['restrict']  # optional: filled with all True
    feeds = seg.prepare(inputs)
    assert feeds['restrict'].shape == (1, 5, hm, hm) and feeds['restrict'].all()
    bad = dict(inputs, query_pos=np.zeros((1, 4, d), np.float32))
    with pytest.raises(ValueError, match='queries=4 but another input has queries=5'):
        seg.prepare(bad)
    with pytest.raises(ValueError, match=r'missing inputs \[.mask_features.\]'):
        seg.prepare({k: v for k, v in inputs.items() if k != 'mask_features'})
    with pytest.raises(ValueError, match='unknown inputs'):
        seg.prepare(dict(inputs, extra=np.zeros(1)))


def test_torch_backend_is_the_model(tiny_model, tiny_frame, runners):
    """The torch runners compute exactly what SegCapModel.encode / decode_queries do."""
    frame, _ = tiny_frame
    e = runners['torch']
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    with torch.no_grad():
        ref = frame_arrays(tiny_model.encode(torch.from_numpy(image)))
    got = e.encode(image)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    feat = rng.standard_normal((1, 3, tiny_model.config.dim)).astype(np.float32)
    pos = rng.standard_normal((1, 3, tiny_model.config.dim)).astype(np.float32)
    out = e.segment(frame_arrays(frame), feat, pos)
    with torch.no_grad():
        ref_out = tiny_model.decode_queries(frame, torch.from_numpy(feat), torch.from_numpy(pos))
    np.testing.assert_array_equal(out['seg_mask_logits'], ref_out.mask_logits[-1].numpy())
    rebuilt = frame_from_outputs(got)
    assert torch.equal(rebuilt.mask_logits, torch.from_numpy(ref['mask_logits']))


# ----- onnxruntime vs torch ---------------------------------------------------------------

def test_vision_parity_onnxruntime(runners):
    rng, seed = fresh_rng()
    image = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    ref = runners['torch'].encode(image)
    got = runners['onnxruntime'].encode(image)
    assert list(got) == list(ref)
    _assert_parity(ref, got, seed, 'vision')


@pytest.mark.parametrize('queries', [1, 7, 40])
@pytest.mark.parametrize('restricted', [False, True], ids=['free', 'restricted'])
def test_seg_parity_onnxruntime(runners, tiny_model, queries, restricted):
    rng, seed = fresh_rng()
    image = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    frame = runners['torch'].encode(image)
    d, hm = tiny_model.config.dim, tiny_model.config.mask_size
    feat = rng.standard_normal((1, queries, d)).astype(np.float32)
    pos = rng.standard_normal((1, queries, d)).astype(np.float32)
    restrict = random_restrict(rng, queries, hm) if restricted else None
    ref = runners['torch'].segment(frame, feat, pos, restrict)
    got = runners['onnxruntime'].segment(frame, feat, pos, restrict)
    assert got['seg_mask_logits'].shape == (1, queries, hm, hm)
    _assert_parity(ref, got, seed, f'seg with {queries} queries')


def test_unrestricted_equals_all_true_restriction(runners, tiny_frame, tiny_model):
    """The seg graph always takes `restrict`; all True must mean what None means in torch."""
    frame, _ = tiny_frame
    rng = np.random.default_rng(2)
    feat, pos = (rng.standard_normal((1, 4, tiny_model.config.dim)).astype(np.float32)
                 for _ in range(2))
    with torch.no_grad():
        ref = tiny_model.decode_queries(frame, torch.from_numpy(feat), torch.from_numpy(pos))
    got = runners['onnxruntime'].segment(frame_arrays(frame), feat, pos)
    assert parity.mask_iou(ref.mask_logits[-1].numpy(), got['seg_mask_logits']) >= 0.99
    assert not parity.failures({'seg_mask_logits': ref.mask_logits[-1].numpy()}, got)


# ----- pipeline, selection, CLI -----------------------------------------------------------

def _pipelines(tiny_model, engines_dir, **kw):
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    base = dict(model='tiny-random', max_new_tokens=40, engines_dir=str(engines_dir), **kw)
    return (open_pipeline(PipelineConfig(backend='torch', **base), model=tiny_model),
            open_pipeline(PipelineConfig(backend='onnxruntime', **base), model=tiny_model))


def test_pipeline_same_answers_and_masks(tiny_model, engines_dir, force_answer):
    """Final masks IoU >= 0.99 and identical answers, torch vs onnxruntime pipelines."""
    pt, po = _pipelines(tiny_model, engines_dir)
    assert po.backend == 'onnxruntime' and po.engine.backend == 'onnxruntime'
    rng, seed = fresh_rng()
    image = make_image(90, 150, seed=seed)
    box = VisualPrompt('box', box=(20.0, 10.0, 100.0, 70.0))
    plain = [p.run(image, 'what is in the box?', box) for p in (pt, po)]
    assert plain[0].raw_text == plain[1].raw_text, f'seed {seed}'
    answer = '<p> the cup </p> [SEG] and <p> the bowl </p> [SEG] and <p> it </p> [SEG].'
    results = []
    for p in (pt, po):
        force_answer(tiny_model, answer)
        results.append(p.run(image, 'segment the cup, the bowl and it'))
    ref, got = results
    assert ref.raw_text == got.raw_text
    assert ref.phrases == got.phrases == ['the cup', 'the bowl', 'it']
    assert len(got.masks) == 3
    for a, b in zip(ref.masks, got.masks):
        union = (a | b).sum()
        iou = (a & b).sum() / union if union else 1.0
        assert iou >= 0.99, f'mask IoU {iou:.4f} (seed {seed})'
    assert po.encode_count == 2 and 'vision' in got.timing.ms


def test_auto_says_which_backend_and_why(tiny_model, engines_dir, tmp_path, caplog):
    from ros_segcap.backends.select import open_engine
    from ros_segcap.core.torch_engine import TorchEngine

    def open_engines(model, backend, directory):
        return open_engine(model, backend, directory=directory,
                           torch_engine=lambda why: TorchEngine(model, 'cpu', why))

    with caplog.at_level(logging.INFO, logger='ros_segcap.backends'):
        e = open_engines(tiny_model, 'auto', directory=tmp_path)
    assert e.backend == 'torch'
    lines = [r.getMessage() for r in caplog.records if 'segcap backend' in r.getMessage()]
    assert len(lines) == 1
    assert 'not tensorrt' in lines[0] and 'no onnx engines for model tiny-random' in lines[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='ros_segcap.backends'):
        e = open_engines(tiny_model, 'auto', directory=engines_dir)
    assert e.backend == 'onnxruntime'
    assert 'segcap backend: onnxruntime (auto;' in caplog.records[-1].getMessage()


def test_named_backend_refuses_missing_engines(tiny_model, tmp_path):
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    cfg = PipelineConfig(model='tiny-random', backend='onnxruntime', engines_dir=str(tmp_path))
    with pytest.raises(ValueError, match='segcap export --model tiny-random --out'):
        open_pipeline(cfg, model=tiny_model)
    with pytest.raises(ValueError, match='unknown backend .onnx.; use one of torch, '):
        open_pipeline(PipelineConfig(model='tiny-random', backend='onnx'), model=tiny_model)


def test_onnxruntime_providers_preference():
    from ros_segcap.backends.onnx_backend import choose_providers

    got = choose_providers(['CPUExecutionProvider', 'CUDAExecutionProvider',
                            'TensorrtExecutionProvider'], None)
    assert [p if isinstance(p, str) else p[0] for p in got] == [
        'TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert got[0][1]['trt_fp16_enable'] is True
    assert choose_providers(['CPUExecutionProvider']) == ['CPUExecutionProvider']


def test_segcap_infer_backend_onnxruntime(tiny_model, engines_dir, tmp_path, monkeypatch,
                                          capsys):
    """`segcap infer --backend onnxruntime` on a saved model finds the engines by env var."""
    import cv2

    from ros_segcap.cli import main
    from ros_segcap.models.segcap.weights import save_model

    model_dir = save_model(tiny_model, tmp_path / 'model')
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), make_image(60, 80))
    monkeypatch.setenv('SEGCAP_ENGINES', str(engines_dir))
    args = ['infer', str(image), '--prompt', 'describe', '--model', str(model_dir),
            '--max-new-tokens', '2']
    assert main(args + ['--backend', 'onnxruntime']) == 0
    assert main(args + ['--backend', 'tensorrt']) == 2
    err = capsys.readouterr().err
    assert 'cannot use TensorRT' in err


# ----- TensorRT (GPU machines only) -------------------------------------------------------

def _need_tensorrt():
    from ros_segcap.backends.tensorrt_backend import tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        pytest.skip(f'TensorRT test: {why}')


@pytest.mark.gpu
def test_tensorrt_plans_match_torch(tiny_model, tmp_path):
    """fp16 plans where parity holds (else fp32), masks IoU >= 0.99 vs torch, 1/7/40 queries."""
    _need_tensorrt()
    from ros_segcap.backends.select import open_runners
    from ros_segcap.export.build import export_engines
    from ros_segcap.export.torch_runner import torch_engines

    entry = export_engines(tiny_model, tmp_path, tensorrt=True, fp16=True, echo=print)
    for graph in ('vision', 'seg'):
        (plan,) = entry['graphs'][graph]['plans'].values()
        assert plan['file'].endswith(f'.{plan["precision"]}.plan')
        assert entry['weights_sha256'][:12] in plan['file']
    trt_e = open_runners(tiny_model, 'tensorrt', directory=tmp_path)
    ref_e = torch_engines(tiny_model)
    rng, seed = fresh_rng()
    image = rng.uniform(0, 255, (1, 3, 128, 128)).astype(np.float32)
    ref, got = ref_e.encode(image), trt_e.encode(image)
    assert parity.mask_iou(ref['mask_logits'], got['mask_logits']) >= parity.MASK_IOU
    spec = graph_specs(tiny_model.config)['seg']
    for n in (1, 7, 40):
        q = example_inputs(spec, rng, n)
        inputs = seg_inputs(spec, ref, q['query_feat'], q['query_pos'])
        iou = parity.mask_iou(ref_e.seg.run(inputs)['seg_mask_logits'],
                              trt_e.seg.run(inputs)['seg_mask_logits'])
        assert iou >= parity.MASK_IOU, f'{n} queries: IoU {iou} (seed {seed})'


# ----- segcap-tiny: the real EfficientNet-Lite0 weights at 512 x 512 -------------------------

@pytest.mark.slow
def test_segcap_tiny_vision_parity_on_a_photo(tmp_path):
    """segcap-tiny's vision graph (pretrained backbone, 512 x 512) through onnxruntime.

    The LLM is swapped for a tiny random one: it is not part of the engines, and loading
    SmolLM2 would double the test's time. Same fp32 tolerances as above.
    """
    from pathlib import Path

    import cv2

    from ros_segcap.models.segcap.graphs import VisionGraph
    from ros_segcap.backends.onnx_backend import OnnxBackend
    from ros_segcap.models.segcap.config import get_config, TINY_RANDOM_LLM
    from ros_segcap.models.segcap.model import build_model
    from ros_segcap.core.preprocess import letterbox
    from ros_segcap.export.onnx_export import export_graph
    from ros_segcap.models.segcap.traceable import exportable

    config = get_config('segcap-tiny').replace(llm='random', llm_config=TINY_RANDOM_LLM,
                                               llm_hidden=TINY_RANDOM_LLM['hidden_size'])
    torch.manual_seed(0)  # the untrained decoder's weights: the same in every run
    model = build_model(config)
    spec = graph_specs(config)['vision']
    rng, seed = fresh_rng()
    random_image = rng.uniform(0, 255, (1, 3, 512, 512)).astype(np.float32)
    with exportable(model):
        path = export_graph(VisionGraph(model), spec, {'image': random_image},
                            tmp_path / 'vision.onnx')
    runner = OnnxBackend(path, spec, providers=['CPUExecutionProvider'])
    photo = Path(__file__).resolve().parent.parent / 'ros_segcap' / 'assets' / 'coffee.jpg'
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    tensor, _ = letterbox(rgb, 512)
    for what, image in (('coffee.jpg', tensor.numpy()), ('random image', random_image)):
        with torch.no_grad():
            ref = frame_arrays(model.encode(torch.from_numpy(image)))
        _assert_parity(ref, runner.run({'image': image}), seed, f'segcap-tiny {what}')


def test_any_open_error_is_one_line_and_auto_moves_on(tiny_model, engines_dir, monkeypatch):
    """An engine file the runtime cannot read (here an OSError) is an EngineError for a named
    backend and a reason to fall back for auto."""
    from ros_segcap.backends import onnx_backend, select
    from ros_segcap.backends.base import EngineError
    from ros_segcap.core.torch_engine import TorchEngine

    def unreadable(*args, **kwargs):
        raise OSError('Input/output error\nsecond line')

    monkeypatch.setattr(onnx_backend.OnnxBackend, '__init__', unreadable)
    kw = dict(directory=engines_dir, say=lambda line: None,
              torch_engine=lambda why: TorchEngine(tiny_model, 'cpu', why))
    with pytest.raises(EngineError, match=r'OSError: Input/output error\); rebuild: segcap') as e:
        select.open_engine(tiny_model, 'onnxruntime', **kw)
    assert '\n' not in str(e.value)
    engine = select.open_engine(tiny_model, 'auto', **kw)
    assert engine.backend == 'torch' and 'not onnxruntime: cannot open' in engine.reason

"""The CUDA path (run where torch.cuda.is_available(); skipped elsewhere): an omg_llava model
directory loads on the GPU with its LLM in fp16 and its vision in fp32 and answers with
masks; segcap-tiny's CPU decode kernels are not used on a GPU (one line says so); a CLI run
reports its peak GPU memory; the exported engines run on the GPU's onnxruntime."""
from __future__ import annotations

from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_image

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]


def segcap(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'ros_segcap.cli', *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def omg_dir(tmp_path_factory) -> Path:
    """The synthetic official-layout files converted with --dtype fp16."""
    from ros_segcap.models.omg_llava.config import TINY
    from ros_segcap.models.omg_llava.convert import convert, Sources
    from ros_segcap.models.omg_llava.synthetic import write_release

    root = tmp_path_factory.mktemp('omg_gpu')
    p = write_release(root / 'src', TINY.replace(seg_decoder_copy=True))
    src = Sources(p['llm'], p['pth'], p['omg_seg'], p['text'], p['clip'])
    convert(src, root / 'model', sizes=TINY, dtype='fp16', lora_alpha=8, progress=False)
    return root / 'model'


def test_omg_llava_runs_on_the_gpu_in_fp16(omg_dir: Path, capsys) -> None:
    from ros_segcap.runtime import open_pipeline, PipelineConfig

    pipe = open_pipeline(PipelineConfig(model=str(omg_dir), device='cuda', backend='torch',
                                        max_new_tokens=8))
    model = pipe.model
    assert model.llm.get_input_embeddings().weight.dtype == torch.float16
    assert model.llm.get_input_embeddings().weight.device.type == 'cuda'
    assert next(model.visual_encoder.parameters()).dtype == torch.float32
    err = capsys.readouterr().err
    assert err.count('decode path fast-q4 is not used') == 1, err
    image = make_image(90, 150)
    result = pipe.run(image, 'Please segment the thing in this image.')
    assert result.status == 'ok' and all(m.shape == (90, 150) for m in result.masks)
    frame, box = pipe.encode(image)
    hidden = torch.randn(2, model.config.llm_hidden, device='cuda')
    logits = pipe._mask_logits(frame, box, hidden)
    assert logits.shape == (2, 90, 150) and logits.device.type == 'cuda'
    assert torch.cuda.max_memory_allocated() > 0


def test_segcap_tiny_on_the_gpu_skips_the_cpu_kernels(capfd) -> None:
    from ros_segcap.runtime import open_pipeline, PipelineConfig

    pipe = open_pipeline(PipelineConfig(model='segcap-tiny', device='cuda', backend='torch',
                                        decode_path='fast-q4', max_new_tokens=4))
    pipe.run(make_image(64, 64), 'segment the red cup')
    pipe.run(make_image(64, 64, seed=1), 'segment the red cup')
    assert pipe.model.llm.effective_decode_path() == 'fast'
    err = capfd.readouterr().err
    assert err.count('decode path fast-q4 unavailable') == 1, err
    assert 'run on the CPU' in err


def test_cli_reports_the_peak_gpu_memory(omg_dir: Path, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / 'img.png'
    cv2.imwrite(str(image), make_image(90, 120)[:, :, ::-1])
    run = segcap('infer', image, '--model', omg_dir, '--prompt', 'segment the cup',
                 '--max-new-tokens', '6', '--device', 'cuda')
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [ln for ln in run.stderr.splitlines() if 'peak GPU memory' in ln]
    assert len(lines) == 1 and 'GiB' in lines[0], run.stderr


def test_exported_engines_run_on_the_gpu(omg_dir: Path, tmp_path: Path) -> None:
    """Exported like segcap-tiny's (fixed input side, dynamic query count) and run by
    onnxruntime's CUDA provider where onnxruntime-gpu is installed."""
    ort = pytest.importorskip('onnxruntime')
    if 'CUDAExecutionProvider' not in ort.get_available_providers():
        pytest.skip('needs onnxruntime-gpu (CUDAExecutionProvider)')
    import cv2

    image = tmp_path / 'img.png'
    cv2.imwrite(str(image), (np.random.default_rng(1).random((90, 120, 3)) * 255)
                .astype(np.uint8))
    engines = tmp_path / 'engines'
    run = segcap('export', '--model', omg_dir, '--out', engines)
    assert run.returncode == 0 and 'parity ok' in run.stdout + run.stderr, run.stderr[-2000:]
    run = segcap('infer', image, '--model', omg_dir, '--prompt', 'segment the cup',
                 '--max-new-tokens', '6', '--backend', 'onnxruntime', '--engines-dir',
                 engines, '--device', 'cuda')
    assert run.returncode == 0, run.stderr[-2000:]
    assert 'onnxruntime' in run.stderr

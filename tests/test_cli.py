"""`segcap infer`: bad input gives one line on stderr and exit code 2; a run writes its files."""
from __future__ import annotations

import json
import os
from pathlib import Path
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import make_image
from ros_segcap.cli import main
from ros_segcap.models.segcap.config import SEG_TOKEN, SPECIAL_TOKENS

HEIGHT, WIDTH = 40, 60
RESULT_KEYS = {'answer', 'phrases', 'masks', 'scores', 'boxes', 'timing_ms', 'model'}
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures('cached_tokenizer')


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / 'photo.png'
    cv2.imwrite(str(path), cv2.cvtColor(make_image(HEIGHT, WIDTH), cv2.COLOR_RGB2BGR))
    return path


def _run(capfd, *argv: str) -> tuple[int, str, str]:
    """Run main() in-process; capture at the fds (OpenCV's C++ warnings bypass sys.stderr)."""
    code = main(['infer', *argv])
    out, err = capfd.readouterr()
    return code, out, err


def _bad_inputs(tmp_path: Path, photo: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / 'notes.png'
    text.write_text('this is not an image\n')
    small = tmp_path / 'small_mask.png'
    cv2.imwrite(str(small), np.full((10, 10), 255, np.uint8))
    empty = tmp_path / 'empty_mask.png'
    cv2.imwrite(str(empty), np.zeros((HEIGHT, WIDTH), np.uint8))
    p = str(photo)
    return {
        'missing file': ([str(tmp_path / 'nope.png'), '--prompt', 'x'], r'not found.*nope\.png'),
        'not an image': ([str(text), '--prompt', 'x'], r'notes\.png cannot be decoded'),
        'empty prompt': ([p, '--prompt', ''], 'empty prompt'),
        'blank prompt': ([p, '--prompt', 'ok', '--prompt', '   '], 'empty prompt'),
        'point outside': ([p, '--prompt', 'x', '--point', f'{WIDTH + 5},3'],
                          rf'point \({WIDTH + 5}, 3\) is outside the {WIDTH}x{HEIGHT} image'),
        'point format': ([p, '--prompt', 'x', '--point', '3'], '--point must be 2'),
        'box x2 < x1': ([p, '--prompt', 'x', '--box', '20,2,10,8'], r'x2 >= x1'),
        'mask size': ([p, '--prompt', 'x', '--mask', str(small)],
                      rf'mask prompt is 10x10 but the image is {WIDTH}x{HEIGHT}'),
        'mask empty': ([p, '--prompt', 'x', '--mask', str(empty)], 'mask prompt is empty'),
        'mask missing': ([p, '--prompt', 'x', '--mask', str(tmp_path / 'no_mask.png')],
                         r'--mask file not found.*no_mask\.png'),
        'mask not an image': ([p, '--prompt', 'x', '--mask', str(text)],
                              r'--mask .*notes\.png cannot be decoded'),
        'two prompts': ([p, '--prompt', 'x', '--point', '1,1', '--box', '1,1,2,2'],
                        'at most one visual prompt'),
        'unknown model': ([p, '--prompt', 'x', '--model', 'no-such-model'],
                          "unknown model 'no-such-model'"),
    }


CASES = ['missing file', 'not an image', 'empty prompt', 'blank prompt', 'point outside',
         'point format', 'box x2 < x1', 'mask size', 'mask empty', 'mask missing',
         'mask not an image', 'two prompts', 'unknown model']


@pytest.mark.parametrize('case', CASES)
def test_bad_input(case: str, tmp_path: Path, photo: Path, capfd) -> None:
    """One line naming the problem, exit code 2, no traceback, nothing on stdout."""
    argv, pattern = _bad_inputs(tmp_path, photo)[case]
    code, out, err = _run(capfd, *argv)
    assert code == 2
    assert out == ''
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('segcap infer: error: ')
    assert re.search(pattern, lines[0]), lines[0]
    assert 'Traceback' not in err


def _check_out_dir(out: Path, n_masks: int) -> dict:
    info = json.loads((out / 'result.json').read_text())
    assert RESULT_KEYS <= set(info)
    assert info['model'] == 'tiny-random'
    assert not any(tok in info['answer'] for tok in SPECIAL_TOKENS)
    assert len(info['masks']) == len(info['phrases']) == len(info['scores']) == \
        len(info['boxes']) == n_masks
    for i, rel in enumerate(info['masks']):
        assert rel == f'masks/{i:02d}.png'
        mask = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        x1, y1, x2, y2 = info['boxes'][i]
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())
    overlay = cv2.imread(str(out / 'overlay.png'))
    assert overlay.shape == (HEIGHT, WIDTH, 3)
    assert all(v >= 0 for v in info['timing_ms'].values())
    return info


def test_infer_writes_result(tiny_model, force_answer, tmp_path: Path, photo: Path,
                             capfd) -> None:
    """A forced '<p> x </p> [SEG]' answer: stdout, result.json, masks/00.png, overlay.png."""
    force_answer(tiny_model, f'<p> the thing </p> {SEG_TOKEN}.')
    out = tmp_path / 'out'
    code, stdout, err = _run(capfd, str(photo), '--prompt', 'segment the thing', '--model',
                             'tiny-random', '--box', '5,5,50,30', '--out', str(out))
    assert code == 0, err
    assert stdout.strip() == 'the thing.'
    assert 'meaningless' in err and 'Traceback' not in err
    info = _check_out_dir(out, 1)
    assert info['answer'] == 'the thing.' and info['phrases'] == ['the thing']


def test_infer_several_prompts(tiny_model, force_answer, tmp_path: Path, photo: Path,
                               capfd) -> None:
    """Several --prompt flags: one answer line and one output folder each."""
    force_answer(tiny_model, 'nothing here.')  # the second run hits the stop token at once
    out = tmp_path / 'multi'
    code, stdout, _ = _run(capfd, str(photo), '--prompt', 'a', '--prompt', 'b', '--model',
                           'tiny-random', '--out', str(out))
    assert code == 0
    assert stdout.splitlines() == ['nothing here.', '(empty answer)']
    first, second = _check_out_dir(out / '00', 0), _check_out_dir(out / '01', 0)
    assert first['answer'] == 'nothing here.' and second['answer'] == ''
    # the image is encoded once: the second prompt reuses the cached frame
    assert 'vision' in first['timing_ms'] and 'vision' not in second['timing_ms']


def _segcap_command() -> list[str]:
    script = Path(sys.executable).parent / 'segcap'
    return [str(script)] if script.is_file() else [sys.executable, '-m', 'ros_segcap.cli']


def test_infer_subprocess(tmp_path: Path, photo: Path) -> None:
    """The installed console script runs end to end in its own process."""
    out = tmp_path / 'sub'
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        _segcap_command() + ['infer', str(photo), '--prompt', 'describe the image', '--model',
                             'tiny-random', '--max-new-tokens', '4', '--out', str(out)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'meaningless' in proc.stderr and 'Traceback' not in proc.stderr
    assert proc.stdout.strip()
    info = json.loads((out / 'result.json').read_text())
    _check_out_dir(out, len(info['masks']))


@pytest.mark.parametrize('flag, refine', [((), True), (('--no-refine-edges',), False)])
def test_infer_refine_edges_flag(flag, refine, monkeypatch, tmp_path: Path, photo: Path,
                                 capfd) -> None:
    """--no-refine-edges reaches the pipeline; without it, edges are refined."""
    import ros_segcap.runtime as runtime

    seen = []

    class Stop(Exception):
        pass

    def fake_open(config, **kwargs):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(runtime, 'open_pipeline', fake_open)
    with pytest.raises(Stop):
        _run(capfd, str(photo), '--prompt', 'segment the thing', *flag)
    assert [c.refine_edges for c in seen] == [refine]


def test_infer_flags_come_from_the_option_table(capfd) -> None:
    """Every 'cli' option is a flag with the table's default; values are checked."""
    from ros_segcap.cli import build_parser
    from ros_segcap.core.options import in_scope

    parser = build_parser()
    args = parser.parse_args(['infer', 'x.png', '--prompt', 'p'])
    for opt in in_scope('cli'):
        assert getattr(args, opt.name) == opt.default, opt.name
    args = parser.parse_args(['infer', 'x.png', '--prompt', 'p', '--no-refine-edges',
                              '--allow-pickle', '--temperature', '0.5', '--decode-path',
                              'fast'])
    assert (args.refine_edges, args.allow_pickle) == (False, True)
    assert (args.temperature, args.decode_path) == (0.5, 'fast')
    for bad, reason in ((['--temperature', '5'], 'temperature=5.0 must be from 0 to 2'),
                        (['--decode-path', 'fast-int8'], 'must be one of fast-q4, fast,'),
                        (['--max-new-tokens', 'many'], "'many' is not of type int")):
        with pytest.raises(SystemExit):
            parser.parse_args(['infer', 'x.png', '--prompt', 'p', *bad])
        assert reason in capfd.readouterr().err


def test_building_the_parser_imports_nothing_heavy() -> None:
    """`segcap <anything>` parses (and refuses bad flags) without importing torch or onnx."""
    probe = ('import sys\n'
             'from ros_segcap.cli import build_parser\n'
             'build_parser()\n'
             'heavy = {"torch", "onnx", "cv2", "transformers"} & set(sys.modules)\n'
             'assert not heavy, heavy\n')
    proc = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_usage_errors_are_one_line(capfd) -> None:
    """argparse's own errors (usage) are one line too, exit code 2."""
    with pytest.raises(SystemExit) as exc:
        main(['infer', 'x.png', '--prompt', 'p', '--backend', 'onnx'])
    err = capfd.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "backend='onnx' must be one of torch, onnxruntime, tensorrt, auto" in err

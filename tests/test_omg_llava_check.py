"""scripts/check_omg_llava.py without the official code, weights or a GPU: its --help, its
argument checks (one line, exit 2) and its comparisons on made-up outputs."""
from __future__ import annotations

import importlib.util
from pathlib import Path
import subprocess
import sys

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / 'scripts' / 'check_omg_llava.py'


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope='module')
def check():
    spec = importlib.util.spec_from_file_location('check_omg_llava', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_names_every_comparison() -> None:
    out = run('--help')
    assert out.returncode == 0, out.stderr
    for word in ('--official-repo', '--pth', '--model', 'backbone', 'kept', 'seg_iou'):
        assert word in out.stdout


def test_missing_inputs_fail_in_one_line(tmp_path: Path) -> None:
    repo = tmp_path / 'OMG-Seg'
    out = run('--official-repo', repo, '--pth', tmp_path / 'x.pth', '--model', tmp_path)
    assert out.returncode == 2 and out.stdout == ''
    assert out.stderr.strip().count('\n') == 0 and '--official-repo' in out.stderr
    (repo / 'omg_llava' / 'omg_llava' / 'configs').mkdir(parents=True)
    out = run('--official-repo', repo, '--pth', tmp_path / 'x.pth', '--model', tmp_path)
    assert out.returncode == 2 and '--config' in out.stderr
    assert out.stderr.strip().count('\n') == 0
    out = run('--official-repo', repo)  # argparse: the required flags
    assert out.returncode == 2 and '--pth' in out.stderr


def test_the_script_imports_no_official_code(check) -> None:
    assert 'mmengine' not in sys.modules and 'xtuner' not in sys.modules
    assert callable(check.run_official) and callable(check.run_ours)


def _outputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    seg = torch.randn(2, 16, 16, generator=g)
    return {'input': torch.randn(3, 8, 8, generator=g),
            'backbone': [torch.randn(1, 4, 8, 8, generator=g) for _ in range(4)],
            'class': torch.randn(1, 5, 6, generator=g),
            'mask_feats': torch.randn(1, 4, 8, 8, generator=g),
            'kept': [0, 3], 'visual': torch.randn(7, 16, generator=g),
            'ids': list(range(30)), 'seg': seg}


def test_comparisons_pass_on_equal_outputs_and_fail_on_different_ones(check) -> None:
    rows = check.compare(_outputs(), _outputs(), tokens=20)
    assert [r[0] for r in rows] == ['input', 'backbone', 'mask_feats', 'class', 'kept',
                                    'visual', 'text', 'seg_iou']
    assert all(ok for _, ok, _ in rows), rows
    bad = _outputs()
    bad['backbone'][2] = bad['backbone'][2] * 1.01
    bad['kept'] = [0, 4]
    bad['ids'] = list(range(19)) + [99] + list(range(20, 30))
    bad['seg'] = -bad['seg']
    bad['visual'] = bad['visual'][:6]
    failed = {name for name, ok, _ in check.compare(_outputs(), bad, tokens=20) if not ok}
    assert failed == {'backbone', 'kept', 'text', 'seg_iou', 'visual'}
    short = _outputs()
    short['ids'] = [5, 6, 7]  # a short official answer must match whole
    assert dict((n, ok) for n, ok, _ in check.compare(short, _outputs(), 20))['text'] is False

"""Training recipe on the tiny-random model: every stage runs, resume is exact, DDP agrees."""
from __future__ import annotations

import os
from pathlib import Path
import socket
import subprocess
import sys

import pytest
import torch

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.models.segcap.weights import load_model, save_model
from training.cache import build_shard, load_cache, parse_mix
from training.cache import main as cache_main
from training.config import make_config, parse_overrides
from training.loop import CHECKPOINT
from training.train import main as train_main
from training.train import run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 3-scene tiny-random feature cache and an untrained tiny-random model directory."""
    root = tmp_path_factory.mktemp('train')
    torch.manual_seed(0)
    config = get_config('tiny-random')
    cache = root / 'cache'
    cache.mkdir()
    torch.save(build_shard(config, 'train', 0, 3), cache / 'shard-0000000.pt')
    init = save_model(build_model(config, pretrained=False), root / 'init')
    return {'root': root, 'cache': cache, 'init': init}


def _cfg(tiny, stage: int, out: Path, **kw):
    values = dict(model='tiny-random', cache=str(tiny['cache']), out=str(out), steps=4,
                  accum=2, log_every=1, ckpt_every=1, threads=1)
    if stage:
        values['init'] = str(tiny['init'])
    values.update(kw)
    return make_config(stage, values)


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT, weights_only=False)['params']


def test_overrides_follow_field_types():
    assert parse_overrides(['--lr=1e-3', '--steps=7', '--tasks=gcg']) == \
        {'lr': 1e-3, 'steps': 7, 'tasks': 'gcg'}
    with pytest.raises(ValueError, match='unknown option --nope'):
        parse_overrides(['--nope=1'])
    with pytest.raises(ValueError, match='--init=runs/stage1/model'):
        make_config(2, {})


@pytest.mark.parametrize('stage', [0, 1, 2])
def test_stage_runs_and_writes_outputs(tiny, stage):
    out = tiny['root'] / f'run{stage}'
    model_dir = run(_cfg(tiny, stage, out))
    for name in ('metrics.csv', 'loss_curve.png', CHECKPOINT, 'train_config.json'):
        assert (out / name).is_file(), name
    lines = (out / 'metrics.csv').read_text().splitlines()
    assert len(lines) == 5 and 'loss' in lines[0]
    model = load_model(str(model_dir))
    if stage == 2:
        assert model.lora_info is not None
    before = load_model(str(tiny['init'])) if stage else None
    if before is not None:  # the projectors moved, the frozen decoder did not
        assert not torch.equal(model.projectors.pixel[0].weight, before.projectors.pixel[0].weight)
        assert torch.equal(model.decoder.class_head.weight, before.decoder.class_head.weight)


@pytest.mark.parametrize('stage', [0, 2])
def test_resume_continues_exactly(tiny, stage):
    full, part = tiny['root'] / f'full{stage}', tiny['root'] / f'part{stage}'
    run(_cfg(tiny, stage, full))
    run(_cfg(tiny, stage, part, stop_after=2))
    assert torch.load(part / CHECKPOINT, weights_only=False)['step'] == 2
    args = ['--model=tiny-random', f'--cache={tiny["cache"]}', f'--out={part}', '--steps=4',
            '--accum=2', '--log_every=1', '--ckpt_every=1']
    if stage:
        args.append(f'--init={tiny["init"]}')
    train_main(['--stage', str(stage), '--resume'] + args)
    a, b = _params(full), _params(part)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows = (part / 'metrics.csv').read_text().splitlines()[1:]
    assert [r.split(',')[0] for r in rows] == ['1', '2', '3', '4']


def test_bf16_autocast_runs(tiny):
    out = tiny['root'] / 'bf16'
    run(_cfg(tiny, 2, out, steps=2, precision='bf16'))
    last = (out / 'metrics.csv').read_text().splitlines()[-1].split(',')
    assert last[0] == '2'
    assert all(torch.isfinite(v).all() for v in _params(out).values())


def test_cache_round_trip(tiny):
    scenes = load_cache(tiny['cache'])
    assert len(scenes) == 3
    s = scenes[0]
    hm = get_config('tiny-random').mask_size
    assert s.pan_masks.shape[1:] == (hm, hm) and len(s.pan_classes) == len(s.pan_masks)
    for a in s.samples:
        assert a.answer.count('[SEG]') == a.masks.shape[0]
        assert a.question.count('<region>') + a.question.count('<mark>') == a.kinds.shape[1]


def test_cache_command_takes_a_task_mix(tmp_path, capsys):
    cache_main(['--model', 'tiny-random', '--scenes', '2', '--out', str(tmp_path),
                '--mix', 'region=2,referring=1,absent=0,gcg=0,caption=0,vqa=0'])
    scenes = load_cache(tmp_path)
    assert [[a.task for a in s.samples] for s in scenes] == [['referring', 'region', 'region']] * 2
    assert dict(parse_mix('')) == dict(parse_mix('referring=2'))  # default counts
    for bad in ('region=x', 'regions=2', 'region', 'referring=0,absent=0,gcg=0,region=0,'
                'caption=0,vqa=0'):
        with pytest.raises(ValueError, match='--mix'):
            parse_mix(bad)
    with pytest.raises(SystemExit):
        cache_main(['--out', str(tmp_path / 'x'), '--mix', 'colour=1'])
    assert "got 'colour=1'" in capsys.readouterr().err


def test_ddp_two_ranks_hold_identical_parameters(tiny):
    out = tiny['root'] / 'ddp'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
           '--master_addr=127.0.0.1', f'--master_port={port}',
           str(ROOT / 'tests' / 'ddp_worker.py'), '--stage', '2',
           '--model=tiny-random', f'--cache={tiny["cache"]}', f'--out={out}', '--steps=3',
           '--accum=2', f'--init={tiny["init"]}', '--ckpt_every=1', '--log_every=1']
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(out / 'rank0.pt', weights_only=False)
    r1 = torch.load(out / 'rank1.pt', weights_only=False)
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=k)
    start = load_model(str(tiny['init']))
    assert not torch.equal(r0['model.projectors.pixel.0.weight'],
                           start.projectors.pixel[0].weight)

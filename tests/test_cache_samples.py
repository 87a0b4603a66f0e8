"""Feature cache from a real-format dataset (RefCOCO json) and a stage-2 run on it."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.models.segcap.weights import save_model
from training.cache import load_cache
from training.cache_samples import main as cache_main
from training.config import make_config
from training.train import run

H, W = 60, 80
POLY = [10.0, 10.0, 30.0, 10.0, 30.0, 40.0, 10.0, 40.0]  # x, y pairs: a 20x30 box


@pytest.fixture
def refcoco(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        cv2.imwrite(str(images / f'{i}.png'), rng.integers(0, 255, (H, W, 3), np.uint8))
    instances = {
        'images': [{'id': i, 'file_name': f'{i}.png', 'height': H, 'width': W} for i in (1, 2)],
        'annotations': [{'id': 10 + i, 'image_id': i, 'segmentation': [POLY], 'iscrowd': 0}
                        for i in (1, 2)],
        'categories': [{'id': 1, 'name': 'box'}]}
    refs = [{'ref_id': 1, 'ann_id': 11, 'image_id': 1, 'split': 'train',
             'sentences': [{'sent': 'left box', 'sent_id': 1},
                           {'sent': 'grey box', 'sent_id': 2}]},
            {'ref_id': 2, 'ann_id': 12, 'image_id': 2, 'split': 'train',
             'sentences': [{'sent': 'the box', 'sent_id': 3}]}]
    (tmp_path / 'instances.json').write_text(json.dumps(instances))
    (tmp_path / 'refs.json').write_text(json.dumps(refs))
    return tmp_path


def _cache(root, out, *extra):
    return cache_main(['--format', 'refcoco', '--ann', str(root / 'refs.json'),
                       '--images', str(root / 'images'), '--model', 'tiny-random',
                       '--out', str(out), *extra])


def test_refcoco_cache_groups_images_and_trains(refcoco, tmp_path):
    out = tmp_path / 'cache'
    assert _cache(refcoco, out, '--instances', str(refcoco / 'instances.json')) == 0
    scenes = load_cache(out)
    assert [len(s.samples) for s in scenes] == [2, 1]  # one backbone pass per image
    hm = get_config('tiny-random').mask_size
    a = scenes[0].samples[0]
    assert a.task == 'referring' and a.answer.count('[SEG]') == a.masks.shape[0] == 1
    # the 20x30 box of an 80-wide image letterboxed to a square: x 1/8..3/8, y 1/8..1/2
    cells = a.masks[0].nonzero()
    assert cells[:, 1].min() == round(hm * 10 / W) and cells[:, 1].max() < round(hm * 30 / W)
    assert cells[:, 0].max() < round(hm * 40 / W) and scenes[0].pan_masks.shape == (0, hm, hm)
    init = save_model(build_model(get_config('tiny-random'), pretrained=False), tmp_path / 'i')
    cfg = make_config(2, dict(model='tiny-random', cache=str(out), out=str(tmp_path / 'r'),
                              init=str(init), steps=2, accum=1, threads=1, log_every=1))
    run(cfg)
    rows = (tmp_path / 'r' / 'metrics.csv').read_text().splitlines()
    assert len(rows) == 3 and all(np.isfinite(float(x)) for x in rows[-1].split(',')[1:3])


def test_refcoco_cache_needs_instances(refcoco, tmp_path, capsys):
    assert _cache(refcoco, tmp_path / 'c') == 2
    assert 'needs --instances' in capsys.readouterr().err
    assert not (tmp_path / 'c').exists()  # refused before any work

"""Panoptic mode: every object the decoder keeps for a frame, without the LLM."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_image
from ros_segcap.cli import main
from ros_segcap.core.overlay import label_image
from ros_segcap.core.pipeline import mask_iou
from ros_segcap.models.segcap.config import STUFF_NAMES
from ros_segcap.models.segcap.weights import SHIPPED_DIR
from ros_segcap.world.varied import render_varied, sample_varied_split

SHIPPED = SHIPPED_DIR / 'segcap-tiny'
pytestmark = pytest.mark.usefixtures('cached_tokenizer')


def no_llm(model, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError('panoptic mode ran the LLM')
    monkeypatch.setattr(model, 'generate', refuse)
    monkeypatch.setattr(model, 'question_embeds', refuse)


def check_disjoint(result, height: int, width: int) -> None:
    n = len(result.masks)
    assert n == len(result.phrases) == len(result.scores) == len(result.boxes) == \
        len(result.ids) == len(result.stuff)
    assert result.ids == list(range(1, n + 1))
    total = np.zeros((height, width), np.int32)
    for m in result.masks:
        assert m.shape == (height, width) and m.dtype == bool and m.any()
        total += m
    assert total.max() <= 1, 'a pixel belongs to two objects'
    labels = label_image(result, height, width)
    for i, m in zip(result.ids, result.masks):
        assert (labels[m] == i).all(), 'the instance-id image must carry the ids'


def test_panoptic_on_tiny_random_runs_no_llm(tiny_pipeline, monkeypatch) -> None:
    no_llm(tiny_pipeline.model, monkeypatch)
    image = make_image(90, 150)
    result = tiny_pipeline.panoptic(image, frame_key='p')
    assert result.masks, 'the tiny-random decoder keeps objects on this image'
    check_disjoint(result, 90, 150)
    names = [n.replace('_', ' ') for n in tiny_pipeline.model.config.class_names]
    assert all(p in names for p in result.phrases)
    assert result.stuff == [p in STUFF_NAMES for p in result.phrases]
    assert result.status == 'ok' and 'panoptic' in result.timing.ms
    before = tiny_pipeline.encode_count
    tiny_pipeline.panoptic(image, frame_key='p')
    assert tiny_pipeline.encode_count == before, 'a cached frame must not be encoded again'


@pytest.mark.skipif(not (SHIPPED / 'model.safetensors').is_file(),
                    reason='no shipped segcap-tiny weights in ros_segcap/weights')
def test_panoptic_finds_the_world_objects_with_segcap_tiny(monkeypatch) -> None:
    """The first four test scenes of the varied world (train styles): the table, each
    object of >= 1000 px covered by one segment (>= 75% of them) and named with its kind
    (>= 25%: the class head names the kind of 3 of these 6; see the model card)."""
    from ros_segcap.runtime import PipelineConfig, open_pipeline

    pipe = open_pipeline(PipelineConfig(model='segcap-tiny'))
    no_llm(pipe.model, monkeypatch)
    covered, named, big = 0, 0, 0
    for index in range(5000, 5004):
        spec = sample_varied_split('test', index, 'train', aspect=640 / 480)
        scene = render_varied(spec, 480, 640)
        result = pipe.panoptic(scene.image)
        check_disjoint(result, 480, 640)
        table = [m for m, p in zip(result.masks, result.phrases) if p == 'table']
        assert len(table) == 1 and mask_iou(table[0], scene.table_mask()) > 0.85, index
        assert result.stuff[result.phrases.index('table')]
        for i in [i for i in range(len(scene.objects)) if scene.mask(i).sum() >= 1000]:
            ious = [mask_iou(m, scene.mask(i)) for m in result.masks]
            big += 1
            covered += max(ious) > 0.5
            named += any(iou > 0.5 and p == scene.objects[i].kind
                         for iou, p in zip(ious, result.phrases))
    assert covered >= 0.75 * big, f'{covered} of {big} objects covered by a segment'
    assert named >= 0.25 * big, f'{named} of {big} objects named with their kind'


def test_cli_panoptic_prints_one_line_per_object(tiny_model, tmp_path: Path, capfd) -> None:
    photo = tmp_path / 'photo.png'
    cv2.imwrite(str(photo), cv2.cvtColor(make_image(40, 60), cv2.COLOR_RGB2BGR))
    out = tmp_path / 'out'
    code = main(['infer', str(photo), '--panoptic', '--model', 'tiny-random', '--out', str(out)])
    stdout, err = capfd.readouterr()
    assert code == 0, err
    info = json.loads((out / 'result.json').read_text())
    lines = stdout.strip().splitlines()
    if info['ids']:
        assert len(lines) == len(info['ids'])
        for line, i, phrase in zip(lines, info['ids'], info['phrases']):
            assert line.split()[:2] == [str(i), phrase.split()[0]]
    else:
        assert lines == ['(no objects)']
    assert len(list((out / 'masks').glob('*.png'))) == len(info['ids'])
    code = main(['infer', str(photo), '--panoptic', '--prompt', 'x'])
    assert code == 2 and 'drop --prompt' in capfd.readouterr().err
    code = main(['infer', str(photo)])
    assert code == 2 and '--panoptic' in capfd.readouterr().err

"""The evaluation command on a tiny-random model: every metric is reported, scoring is right."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ros_segcap.models.segcap.config import get_config
from ros_segcap.models.segcap.model import build_model
from ros_segcap.core.types import SegCapResult
from ros_segcap.models.segcap.weights import save_model
from training.data.tabletop import tabletop_sample
from training.evaluate import Evaluator, main as evaluate_main

KEYS = ('referring_ciou', 'referring_giou', 'no_target_acc', 'gcg_ap50', 'gcg_miou',
        'gcg_recall', 'caption_bleu4', 'caption_cider_d', 'caption_attr_acc', 'region_acc',
        'vqa_acc')


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model(get_config('tiny-random'), pretrained=False),
                      tmp_path_factory.mktemp('eval') / 'model')


def test_command_reports_every_metric(tiny_dir, tmp_path, capsys):
    out = tmp_path / 'scores.json'
    evaluate_main(['--model', str(tiny_dir), '--n', '8', '--out', str(out),
                   '--answers', str(tmp_path / 'answers.jsonl')])
    scores = json.loads(out.read_text())
    assert set(KEYS) <= set(scores)
    assert scores['n'] == 8 and scores['split'] == 'test'
    assert len((tmp_path / 'answers.jsonl').read_text().splitlines()) == 8
    assert json.loads(capsys.readouterr().out)['n'] == 8


def test_parity_runs_the_reference_path_on_the_same_samples(tiny_dir, tmp_path):
    """--parity: the default decode path gives the reference's greedy answers (the random
    test LLM has no GGUF, so fast-q4 runs as fast and the scores say so)."""
    out = tmp_path / 'parity.json'
    evaluate_main(['--model', str(tiny_dir), '--n', '6', '--parity', '--out', str(out)])
    scores = json.loads(out.read_text())
    assert scores['decode_path'] == 'fast' and 'answers' not in scores  # fell back
    assert scores['parity']['answer_mismatch'] == 0.0
    assert scores['parity']['delta'] and all(abs(d) < 1e-9
                                             for d in scores['parity']['delta'].values())


def _result(masks, text='', phrases=()):
    return SegCapResult(answer=text, raw_text=text, masks=list(masks), phrases=list(phrases),
                        scores=[1.0] * len(masks))


def test_perfect_answers_score_one():
    ev = Evaluator()
    ref = tabletop_sample('test', 0, 128, 'referring')
    absent = tabletop_sample('test', 1, 128, 'absent')
    region = tabletop_sample('test', 3, 128, 'region')
    ev.update(ref, _result(ref.masks))
    ev.update(absent, _result([]))
    ev.update(region, _result([], region.answer))
    s = ev.scores()
    assert s['referring_ciou'] == 1.0 and s['referring_giou'] == 1.0
    assert s['no_target_acc'] == 1.0 and s['region_acc'] == 1.0
    assert np.isnan(s['gcg_ap50'])


def test_a_mask_for_an_absent_target_is_wrong():
    ev = Evaluator()
    absent = tabletop_sample('test', 1, 128, 'absent')
    ev.update(absent, _result([np.ones((128, 128), bool)]))
    assert ev.scores()['no_target_acc'] == 0.0


def test_decoder_coverage_best_any_and_best_kept():
    """Best IoU per true mask over all queries and over the kept queries only."""
    from training.decoder_eval import best_ious

    truth = np.zeros((2, 8, 8), bool)
    truth[0, :4, :4] = True  # 16 px
    truth[1, 4:, 4:] = True
    pred = np.zeros((3, 8, 8), bool)
    pred[0, :4, :4] = True  # exact on object 0, not kept
    pred[1, :4, :2] = True  # half of object 0, kept
    pred[2, 4:, 4:6] = True  # half of object 1, kept
    got = best_ious(pred, list(truth), kept=[1, 2])
    assert got == [(1.0, 0.5), (0.5, 0.5)]
    assert best_ious(pred, list(truth), kept=[]) == [(1.0, 0.0), (0.5, 0.0)]


def test_decoder_coverage_kind_named_by_the_covering_kept_query():
    from training.decoder_eval import kinds_named

    truth = np.zeros((3, 8, 8), bool)
    truth[0, :4, :4] = True
    truth[1, 4:, 4:] = True
    truth[2, :2, 6:] = True  # no kept query covers it
    pred = np.zeros((3, 8, 8), bool)
    pred[0, :4, :4] = True  # covers object 0, says cup
    pred[1, 4:, 4:] = True  # covers object 1, says cup
    pred[2, 4:, 4:5] = True  # a sliver of object 1, says bowl (not its best cover)
    best_class = ['cup', 'cup', 'bowl']
    got = kinds_named(pred, list(truth), [0, 1, 2], best_class, ['cup', 'bowl', 'cup'])
    assert got == [True, False, None]
    assert kinds_named(pred, list(truth), [], best_class, ['cup', 'bowl', 'cup']) == [None] * 3


def test_decoder_coverage_command_runs(tiny_dir, capsys):
    from training.decoder_eval import main as coverage_main

    coverage_main(['--model', str(tiny_dir), '--n', '2', '--threads', '1'])
    out = json.loads(capsys.readouterr().out)
    assert out['scenes'] == 2 and out['objects'] >= 2
    assert 0.0 <= out['best_kept_iou'] <= out['best_any_iou'] <= 1.0
    assert out['small_objects'] <= out['objects']
    for key in ('point_alone_iou', 'point_iou', 'point_alone_recall50', 'point_recall50'):
        assert 0.0 <= out[key] <= 1.0, key


def test_referring_error_kinds():
    """ok / decoder / no mask / phrase / pointer, from masks and phrases by hand."""
    from training.referring_errors import classify

    truth = np.zeros((8, 8), bool)
    truth[:4, :4] = True
    other = np.zeros((8, 8), bool)
    other[4:, 4:] = True
    covered = [truth.copy(), other]
    assert classify([truth], covered, truth, 'the red cup', ['the red cup']) == 'ok'
    assert classify([other], [other], truth, 'the red cup', ['the red cup']) == 'decoder'
    assert classify([], covered, truth, 'the red cup', []) == 'no mask'
    assert classify([other], covered, truth, 'the red cup', ['the blue cup']) == 'phrase'
    assert classify([other], covered, truth, 'the red cup', ['the red cup']) == 'pointer'


def test_referring_errors_command_counts_every_target(tiny_dir, capsys):
    from training.referring_errors import KINDS, main as errors_main

    errors_main(['--model', str(tiny_dir), '--n', '2', '--threads', '1'])
    out = json.loads(capsys.readouterr().out)
    truth = [tabletop_sample('test', i, (480, 640), 'referring') for i in (0, 4)]
    assert out['targets'] == sum(len(s.masks) for s in truth) >= 2
    assert sum(out[k] for k in KINDS) == out['targets']
    assert len(out['examples']) == out['targets'] - out['ok']
    forms = out['by_form'].values()
    assert sum(f['samples'] for f in forms) == 2
    assert sum(f['targets'] for f in forms) == out['targets']
    assert sum(f['ok'] for f in forms) == out['ok']
    assert all(0.0 <= f['ciou'] <= 1.0 for f in forms)
    errors_main(['--model', str(tiny_dir), '--n', '1', '--seed-offset', '7', '--threads', '1'])
    moved = json.loads(capsys.readouterr().out)
    assert moved['seed_offset'] == 7
    assert moved['targets'] == len(tabletop_sample('test', 0, (480, 640), 'referring', 7).masks)


def test_plain_requests_pick_a_unique_object_and_a_near_miss():
    from training.plain_requests import pick_requests
    from ros_segcap.world import COLOUR_NAMES

    pairs = [('red', 'cup'), ('red', 'cup'), ('blue', 'cup'), ('green', 'ball')]
    for seed in range(20):
        k, absent = pick_requests(pairs, np.random.default_rng(seed), COLOUR_NAMES)
        assert k in (2, 3)  # the two red cups are ambiguous
        assert absent[1] == pairs[k][1] and absent not in pairs and absent[0] in COLOUR_NAMES
    assert pick_requests([('red', 'cup')] * 2, np.random.default_rng(0),
                         COLOUR_NAMES) == (None, None)
    # the near miss comes from the colour words given (a world's own)
    k, absent = pick_requests([('red', 'cup')], np.random.default_rng(0), ('red', 'grey'))
    assert (k, absent) == (0, ('grey', 'cup'))


def test_plain_kind_requests_pick_a_unique_kind_and_one_the_scene_lacks():
    from training.plain_requests import pick_kind_requests

    kinds = ['cup', 'cup', 'bowl', 'ball']
    for seed in range(20):
        k, absent = pick_kind_requests(kinds, np.random.default_rng(seed),
                                       ('cup', 'bowl', 'ball', 'mug', 'vase'))
        assert k in (2, 3) and absent in ('mug', 'vase')
    assert pick_kind_requests(['cup', 'cup'], np.random.default_rng(0), ('cup',)) == (None, None)
    assert pick_kind_requests(['cup'], np.random.default_rng(0), ('cup',)) == (0, None)


@pytest.mark.parametrize('form', ['colour_kind', 'kind'])
def test_plain_requests_command(tiny_dir, capsys, form):
    from training.plain_requests import main as plain_main

    plain_main(['--model', str(tiny_dir), '--n', '3', '--threads', '1', '--form', form,
                '--no-check-presence'])
    out = json.loads(capsys.readouterr().out)
    assert (out['form'], out['check_presence']) == (form, False)
    assert 1 <= out['present'] <= 3 and out['absent'] <= out['present']
    assert 0.0 <= out['present_iou50'] <= 1.0 and 0.0 <= out['present_no_mask'] <= 1.0


def test_recall_by_size_bins_every_object_once():
    from training.decoder_eval import SIZE_BINS, recall_by_size

    ious = np.array([0.9, 0.2, 0.7, 0.6, 0.1])
    pixels = np.array([100, 400, 1200, 5000, 200000])
    out = recall_by_size(ious, pixels)
    assert list(out) == [name for name, _ in SIZE_BINS]
    assert out['tiny'] == dict(pixels='0-500', objects=2, recall50=0.5)
    assert out['small']['recall50'] == 1.0 and out['medium']['recall50'] == 1.0
    assert out['large']['recall50'] == 0.0
    assert sum(v['objects'] for v in out.values()) == len(ious)


def test_diagnostics_take_the_varied_world_and_its_held_out_styles(tiny_dir, capsys):
    from training.decoder_eval import main as coverage_main
    from training.plain_requests import main as plain_main

    coverage_main(['--model', str(tiny_dir), '--n', '2', '--threads', '1', '--world', 'varied',
                   '--styles', 'held_out'])
    out = json.loads(capsys.readouterr().out)
    assert (out['world'], out['styles']) == ('varied', 'held_out')
    by_size = out['best_kept_recall50_by_size']
    assert sum(v['objects'] for v in by_size.values()) == out['objects'] >= 1
    plain_main(['--model', str(tiny_dir), '--n', '4', '--threads', '1', '--world', 'varied'])
    out = json.loads(capsys.readouterr().out)
    assert out['world'] == 'varied' and out['present'] >= 1
    assert out['present_ciou'] is None or 0.0 <= out['present_ciou'] <= 1.0
    with pytest.raises(SystemExit):
        plain_main(['--model', str(tiny_dir), '--styles', 'held_out'])  # default world


def test_photo_outlines_and_report(tiny_dir, tmp_path, capsys):
    from training.photos import PHOTOS, load_photos, main as photos_main, polygon_mask

    square = polygon_mask([[2, 2], [6, 2], [6, 6], [2, 6]], 10, 12)
    assert square.shape == (10, 12) and square.sum() == 25 and square[4, 4] and not square[0, 0]
    entries = json.loads(PHOTOS.read_text())['photos']
    assert len(entries) >= 5 and sum(len(e['objects']) for e in entries) >= 6
    listing = tmp_path / 'photos.json'
    coffee = next(e for e in entries if e['image'] == 'skimage:coffee')
    listing.write_text(json.dumps({'photos': [coffee, dict(coffee, image='opencv:nope.jpg')]}))
    found, missing = load_photos(listing)
    assert [p['image'] for p in found] == ['skimage:coffee'] and missing == ['opencv:nope.jpg']
    cup = polygon_mask(coffee['objects'][0]['polygon'], *found[0]['pixels'].shape[:2])
    assert 0.1 < cup.mean() < 0.5  # the cup covers part of the photo, not all of it
    sheet = tmp_path / 'sheet.png'
    photos_main(['--model', str(tiny_dir), '--photos', str(listing), '--sheet', str(sheet),
                 '--threads', '1'])
    captured = capsys.readouterr()
    assert 'opencv:nope.jpg is not installed' in captured.err
    out = json.loads(captured.out)
    assert (out['n_objects'], out['n_absent']) == (1, 1) and len(out['rows']) == 2
    assert 0.0 <= out['found'] <= 1.0 and out['no_target_acc'] in (0.0, 1.0)
    assert sheet.is_file() and sheet.stat().st_size > 1000
    listing.write_text(json.dumps({'photos': [dict(coffee, image='opencv:nope.jpg')]}))
    with pytest.raises(SystemExit) as stop:
        photos_main(['--model', str(tiny_dir), '--photos', str(listing)])
    assert stop.value.code == 2
    for text in ('[1]', '{"photos": 3}', 'not json'):  # a broken listing: one line, exit 2
        listing.write_text(text)
        with pytest.raises(SystemExit) as stop:
            photos_main(['--model', str(tiny_dir), '--photos', str(listing)])
        assert stop.value.code == 2 and 'photos.json' in capsys.readouterr().err


def test_region_accuracy_per_kind_of_question():
    """Each region sample also counts for its kind of question (name, colour, describe ...)."""
    from training.evaluate import region_question

    assert region_question('What colour is <region>?') == 'colour'
    assert region_question('what is  <mark>?') == 'name'
    assert region_question('Which is closer to the camera, <region> or <mark>?') == 'closer'
    assert region_question('How big is <region>?') == 'other'
    ev = Evaluator()
    samples = [tabletop_sample('test', i, 128, 'region') for i in range(12)]
    kinds = [region_question(s.question) for s in samples]
    assert len(set(kinds)) >= 2  # several kinds among the samples
    wrong = kinds[0]  # every sample of the first sample's kind answered wrongly
    for sample, kind in zip(samples, kinds):
        ev.update(sample, _result([], 'no idea.' if kind == wrong else sample.answer))
    by = ev.scores()['region_by_question']
    assert by[wrong] == {'acc': 0.0, 'n': kinds.count(wrong)}
    assert all(v['acc'] == 1.0 for k, v in by.items() if k != wrong)
    assert sum(v['n'] for v in by.values()) == 12


def test_tasks_option_asks_only_those_tasks(tiny_dir, tmp_path, capsys):
    out = tmp_path / 'region.json'
    evaluate_main(['--model', str(tiny_dir), '--n', '4', '--tasks', 'region', '--out', str(out)])
    scores = json.loads(out.read_text())
    assert scores['n_region'] == 4 and scores['n_referring'] == 0 and scores['n_gcg'] == 0
    assert sum(v['n'] for v in scores['region_by_question'].values()) == 4
    with pytest.raises(SystemExit):
        evaluate_main(['--model', str(tiny_dir), '--n', '4', '--tasks', 'region,riddles'])
    assert 'unknown riddles' in capsys.readouterr().err

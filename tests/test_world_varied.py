"""Tests of the varied (domain-randomised) world: exact masks, coverage, held-out styles,
determinism, colour words, and the default world left byte-identical."""
from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from ros_segcap.world import TASKS, TabletopCamera, annotate, render, sample_scene
from ros_segcap.world.render import BACKGROUND_ID, FIRST_OBJECT_ID, TABLE_ID
from ros_segcap.world.varied import (COLOUR_NAMES, COLOUR_WORDS, KINDS, STYLE_SPLIT,
                                     render_varied, sample_varied_scene, sample_varied_split,
                                     style_families)
from training.data.tabletop import tabletop_sample

N_SPECS = 300


def _digest(*arrays) -> str:
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


# ---------------------------------------------------------------- the default world is unchanged

# Hashed before the varied world existed: (seed, (H, W)) -> image + panoptic digest.
DEFAULT_RENDERS = {(0, (96, 128)): '8205ea044a8736fd', (7, (240, 320)): 'fad6c352022e944e',
                   (2_000_003, (480, 640)): '15f5a93acbc70521'}
# The same where Debian's opencv-doc is installed: these scenes have an opencv photo behind
# the table, which is a plain wall without it (hashed with the same code, opencv-doc 4.6).
WITH_OPENCV_PHOTOS = {(2_000_003, (480, 640)): 'dc0a9b842c8e533a',
                      'referring': 'd99305458e2ae0fd', 'absent': '070faef0288be393',
                      'gcg': '1cc9347266cb294f', 'region': '6b274800d5561e4b',
                      'caption': '070faef0288be393', 'vqa': '070faef0288be393',
                      'panoptic': 'b5ddcbbc599a2ad9'}


def _expected(key, digest: str) -> str:
    from ros_segcap.world.backdrops import backdrop_photo
    installed = backdrop_photo('opencv:fruits.jpg') is not None
    return WITH_OPENCV_PHOTOS.get(key, digest) if installed else digest


# tabletop_sample('test', 5, (120, 160), task): (image + masks digest, question + answer digest)
DEFAULT_SAMPLES = {
    'referring': ('4314868e711058d5', 'd2c19841804002d1'),
    'absent': ('a22a471cf1a17b53', 'e14180db3123fcb8'),
    'gcg': ('f6d8ff2e02fd8720', 'ef636672b8610f18'),
    'region': ('b449324ce668c8bc', '53ea7a66d7780e41'),
    'caption': ('a22a471cf1a17b53', '8e650f786e67e0b0'),
    'vqa': ('a22a471cf1a17b53', 'ff3e8b143b8b4995'),
    'panoptic': ('b7d8f41d795c2574', '2c2f18f1ad072994'),
}


def test_default_world_renders_are_byte_identical():
    for (seed, hw), digest in DEFAULT_RENDERS.items():
        scene = render(sample_scene(seed), *hw)
        assert _digest(scene.image, scene.panoptic) == _expected((seed, hw), digest), (seed, hw)
    camera = TabletopCamera(120, 160, seed=4)
    assert _digest(*[camera.read().image for _ in range(3)]) == '48425516a4e8cf12'


def test_default_world_samples_are_byte_identical():
    for task, (pixels, text) in DEFAULT_SAMPLES.items():
        s = tabletop_sample('test', 5, (120, 160), task)
        assert _digest(s.image, *s.masks) == _expected(task, pixels), task
        assert hashlib.sha256((s.question + s.answer).encode()).hexdigest()[:16] == text, task


# ---------------------------------------------------------------- exact annotations

def _silhouette(spec, i: int, h: int, w: int) -> np.ndarray:
    alone = dataclasses.replace(spec, objects=(spec.objects[i],))
    return render_varied(alone, h, w, effects=False).panoptic == FIRST_OBJECT_ID


@pytest.mark.parametrize('styles', ['train', 'held_out'])
def test_masks_are_silhouettes_in_painters_order(styles):
    h, w = 150, 200
    for index in range(10):
        spec = sample_varied_split('test', index, styles, aspect=w / h)
        depths = [o.depth for o in spec.objects]
        assert depths == sorted(depths, reverse=True)  # farthest first
        scene = render_varied(spec, h, w)
        # expected panoptic: the empty table, then every full silhouette, farthest first,
        # so each pixel belongs to the nearest object covering it
        expected = render_varied(dataclasses.replace(spec, objects=()), h, w).panoptic.copy()
        assert set(np.unique(expected)) <= {BACKGROUND_ID, TABLE_ID}
        for i in range(len(spec.objects)):
            expected[_silhouette(spec, i, h, w)] = FIRST_OBJECT_ID + i
        np.testing.assert_array_equal(scene.panoptic, expected)


def test_visible_objects_have_masks_and_annotations_point_at_them():
    for index in range(12):
        sample_spec = sample_varied_split('test', index, 'train', aspect=4 / 3)
        scene = render_varied(sample_spec, 240, 320)
        areas = scene.instance_masks().reshape(len(scene.objects), -1).sum(axis=1)
        assert (areas > 0).all(), (index, areas)
        ann = annotate(scene, 'referring', np.random.default_rng(index), fixed=True)
        assert ann.seg_ids == tuple(FIRST_OBJECT_ID + i for i in ann.ref.targets)
        named = [scene.objects[i] for i in ann.ref.targets]
        assert all(ann.ref.kind in (None, o.kind) and ann.ref.colour in (None, o.colour)
                   for o in named)
        masks, classes = scene.panoptic_segments()
        assert len(masks) == len(classes) and (masks.sum(axis=(1, 2)) > 0).all()


@pytest.mark.parametrize('task', TASKS)
def test_every_task_makes_a_checked_sample(task):
    s = tabletop_sample('test', 2, (96, 128), task, world='varied', styles='held_out')
    assert s.source.startswith('varied-held_out/test/')
    assert all(m.any() for m in s.masks)


# ---------------------------------------------------------------- coverage and held-out styles

def test_kinds_colours_and_styles_cover_the_brief():
    assert len(KINDS) >= 20
    assert {'red', 'green', 'blue', 'yellow', 'orange', 'purple', 'pink', 'white', 'black',
            'brown', 'grey'} <= set(COLOUR_NAMES)
    specs = [sample_varied_scene(s) for s in range(N_SPECS)]
    objects = [o for sp in specs for o in sp.objects]
    assert {o.kind for o in objects} == set(KINDS)
    assert {o.colour for o in objects} == set(COLOUR_NAMES)
    assert {'plain', 'dots', 'stripes', 'checks', 'photo', 'metallic', 'glass'} <= {
        o.finish for o in objects}
    widths = [o.width * 3 / 4 for o in objects]  # fraction of the image width (4:3)
    assert min(widths) < 0.02 and max(widths) > 0.3
    counts = [len(sp.objects) for sp in specs]
    assert min(counts) == 1 and max(counts) >= 10
    pitches = [sp.camera.pitch for sp in specs]
    assert min(pitches) < 20 and max(pitches) > 75
    assert {sp.shading for sp in specs} == set(style_families('shading', 'train'))
    assert {sp.light.shadows for sp in specs} == {True, False}


def _held_out() -> dict[str, set[str]]:
    return {axis: {f for f, s in table.items() if s == 'held_out'}
            for axis, table in STYLE_SPLIT.items()}


def test_held_out_families_never_in_train_draws_and_all_in_held_out_draws():
    held = _held_out()
    assert all(held.values()) and all(set(t) - held[a] for a, t in STYLE_SPLIT.items())
    seen: dict[str, set[str]] = {axis: set() for axis in held}
    for s in range(N_SPECS):
        for axis, names in sample_varied_scene(s, 'train').family_names().items():
            assert not names & held[axis], (s, axis, names)
        for axis, names in sample_varied_scene(s, 'held_out').family_names().items():
            assert names <= held[axis], (s, axis, names)
            seen[axis] |= names
    assert seen == held
    for split in ('train', 'val'):
        with pytest.raises(ValueError, match='never drawn'):
            sample_varied_split(split, 0, 'held_out')
        with pytest.raises(ValueError, match='never drawn'):
            tabletop_sample(split, 0, 64, world='varied', styles='held_out')
    with pytest.raises(ValueError, match='unknown styles'):
        sample_varied_scene(0, 'test')


def test_deterministic_for_a_seed():
    a, b = sample_varied_scene(42), sample_varied_scene(42)
    assert a == b
    ra, rb = render_varied(a, 120, 160), render_varied(b, 120, 160)
    assert np.array_equal(ra.image, rb.image) and np.array_equal(ra.panoptic, rb.panoptic)
    assert sample_varied_scene(43) != a and sample_varied_scene(42, 'held_out') != a
    s1 = tabletop_sample('test', 1, 96, 'gcg', world='varied')
    s2 = tabletop_sample('test', 1, 96, 'gcg', world='varied')
    assert np.array_equal(s1.image, s2.image) and s1.answer == s2.answer


# ---------------------------------------------------------------- colour words vs pixels

def _matches(word: str, rgb: np.ndarray) -> bool:
    hue, sat, val = colorsys.rgb_to_hsv(*(rgb / 255.0))
    hue *= 360.0
    if word == 'white':
        return sat < 0.2 and val > 0.55
    if word == 'black':
        return val < 0.3
    if word == 'grey':
        return sat < 0.2 and 0.2 < val < 0.75
    lo, hi = COLOUR_WORDS[word][0]
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 15.0  # 15 degrees of tolerance
    dist = abs((hue - centre + 180.0) % 360.0 - 180.0)
    return dist <= half and sat > 0.25 and (word != 'brown' or val < 0.6)


def test_colour_words_match_the_rendered_hue_of_plain_objects():
    checked, wrong = 0, []
    for s in range(60):
        spec = sample_varied_scene(s)
        if spec.shading not in ('flat', 'shaded', 'glossy', 'textured'):
            continue
        scene = render_varied(spec, 240, 320)
        for i, o in enumerate(spec.objects):
            mask = scene.mask(i)
            if o.finish != 'plain' or o.kind == 'sponge' or mask.sum() < 150:
                continue
            rgb = np.median(scene.image[mask].astype(np.float64), axis=0)
            checked += 1
            if not _matches(o.colour, rgb):
                wrong.append((s, o.kind, o.colour, rgb.round().tolist()))
    assert checked > 60
    assert len(wrong) <= 0.05 * checked, wrong


# ---------------------------------------------------------------- evaluation on the varied world

def test_evaluate_reports_per_kind_and_colour_on_held_out_styles(tmp_path, capsys):
    torch = pytest.importorskip('torch')
    from ros_segcap.models.segcap.config import get_config
    from ros_segcap.models.segcap.model import build_model
    from ros_segcap.models.segcap.weights import save_model
    from training.evaluate import main as evaluate_main
    torch.manual_seed(0)
    model = save_model(build_model(get_config('tiny-random'), pretrained=False),
                       tmp_path / 'model')
    evaluate_main(['--model', str(model), '--n', '8', '--world', 'varied', '--styles',
                   'held_out'])
    scores = json.loads(capsys.readouterr().out)
    assert scores['world'] == 'varied' and scores['styles'] == 'held_out'
    kinds = set(scores['by_kind'])
    assert kinds and kinds <= set(KINDS)
    assert set(scores['by_colour']) <= set(COLOUR_NAMES)
    row = next(iter(scores['by_kind'].values()))
    assert any(k.startswith('n_') and v > 0 for k, v in row.items())
    with pytest.raises(SystemExit):
        evaluate_main(['--model', str(model), '--split', 'val', '--world', 'varied',
                       '--styles', 'held_out'])

"""Tests of the procedural tabletop world (ros_segcap.world) and its training adapter."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from ros_segcap.world import (CLASS_NAMES, SPLITS, TASKS, TabletopCamera, annotate, render,
                              sample_scene, seed_split, split_seed)
from ros_segcap.world.palette import COLOUR_NAMES, KINDS, ORDINALS, PLURALS, kind_class
from ros_segcap.world.refer import (AREA_RATIO, DEPTH_MARGIN, LATERAL, LATERAL_MARGIN, X_MARGIN,
                                    absent_expressions, describe, referring_expressions)
from ros_segcap.world.render import BACKGROUND_ID, FIRST_OBJECT_ID, TABLE_ID
from training.data.tabletop import TabletopDataset, tabletop_sample, tabletop_samples

SIZES = [(64, 64), (96, 128), (240, 320), (512, 512), (480, 640), (600, 400)]


# ---------------------------------------------------------------- determinism and splits

def test_same_seed_same_scene_image_and_annotations():
    a, b = sample_scene(123), sample_scene(123)
    assert a == b
    ra, rb = render(a, 200, 260), render(b, 200, 260)
    assert np.array_equal(ra.image, rb.image) and np.array_equal(ra.panoptic, rb.panoptic)
    for task in TASKS:
        x = annotate(ra, task, np.random.default_rng(5))
        y = annotate(rb, task, np.random.default_rng(5))
        assert (x.question, x.answer, x.seg_ids) == (y.question, y.answer, y.seg_ids)
    s1 = list(tabletop_samples('train', 7, 96))
    s2 = list(tabletop_samples('train', 7, 96))
    for p, q in zip(s1, s2):
        assert (p.question, p.answer, p.source) == (q.question, q.answer, q.source)
        assert np.array_equal(p.image, q.image)


def test_different_seeds_differ():
    specs = [sample_scene(s) for s in range(20)]
    assert len({tuple((o.kind, o.colour, round(o.x, 6)) for o in s.objects) for s in specs}) == 20


def test_split_ranges_never_overlap():
    ranges = sorted(SPLITS.values())
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:]):
        assert lo1 < hi1 <= lo2 < hi2
    for name, (lo, hi) in SPLITS.items():
        assert split_seed(name, 0) == lo and split_seed(name, hi - lo - 1) == hi - 1
        assert seed_split(lo) == name and seed_split(hi - 1) == name
        with pytest.raises(ValueError):
            split_seed(name, hi - lo)
        with pytest.raises(ValueError):
            split_seed(name, -1)
    with pytest.raises(ValueError):
        split_seed('validation', 0)
    with pytest.raises(ValueError):
        TabletopDataset('val', SPLITS['val'][1] - SPLITS['val'][0] + 1)


def test_dataset_seeds_are_disjoint_across_splits():
    seeds = {}
    for split in SPLITS:
        ds = TabletopDataset(split, 14, 64)
        seeds[split] = {int(ds[i].source.split('/')[2]) for i in range(len(ds))}
        assert all(seed_split(s) == split for s in seeds[split])
    assert not seeds['train'] & seeds['val'] and not seeds['val'] & seeds['test']
    assert not seeds['train'] & seeds['test']


# ---------------------------------------------------------------- rendering and masks

@pytest.mark.parametrize('hw', SIZES)
def test_render_sizes_and_masks_match_panoptic(hw):
    h, w = hw
    for seed in range(6):
        scene = render(sample_scene(seed), h, w)
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        assert scene.panoptic.shape == (h, w)
        masks = scene.instance_masks()
        assert masks.shape == (len(scene.objects), h, w)
        assert masks.sum(axis=0).max() <= 1  # instances never overlap
        for i in range(len(scene.objects)):
            assert np.array_equal(masks[i], scene.panoptic == FIRST_OBJECT_ID + i)
        ids = set(np.unique(scene.panoptic).tolist())
        assert ids <= {BACKGROUND_ID, TABLE_ID} | {FIRST_OBJECT_ID + i
                                                   for i in range(len(scene.objects))}
        pm, pc = scene.panoptic_segments()
        assert pm.sum(axis=0).min() == 1 and pm.sum(axis=0).max() == 1  # a partition
        assert all(0 <= c < len(CLASS_NAMES) for c in pc)
        if min(h, w) >= 96:  # objects stay visible (partial occlusion only)
            assert masks.reshape(len(masks), -1).any(axis=1).all()


def test_panoptic_classes_are_kinds():
    scene = render(sample_scene(42, 6), 128, 128)
    pm, pc = scene.panoptic_segments()
    expected = [0, 1] + [kind_class(o.kind) for o in scene.objects]
    assert pc.tolist() == expected[:len(pc)] and len(pc) == len(expected)
    assert [CLASS_NAMES[c] for c in pc[2:]] == [o.kind for o in scene.objects]


def test_painters_order_and_partial_occlusion():
    for seed in range(30):
        spec = sample_scene(seed)
        depths = [o.depth for o in spec.objects]
        assert depths == sorted(depths, reverse=True)  # farthest first
        assert 1 <= len(spec.objects) <= 8
        scene = render(spec, 256, 256, noise=False)
        for i, o in enumerate(spec.objects):
            visible = scene.mask(i).sum() / (256 * 256)
            assert visible > 0.35 * o.area, (seed, i, o.kind)


def test_kinds_and_colours_cover_the_brief():
    assert len(KINDS) >= 8 and len(COLOUR_NAMES) >= 8
    seen = {(o.kind, o.colour) for s in range(300) for o in sample_scene(s).objects}
    assert {k for k, _ in seen} == set(KINDS) and {c for _, c in seen} == set(COLOUR_NAMES)


# ---------------------------------------------------------------- referring expressions

def _parse_noun(words: str, plural: bool):
    parts = words.split()
    colour = parts[0] if len(parts) == 2 else None
    head = parts[-1]
    singular = {v: k for k, v in PLURALS.items()} | {'objects': 'object'}
    kind = singular.get(head, head) if plural else head
    assert colour is None or colour in COLOUR_NAMES, words
    assert kind == 'object' or kind in KINDS, words
    return colour, None if kind == 'object' else kind


def _members(objs, colour, kind):
    return [i for i, o in enumerate(objs)
            if colour in (None, o.colour) and kind in (None, o.kind)]


def _unique_arg(objs, members, key):
    vals = sorted((key(objs[i]), i) for i in members)
    assert len(vals) >= 2 and vals[0][0] < vals[1][0]
    return vals[0][1], vals[1][0] - vals[0][0]


RELS = '(to the left of|to the right of|in front of|behind)'
EXTREMES = 'leftmost|rightmost|nearest|farthest|largest|smallest'


def _resolve(objs, text):
    """Independently recompute the targets of an expression with strict comparisons."""
    if m := re.fullmatch(r'all the (.+)', text):
        return sorted(_members(objs, *_parse_noun(m[1], True)))
    if m := re.fullmatch(rf'the ({EXTREMES}) (.+)', text):
        members = _members(objs, *_parse_noun(m[2], False))
        key, margin = {'leftmost': (lambda o: o.x, X_MARGIN),
                       'rightmost': (lambda o: -o.x, X_MARGIN),
                       'nearest': (lambda o: o.depth, DEPTH_MARGIN),
                       'farthest': (lambda o: -o.depth, DEPTH_MARGIN),
                       'largest': (lambda o: -np.log(o.area), np.log(AREA_RATIO)),
                       'smallest': (lambda o: np.log(o.area), np.log(AREA_RATIO))}[m[1]]
        best, gap = _unique_arg(objs, members, key)
        assert gap >= margin - 1e-9, text
        return [best]
    if m := re.fullmatch(r'the (.+) on the (left|right)', text):
        members = _members(objs, *_parse_noun(m[1], False))
        assert len(members) == 2
        return [_unique_arg(objs, members, lambda o: o.x if m[2] == 'left' else -o.x)[0]]
    if m := re.fullmatch(r'the (.+) closest to the camera', text):
        return [_unique_arg(objs, _members(objs, *_parse_noun(m[1], False)),
                            lambda o: o.depth)[0]]
    if m := re.fullmatch(rf'the ({"|".join(ORDINALS)}) (.+) from the (left|right)', text):
        members = _members(objs, *_parse_noun(m[2], False))
        order = sorted(members, key=lambda i: objs[i].x if m[3] == 'left' else -objs[i].x)
        return [order[ORDINALS.index(m[1])]]
    if m := re.fullmatch(rf'the (.+?) {RELS} (the .+)', text):
        (a,) = _resolve(objs, m[3])
        t, rel = m[1], m[2]
        mid = LATERAL + LATERAL_MARGIN / 2
        test = {'to the left of': lambda o: o.x < objs[a].x,
                'to the right of': lambda o: o.x > objs[a].x,
                'in front of': lambda o: o.depth < objs[a].depth and abs(o.x - objs[a].x) < mid,
                'behind': lambda o: o.depth > objs[a].depth and abs(o.x - objs[a].x) < mid}[rel]
        return [i for i in _members(objs, *_parse_noun(t, False)) if i != a and test(objs[i])]
    if m := re.fullmatch(r'the (.+)', text):
        return _members(objs, *_parse_noun(m[1], False))
    raise AssertionError(f'unparsed expression {text!r}')


def test_every_expression_picks_exactly_its_targets():
    forms = set()
    for seed in range(250):
        objs = sample_scene(seed).objects
        refs = referring_expressions(objs)
        for ref in refs:
            forms.add(ref.form)
            assert sorted(_resolve(objs, ref.text)) == sorted(ref.targets), (seed, ref)
            assert len(ref.targets) == 1 or ref.plural
            assert not ref.plural or len(ref.targets) >= 2
        for i in range(len(objs)):
            text = describe(objs, i, refs)
            if len(_members(objs, objs[i].colour, objs[i].kind)) == 1:
                assert _resolve(objs, text) == [i], (seed, text)
    assert forms == {'unique', 'extreme', 'ordinal', 'relation', 'plural'}


def test_absent_targets_are_really_absent():
    for seed in range(100):
        objs = sample_scene(seed).objects
        for ref in absent_expressions(objs):
            assert ref.targets == () and _resolve(objs, ref.text) == [], (seed, ref.text)
        scene = render(sample_scene(seed), 64, 64, noise=False)
        ann = annotate(scene, 'absent', np.random.default_rng(seed))
        assert '[SEG]' not in ann.answer and not ann.seg_ids and '<p>' not in ann.answer
        assert _resolve(objs, ann.ref.text) == []


def test_referring_answer_masks_are_the_targets():
    for seed in range(60):
        scene = render(sample_scene(seed), 96, 96, noise=False)
        ann = annotate(scene, 'referring', np.random.default_rng(seed), fixed=True)
        assert ann.question == f'Please segment {ann.ref.text} in this image.'
        assert ann.seg_ids == tuple(FIRST_OBJECT_ID + i for i in ann.ref.targets)
        assert ann.answer.count('[SEG]') == ann.answer.count('<p>') == len(ann.seg_ids)
        if not ann.ref.plural:
            assert ann.answer == f'<p> {ann.ref.text} </p> [SEG].'


def test_gcg_mentions_every_object_and_the_table():
    for seed in range(40):
        scene = render(sample_scene(seed), 64, 64, noise=False)
        ann = annotate(scene, 'gcg', np.random.default_rng(0), fixed=True)
        assert ann.question.startswith('Could you please give me a detailed description')
        n = len(scene.objects)
        assert sorted(ann.seg_ids) == [TABLE_ID] + [FIRST_OBJECT_ID + i for i in range(n)]
        phrases = re.findall(r'<p> (.+?) </p> \[SEG\]', ann.answer)
        assert len(phrases) == n + 1 and phrases[-1] == scene.spec.table_name
        for sid, phrase in zip(ann.seg_ids[:-1], phrases):
            o = scene.objects[sid - FIRST_OBJECT_ID]
            assert phrase == f'{o.colour} {o.kind}'


def test_region_prompts_hit_their_objects():
    n_pair = 0
    for seed in range(80):
        scene = render(sample_scene(seed), 128, 160)
        ann = annotate(scene, 'region', np.random.default_rng(seed), fixed=seed % 2 == 0)
        if ann.task != 'region':
            continue
        n_pair += len(ann.prompts) == 2
        assert len(ann.prompts) == ann.question.count('<region>') + ann.question.count('<mark>')
        for p, i in zip(ann.prompts, ann.extra['objects']):
            mask = scene.mask(i)
            assert p.seg_id == FIRST_OBJECT_ID + i
            if p.kind == 'point':
                assert mask[int(p.point[1]), int(p.point[0])]
            elif p.kind == 'box':
                ys, xs = np.nonzero(mask)
                assert p.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            else:
                assert np.array_equal(p.mask, mask)
        if 'What colour' in ann.question:
            assert ann.answer == f'It is {scene.objects[ann.extra["objects"][0]].colour}.'
    assert n_pair > 0


def test_vqa_counts_are_right():
    words = ['no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight']
    for seed in range(80):
        scene = render(sample_scene(seed), 64, 64, noise=False)
        ann = annotate(scene, 'vqa', np.random.default_rng(seed))
        assert '[SEG]' not in ann.answer
        if ann.question == 'How many objects are on the table?':
            assert words[len(scene.objects)] in ann.answer.split()


# ---------------------------------------------------------------- samples

@pytest.mark.parametrize('split', ['train', 'val'])
def test_samples_check_for_every_task(split):
    from ros_segcap.core.types import VisualPrompt
    h, w = 96, 128
    counts = dict.fromkeys(TASKS, 0)
    for s in tabletop_samples(split, 3 * len(TASKS), (h, w)):
        s.check()
        counts[s.task] += 1
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert all(m.shape == (h, w) and m.dtype == bool and m.any() for m in s.masks)
        assert s.answer.count('<p>') == s.answer.count('</p>') == s.answer.count('[SEG]')
        for p in s.prompts:
            assert isinstance(p, VisualPrompt)
            p.validate(h, w)
        assert s.panoptic_masks.shape[1:] == (h, w)
        assert len(s.panoptic_masks) == len(s.panoptic_classes)
    assert counts['region'] > 0 and counts['referring'] == 3


def test_sample_for_one_task_and_bad_task():
    from training.data.sample import TASKS as SAMPLE_TASKS
    assert TASKS == SAMPLE_TASKS
    s = tabletop_sample('test', 3, 64, task='gcg')
    assert s.task == 'gcg' and s.source == f'tabletop/test/{SPLITS["test"][0] + 3}/gcg'
    with pytest.raises(ValueError):
        list(tabletop_samples('train', 1, 64, tasks=['segmentation']))


# ---------------------------------------------------------------- camera and imports

def test_camera_streams_slowly_changing_frames():
    cam = TabletopCamera(96, 128, seed=4, scene_period=6, nudge_period=2)
    frames = [cam.read() for _ in range(8)]
    assert all(f.image.shape == (96, 128, 3) and f.panoptic.shape == (96, 128) for f in frames)
    assert frames[0].spec.seed == 4 and frames[6].spec.seed == 5
    diff = np.abs(frames[1].image.astype(int) - frames[0].image.astype(int)).mean()
    assert 0 < diff < 40  # jitter and noise, not a new scene
    it = cam.frames()
    assert next(it).shape == (96, 128, 3)
    other = TabletopCamera(96, 128, seed=4, scene_period=6, nudge_period=2)
    assert np.array_equal(other.read().panoptic, frames[0].panoptic)


def test_world_imports_neither_torch_nor_ros():
    code = ('import sys, ros_segcap.world, ros_segcap.world.annotate; '
            'bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "rclpy", "training")]; '
            'sys.exit(1 if bad else 0)')
    assert subprocess.run([sys.executable, '-c', code]).returncode == 0

"""Real-format dataset loaders, on small files in each format written by the tests."""
import json
import os
import pickle

import cv2
import numpy as np
from pycocotools import mask as mask_utils
import pytest

from training.data.coco_panoptic import load_coco_panoptic
from training.data.common import DataFormatError, GCG_QUESTION
from training.data.grandf import load_gcg
from training.data.llava import load_llava
from training.data.refcoco import load_refcoco

H1, W1 = 40, 60
H2, W2 = 30, 50


def _write_image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}


def _uncompressed_rle(mask):
    flat = mask.astype(np.uint8).flatten(order='F')
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {'size': list(mask.shape), 'counts': counts}


def _disc(h, w, center, radius):
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, center, radius, 1, -1)
    return mask.astype(bool)


def _poly_mask(poly, h, w):
    return mask_utils.decode(mask_utils.frPyObjects([poly], h, w))[..., 0].astype(bool)


POLY = [10.0, 5.0, 30.0, 5.0, 30.0, 20.0, 10.0, 20.0]


@pytest.fixture
def refcoco_dir(tmp_path):
    images = tmp_path / 'train2014'
    images.mkdir()
    _write_image(images / 'COCO_train2014_1.png', H1, W1, 0)
    _write_image(images / 'COCO_train2014_2.png', H2, W2, 1)
    disc = _disc(H1, W1, (45, 25), 8)
    crowd = _disc(H2, W2, (20, 15), 6)
    instances = {
        'images': [{'id': 1, 'file_name': 'COCO_train2014_1.png', 'height': H1, 'width': W1},
                   {'id': 2, 'file_name': 'COCO_train2014_2.png', 'height': H2, 'width': W2}],
        'annotations': [
            {'id': 101, 'image_id': 1, 'segmentation': [POLY], 'iscrowd': 0},
            {'id': 102, 'image_id': 1, 'segmentation': _rle(disc), 'iscrowd': 0},
            {'id': 201, 'image_id': 2, 'segmentation': _uncompressed_rle(crowd), 'iscrowd': 1}],
        'categories': [{'id': 1, 'name': 'cup'}]}
    refs = [
        {'ref_id': 1, 'ann_id': 101, 'image_id': 1, 'split': 'train',
         'sentences': [{'sent': 'left box', 'sent_id': 10},
                       {'sent': 'the  grey box', 'sent_id': 11}]},
        {'ref_id': 2, 'ann_id': 102, 'image_id': 1, 'split': 'val',
         'sentences': [{'sent': 'round thing', 'sent_id': 12}]},
        {'ref_id': 3, 'ann_id': 201, 'image_id': 2, 'split': 'testA',
         'sentences': [{'sent': 'crowd', 'sent_id': 13}]}]
    (tmp_path / 'instances.json').write_text(json.dumps(instances))
    with open(tmp_path / 'refs(unc).p', 'wb') as f:
        pickle.dump(refs, f, protocol=2)
    (tmp_path / 'refs.json').write_text(json.dumps(refs))
    return tmp_path, {'disc': disc, 'crowd': crowd, 'poly': _poly_mask(POLY, H1, W1)}


def _load(root, refs='refs(unc).p', **kw):
    return load_refcoco(str(root / refs), str(root / 'instances.json'), str(root / 'train2014'),
                        **kw)


def test_refcoco_pickle_needs_allow_pickle(refcoco_dir):
    root, _ = refcoco_dir
    with pytest.raises(ValueError, match='--allow-pickle'):
        _load(root)


def test_refcoco_train_split_polygon(refcoco_dir):
    root, masks = refcoco_dir
    data = _load(root, splits='train', allow_pickle=True)
    assert len(data) == 2
    s = data[1]
    s.check()
    assert s.task == 'referring'
    assert s.question == 'Please segment the grey box in this image.'
    assert s.answer == '<p> the grey box </p> [SEG].'
    assert s.image.shape == (H1, W1, 3) and s.image.dtype == np.uint8
    np.testing.assert_array_equal(s.masks[0], masks['poly'])
    drawn = np.zeros((H1, W1), bool)
    drawn[5:21, 10:31] = True  # the rectangle the polygon outlines
    assert (s.masks[0] & drawn).sum() / (s.masks[0] | drawn).sum() > 0.85
    assert 'train' in s.source and 'ref1' in s.source


def test_refcoco_rle_and_json_refs(refcoco_dir):
    root, masks = refcoco_dir
    data = _load(root, refs='refs.json', splits=['val', 'testA'])
    assert len(data) == 2
    by_q = {s.question: s for s in data}
    np.testing.assert_array_equal(by_q['Please segment round thing in this image.'].masks[0],
                                  masks['disc'])
    np.testing.assert_array_equal(by_q['Please segment crowd in this image.'].masks[0],
                                  masks['crowd'])
    assert len(_load(root, refs='refs.json')) == 4


def test_refcoco_unknown_split_lists_splits(refcoco_dir):
    root, _ = refcoco_dir
    with pytest.raises(ValueError, match='testA, train, val'):
        _load(root, refs='refs.json', splits='testB')


def test_grefcoco_multi_and_no_target(refcoco_dir):
    root, masks = refcoco_dir
    grefs = [{'ref_id': 7, 'ann_id': [101, 102], 'image_id': 1, 'split': 'val',
              'sentences': [{'sent': 'both things'}], 'no_target': False},
             {'ref_id': 8, 'ann_id': [-1], 'image_id': 1, 'split': 'val',
              'sentences': [{'sent': 'a purple dog'}], 'no_target': True}]
    (root / 'grefs.json').write_text(json.dumps(grefs))
    both, absent = _load(root, refs='grefs.json')
    np.testing.assert_array_equal(both.masks[0], masks['poly'] | masks['disc'])
    assert absent.task == 'absent' and absent.masks == [] and '[SEG]' not in absent.answer


def test_refcoco_malformed_files(refcoco_dir):
    root, _ = refcoco_dir
    (root / 'bad.json').write_text(json.dumps([{'ref_id': 1, 'image_id': 1, 'split': 'x'}]))
    with pytest.raises(DataFormatError, match=r'bad\.json: ref #0 has no .ann_id.'):
        _load(root, refs='bad.json')
    (root / 'dangling.json').write_text(json.dumps(
        [{'ref_id': 5, 'ann_id': 999, 'image_id': 1, 'split': 'x', 'sentences': []}]))
    with pytest.raises(DataFormatError, match='annotation 999'):
        _load(root, refs='dangling.json')
    (root / 'broken.json').write_text('[{"ref_id": 1,')
    with pytest.raises(DataFormatError, match=r'broken\.json: not valid JSON'):
        _load(root, refs='broken.json')


def test_refcoco_is_lazy(refcoco_dir):
    root, _ = refcoco_dir
    data = _load(root, refs='refs.json', splits='train')
    os.remove(root / 'train2014' / 'COCO_train2014_1.png')
    assert len(data) == 2  # nothing read yet
    with pytest.raises(FileNotFoundError, match='COCO_train2014_1.png'):
        data[0]


def _gcg_images(tmp_path):
    _write_image(tmp_path / 'a.jpg', H1, W1, 2)
    man = _disc(H1, W1, (15, 20), 9)
    cup = np.zeros((H1, W1), bool)
    cup[10:30, 40:55] = True
    cup2 = np.zeros((H1, W1), bool)
    cup2[0:5, 0:5] = True
    return man, cup, cup2


def test_grandf_gcg(tmp_path):
    man, cup, cup2 = _gcg_images(tmp_path)
    caption = '"A man holding a red cup near the window.'
    entries = [{'file_name': 'a.jpg', 'caption': caption, 'groundings': {
        'a red cup': {'token_positives': [14, 23], 'rle_masks': [_rle(cup), _rle(cup2)]},
        'A man': {'token_positives': [0, 5], 'rle_masks': [_rle(man)]}}},
        {'file_name': 'a.jpg', 'caption': 'Nothing grounded.', 'groundings': {}}]
    path = tmp_path / 'GranDf_HA_GCG_train.json'
    path.write_text(json.dumps(entries))
    data = load_gcg(str(path), str(tmp_path))
    assert len(data) == 1
    s = data[0]
    assert s.task == 'gcg' and s.question == GCG_QUESTION
    assert s.answer == ('<p> A man </p> [SEG] holding <p> a red cup </p> [SEG] near the '
                        'window.')
    np.testing.assert_array_equal(s.masks[0], man)
    np.testing.assert_array_equal(s.masks[1], cup | cup2)


def test_refcocog_gcg(tmp_path):
    man, cup, _ = _gcg_images(tmp_path)
    poly = [40.0, 10.0, 54.0, 10.0, 54.0, 29.0, 40.0, 29.0]
    entries = [{'COCO_1': {'img_file_name': 'a.jpg',
                           'caption': 'A man holds a cup. The cup is full.',
                           'refs': [{'sentence': 'a cup', 'segmentation': [poly]},
                                    {'sentence': 'a man', 'segmentation': _rle(man)},
                                    {'sentence': 'a dog', 'segmentation': _rle(man)}]}}]
    path = tmp_path / 'RefCOCOg_GCG_val.json'
    path.write_text(json.dumps(entries))
    (s,) = load_gcg(str(path), str(tmp_path))
    assert s.answer == '<p> A man </p> [SEG] holds <p> a cup </p> [SEG]. The cup is full.'
    np.testing.assert_array_equal(s.masks[0], man)
    np.testing.assert_array_equal(s.masks[1], _poly_mask(poly, H1, W1))


def test_flickr_gcg_merges_shared_spans(tmp_path):
    man, cup, cup2 = _gcg_images(tmp_path)
    caption = 'Two cups beside a man.'
    data = {'images': [{'id': 3, 'file_name': 'a.jpg', 'caption': caption,
                        'height': H1, 'width': W1}],
            'annotations': [
                {'id': 1, 'image_id': 3, 'tokens_positive': [[0, 8]], 'sam_mask': _rle(cup),
                 'bbox': [0, 0, 1, 1], 'area': 1},
                {'id': 2, 'image_id': 3, 'tokens_positive': [[16, 21]], 'sam_mask': _rle(man),
                 'bbox': [0, 0, 1, 1], 'area': 1},
                {'id': 3, 'image_id': 3, 'tokens_positive': [[0, 8]], 'sam_mask': _rle(cup2),
                 'bbox': [0, 0, 1, 1], 'area': 1}]}
    path = tmp_path / 'flickr_mergedGT_GCG_train.json'
    path.write_text(json.dumps(data))
    (s,) = load_gcg(str(path), str(tmp_path))
    assert s.answer == '<p> Two cups </p> [SEG] beside <p> a man </p> [SEG].'
    np.testing.assert_array_equal(s.masks[0], cup | cup2)
    np.testing.assert_array_equal(s.masks[1], man)


def test_gcg_errors(tmp_path):
    path = tmp_path / 'weird.json'
    path.write_text(json.dumps([{'foo': 1, 'bar': 2}]))
    with pytest.raises(DataFormatError, match=r'weird\.json: not a known GCG layout'):
        load_gcg(str(path), str(tmp_path))
    path.write_text(json.dumps([{'file_name': 'a.jpg', 'caption': 'a b', 'groundings': {
        'x': {'token_positives': [0, 9], 'rle_masks': []}}}]))
    with pytest.raises(DataFormatError, match='outside the caption'):
        load_gcg(str(path), str(tmp_path))


def test_llava_turns(tmp_path):
    _write_image(tmp_path / 'x.jpg', H2, W2, 3)
    entries = [
        {'id': 'c1', 'image': 'x.jpg', 'conversations': [
            {'from': 'human', 'value': 'Describe the image concisely.\n<image>'},
            {'from': 'gpt', 'value': 'a grey square'}]},
        {'id': 'q1', 'image': 'x.jpg', 'conversations': [
            {'from': 'human', 'value': '<image>\nWhat colour is it?'},
            {'from': 'gpt', 'value': 'Grey.'},
            {'from': 'human', 'value': 'Is it big?'},
            {'from': 'gpt', 'value': 'No.'}]},
        {'id': 't1', 'conversations': [{'from': 'human', 'value': 'hi'},
                                       {'from': 'gpt', 'value': 'hello'}]}]
    path = tmp_path / 'llava.json'
    path.write_text(json.dumps(entries))
    data = load_llava(str(path), str(tmp_path), task='auto')
    assert len(data) == 3 and data.skipped_no_image == 1
    got = [(s.question, s.answer, s.task) for s in data]
    assert got == [('Describe the image concisely.', 'a grey square', 'caption'),
                   ('What colour is it?', 'Grey.', 'vqa'), ('Is it big?', 'No.', 'vqa')]
    assert data[0].image.shape == (H2, W2, 3) and data[0].masks == []
    assert {s.task for s in load_llava(str(path), str(tmp_path))} == {'vqa'}


def test_llava_malformed(tmp_path):
    path = tmp_path / 'bad_llava.json'
    path.write_text(json.dumps([{'id': 'z', 'image': 'x.jpg', 'conversations': [
        {'from': 'gpt', 'value': 'a'}, {'from': 'human', 'value': 'b'}]}]))
    with pytest.raises(DataFormatError, match=r'bad_llava\.json: entry #0 \(id z\)'):
        load_llava(str(path), str(tmp_path))


def test_coco_panoptic(tmp_path):
    (tmp_path / 'val2017').mkdir()
    (tmp_path / 'panoptic_val2017').mkdir()
    _write_image(tmp_path / 'val2017' / '000001.jpg', H1, W1, 4)
    ids = np.zeros((H1, W1), np.int64)
    ids[:, :20] = 1 + 256 * 2          # person (thing)
    ids[:, 20:40] = 70000              # sky (stuff), B = 1
    ids[0:10, 40:] = 123               # crowd segment, skipped by default
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'panoptic_val2017' / '000001.png'), rgb[..., ::-1])
    data = {'images': [{'id': 1, 'file_name': '000001.jpg', 'height': H1, 'width': W1}],
            'annotations': [{'image_id': 1, 'file_name': '000001.png', 'segments_info': [
                {'id': 513, 'category_id': 1, 'iscrowd': 0},
                {'id': 70000, 'category_id': 187, 'iscrowd': 0},
                {'id': 123, 'category_id': 1, 'iscrowd': 1},
                {'id': 999, 'category_id': 5, 'iscrowd': 0}]}],  # listed but no pixels
            'categories': [{'id': 187, 'name': 'sky', 'isthing': 0},
                           {'id': 1, 'name': 'person', 'isthing': 1},
                           {'id': 5, 'name': 'plane', 'isthing': 1}]}
    path = tmp_path / 'panoptic_val2017.json'
    path.write_text(json.dumps(data))
    ds = load_coco_panoptic(str(path), str(tmp_path / 'panoptic_val2017'),
                            str(tmp_path / 'val2017'))
    assert ds.class_names == ['person', 'plane', 'sky']
    assert ds.isthing.tolist() == [True, True, False] and ds.coco_ids.tolist() == [1, 5, 187]
    s = ds[0]
    assert s.task == 'panoptic' and s.panoptic_masks.shape == (2, H1, W1)
    assert s.panoptic_classes.tolist() == [0, 2] and s.panoptic_classes.dtype == np.int64
    np.testing.assert_array_equal(s.panoptic_masks[0], ids == 513)
    np.testing.assert_array_equal(s.panoptic_masks[1], ids == 70000)
    with_crowd = load_coco_panoptic(str(path), str(tmp_path / 'panoptic_val2017'),
                                    str(tmp_path / 'val2017'), include_crowd=True)[0]
    assert with_crowd.panoptic_classes.tolist() == [0, 2, 0]


def test_coco_panoptic_unknown_category(tmp_path):
    path = tmp_path / 'panoptic_x.json'
    path.write_text(json.dumps({
        'images': [{'id': 1, 'file_name': 'a.jpg', 'height': 2, 'width': 2}],
        'annotations': [{'image_id': 1, 'file_name': 'a.png',
                         'segments_info': [{'id': 3, 'category_id': 42}]}],
        'categories': [{'id': 1, 'name': 'person', 'isthing': 1}]}))
    with pytest.raises(DataFormatError, match=r'panoptic_x\.json: .*unknown category 42'):
        load_coco_panoptic(str(path), str(tmp_path), str(tmp_path))

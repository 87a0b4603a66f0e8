"""Evaluation metrics on hand-computable cases, and mask IoU against pycocotools."""
import math

import numpy as np
from pycocotools import mask as mask_utils
import pytest

from training.eval import (GcgMeter, ReferringMeter, attribute_accuracy, average_precision,
                           cider_d, cider_d_scores, corpus_bleu, iou_matrix, mask_iou,
                           normalize_answer, phrase_similarity, referring_scores,
                           region_answer_accuracy, tokenize)


def _row(start, stop, width=20):
    m = np.zeros((1, width), bool)
    m[0, start:stop] = True
    return m


def test_mask_iou_matches_pycocotools():
    rng = np.random.default_rng(0)
    preds = [rng.random((23, 31)) < d for d in (0.1, 0.3, 0.5, 0.7, 0.9)]
    gts = [rng.random((23, 31)) < d for d in (0.2, 0.5, 0.8, 0.05)]
    enc = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in preds + gts]
    ref = mask_utils.iou(enc[:5], enc[5:], [0] * 4)
    np.testing.assert_allclose(iou_matrix(preds, gts), ref, rtol=1e-12)
    for i, p in enumerate(preds):
        for j, g in enumerate(gts):
            assert mask_iou(p, g) == pytest.approx(ref[i, j], rel=1e-12)


def test_mask_iou_edge_cases():
    empty = np.zeros((4, 4), bool)
    assert mask_iou(empty, empty) == 0.0
    assert iou_matrix([], [empty]).shape == (0, 1)
    with pytest.raises(ValueError, match='shapes differ'):
        mask_iou(empty, np.zeros((4, 5), bool))


def test_referring_ciou_giou_no_target():
    preds = [_row(0, 4), _row(0, 10), None, _row(3, 5), []]
    gts = [_row(2, 6), _row(0, 10), None, np.zeros((1, 20), bool), _row(0, 5)]
    s = referring_scores(preds, gts)
    assert s.ciou == pytest.approx((2 + 10 + 0) / (6 + 10 + 5))
    assert s.giou == pytest.approx((1 / 3 + 1 + 1 + 0 + 0) / 5)
    assert (s.n_samples, s.n_no_target) == (5, 2)
    assert s.no_target_acc == 0.5
    assert s.false_empty_rate == pytest.approx(1 / 3)


def test_referring_multi_mask_union():
    meter = ReferringMeter()
    iou = meter.update([_row(0, 2), _row(4, 6)], [_row(0, 6)])
    assert iou == pytest.approx(4 / 6)
    assert math.isnan(referring_scores([None], [None]).ciou)


def test_gcg_ap50_miou_recall_by_hand():
    meter = GcgMeter()
    meter.update([_row(0, 8), _row(14, 20), _row(0, 10)], [_row(0, 10), _row(10, 20)],
                 ['red cup', 'a chair', 'bowl'], ['a red cup', 'the table'],
                 scores=[0.9, 0.8, 0.7])
    meter.update([_row(10, 15)], [_row(0, 5)], ['dog'], ['dog'], scores=[0.95])
    s = meter.compute()
    # ranked: FP(0.95) TP(0.9) TP(0.8) FP(0.7) of 3 targets: precision envelope 2/3 up to
    # recall 2/3, reached by 67 of the 101 recall points.
    assert s.ap50 == pytest.approx(67 * (2 / 3) / 101)
    assert s.miou == pytest.approx((1.0 + 0.6) / 2 / 2)  # image 2 has no overlapping pair
    assert s.recall == pytest.approx(1 / 3)  # only 'red cup' <-> 'a red cup' at IoU 0.8
    assert (s.n_images, s.n_gt, s.n_pred) == (2, 3, 4)


def test_average_precision_edges():
    assert average_precision(np.array([1.0]), np.array([True]), 1) == pytest.approx(1.0)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 2) == 0.0
    assert math.isnan(average_precision(np.array([1.0]), np.array([False]), 0))


def test_bleu_identical_and_hand_cases():
    assert corpus_bleu(['the cat sat on the mat'], [['the cat sat on the mat']]) == 1.0
    assert corpus_bleu(['<p> A black cat </p> [SEG] sits.'], [['a black cat sits']]) == 1.0
    assert corpus_bleu(['a b c d e'], [['a b c d f']]) == pytest.approx(0.2 ** 0.25)
    assert corpus_bleu(['a b c d'], [['a b c d e f']]) == pytest.approx(math.exp(-0.5))
    # the closest reference length (4) sets the brevity penalty; n-grams clip over refs
    assert corpus_bleu(['a b c d'], [['a b c d e f', 'a b c x']]) == pytest.approx(1.0)
    corpus = corpus_bleu(['a b c d e', 'x y z w'], [['a b c d f'], ['x y z w']])
    assert corpus == pytest.approx((8 / 9 * 6 / 7 * 4 / 5 * 2 / 3) ** 0.25)
    assert corpus_bleu(['a b c d'], [['d c b a']]) == 0.0
    with pytest.raises(ValueError, match='reference'):
        corpus_bleu(['a'], ['a'])


def test_cider_d_hand_cases():
    # two images, nothing shared: every n-gram has idf log 2; orders 3-4 are empty -> 0
    assert cider_d(['a b', 'c d'], [['a b'], ['c d']]) == pytest.approx(5.0)
    assert cider_d(['a b c d', 'e f g h'], [['a b c d'], ['e f g h']]) == pytest.approx(10.0)
    # 'a' is in both images (idf 0); 'b a' misses the reference bigram 'a b'
    scores = cider_d_scores(['b a', 'a c'], [['a b'], ['a c']])
    np.testing.assert_allclose(scores, [2.5, 5.0])
    # unigram cosine 1/sqrt(2), one bigram shorter -> gaussian penalty exp(-1 / (2 * 6^2))
    scores = cider_d_scores(['b', 'c d'], [['a b'], ['c d']])
    assert scores[0] == pytest.approx(10 * math.exp(-1 / 72) / math.sqrt(2) / 4)
    # the per-image score averages over its references
    scores = cider_d_scores(['a b', 'e f'], [['a b', 'c d'], ['e f']])
    np.testing.assert_allclose(scores, [2.5, 5.0])
    assert cider_d(['a b'], [['a b']]) == 0.0  # one image: every idf is log(1) = 0


def test_phrase_similarity_and_tokenize():
    assert tokenize('<p> The Red-cup </p> [SEG].') == ['the', 'red', 'cup']
    assert phrase_similarity('the red cup', 'red cup') == 1.0
    assert phrase_similarity('man', 'man in a shirt') == pytest.approx(0.5)
    assert phrase_similarity('dog', 'cat') == 0.0


def test_region_answer_accuracy():
    assert normalize_answer('Two red cups!') == '2 red cups'
    preds = ['A red cup.', 'two', 'blue']
    refs = ['red cup', '2', ['red', 'crimson']]
    assert region_answer_accuracy(preds, refs) == pytest.approx(2 / 3)
    preds = ['There is a red cup on the table.', 'a red cupboard']
    refs = [['red cup', 'table'], 'red cup']
    assert region_answer_accuracy(preds, refs, mode='keyword') == 0.5
    with pytest.raises(ValueError, match='mode'):
        region_answer_accuracy(preds, refs, mode='fuzzy')


def test_attribute_accuracy_default_parser():
    captions = ['A red cup and a blue bowl on a table.', 'The cup is green. A bowl. A gray mug.']
    objects = [[('cup', {'red'}), ('bowl', {'red'}), ('plate', {'white'})],
               [('the cup', {'green'}), ('bowl', {'yellow'}), ('mug', {'grey'})]]
    s = attribute_accuracy(captions, objects)
    assert (s.n_objects, s.n_mentioned, s.n_with_attr, s.n_correct) == (6, 5, 4, 3)
    assert s.accuracy == pytest.approx(3 / 5)
    assert s.precision == pytest.approx(3 / 4)
    assert s.mention_rate == pytest.approx(5 / 6)


def test_attribute_accuracy_custom_parser():
    def parser(caption, phrase):
        return {'red'} if phrase in caption else None

    s = attribute_accuracy(['cup here'], [[('cup', ['Red']), ('bowl', ['red'])]], parser=parser)
    assert (s.n_mentioned, s.n_correct) == (1, 1)

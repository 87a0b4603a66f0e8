"""Evaluation metrics: masks (referring, GCG) and text (captions, region answers, attributes)."""
from training.eval.metrics import (GcgMeter, GcgScores, ReferringMeter, ReferringScores,
                                   average_precision, iou_matrix, mask_iou, referring_scores)
from training.eval.text_metrics import (AttributeScores, attribute_accuracy, cider_d,
                                        cider_d_scores, colour_parser, corpus_bleu,
                                        normalize_answer, phrase_similarity,
                                        region_answer_accuracy, strip_special_tokens, tokenize)

__all__ = [
    'AttributeScores', 'GcgMeter', 'GcgScores', 'ReferringMeter', 'ReferringScores',
    'attribute_accuracy', 'average_precision', 'cider_d', 'cider_d_scores', 'colour_parser',
    'corpus_bleu', 'iou_matrix', 'mask_iou', 'normalize_answer', 'phrase_similarity',
    'referring_scores', 'region_answer_accuracy', 'strip_special_tokens', 'tokenize',
]

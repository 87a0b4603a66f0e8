"""Why referring answers miss: each true target of the test split's referring samples is
'ok' (an answer mask has IoU >= 0.5), 'decoder' (no kept decoder query covers it at IoU
>= 0.5, so no pointer could help), 'no mask' (the answer has no mask), 'phrase' (the answer
never names it) or 'pointer' (it is named and covered, but the [SEG] points elsewhere).

    python -m training.referring_errors --model ros_segcap/weights/segcap-tiny --n 40

Sample i is the evaluation's referring sample 4 * i (the samples `training.evaluate --n
4n` scores, with the same --seed-offset), so the counts explain its referring cIoU.
`by_form` splits the samples by the kind of expression (unique 'the red cup', extreme 'the
largest cup', ordinal 'the second cup from the left', relation 'the cup left of the box',
plural 'all the cups'): samples, targets, targets found and the form's cIoU.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from ros_segcap.core.answer import parse_answer
from ros_segcap.runtime import PipelineConfig, open_pipeline
from ros_segcap.core.preprocess import unletterbox
from training.data.tabletop import tabletop_example
from training.eval.cli import model_command
from training.eval.metrics import ReferringMeter, iou_matrix
from training.evaluate import IMAGE_SIZE, MAX_NEW_TOKENS

KINDS = ('ok', 'decoder', 'no mask', 'phrase', 'pointer')


def classify(answer_masks: Sequence[np.ndarray], kept_masks: Sequence[np.ndarray],
             truth: np.ndarray, phrase: str, answer_phrases: Sequence[str]) -> str:
    """One of KINDS for one true target mask and its phrase."""
    def best(masks) -> float:
        return float(iou_matrix(list(masks), [truth]).max(initial=0.0)) if len(masks) else 0.0
    if best(answer_masks) >= 0.5:
        return 'ok'
    if best(kept_masks) < 0.5:
        return 'decoder'
    if not len(answer_masks):
        return 'no mask'
    if phrase not in answer_phrases:
        return 'phrase'
    return 'pointer'


def referring_errors(model: str, n: int = 40, split: str = 'test', seed_offset: int = 0,
                     refine_edges: bool = True, world: str = 'default',
                     styles: str = 'train') -> dict:
    """Counts of KINDS over the true targets of n referring samples (+ their examples), and
    the same split by expression form."""
    pipe = open_pipeline(PipelineConfig(model=model, max_new_tokens=MAX_NEW_TOKENS,
                                        refine_edges=refine_edges))
    counts: Counter = Counter()
    forms: dict[str, Counter] = {}
    form_ciou: dict[str, ReferringMeter] = {}
    examples = []
    for i in tqdm(range(n), desc='samples'):
        sample, ann = tabletop_example(split, 4 * i, IMAGE_SIZE, 'referring', seed_offset,
                                       world, styles)
        result = pipe.run(sample.image, sample.question, frame_key=i)
        frame, box = pipe.encode(sample.image, frame_key=i)  # the frame run() encoded
        kept = pipe.model.kept_queries(frame)
        kept_masks = pipe.probabilities(unletterbox(frame.mask_logits[0, kept], box),
                                        sample.image, box) > 0.5
        truth_phrases = parse_answer(sample.answer).phrases
        name = ann.ref.form if ann.ref else 'other'
        form = forms.setdefault(name, Counter())
        form_ciou.setdefault(name, ReferringMeter()).update(result.masks or None, sample.masks)
        form['samples'] += 1
        for truth, phrase in zip(sample.masks, truth_phrases):
            kind = classify(result.masks, list(kept_masks), truth, phrase, result.phrases)
            counts[kind] += 1
            form['targets'] += 1
            form['ok'] += kind == 'ok'
            if kind != 'ok':
                examples.append(f'{4 * i}: {kind}: {phrase!r} in {sample.question!r} -> '
                                f'{result.raw_text!r}')
    by_form = {name: dict(samples=c['samples'], targets=c['targets'], ok=c['ok'],
                          ciou=form_ciou[name].compute().ciou)
               for name, c in sorted(forms.items())}
    return dict(model=model, split=split, seed_offset=seed_offset, samples=n,
                targets=sum(counts.values()), **{k: counts[k] for k in KINDS},
                by_form=by_form, examples=examples)


def main(argv: Optional[Sequence[str]] = None) -> None:
    model_command(__doc__, referring_errors, 40, 'referring samples', argv)


if __name__ == '__main__':
    main()

"""Evaluate a model on tabletop scenes through the real runtime Pipeline (greedy decoding).

    python -m training.evaluate --model ros_segcap/weights/segcap-tiny --split test --n 96

Scores: referring cIoU / gIoU and no-target accuracy (referring + absent samples, gRefCOCO
conventions), GCG mask AP50 / mIoU / recall, caption BLEU-4 / CIDEr-D and colour attribute
accuracy, region-answer accuracy (exact, normalised; also per kind of region question in
`region_by_question`) and VQA accuracy. Sample i of the split
is scene split_seed(split, seed_offset + i) with task TASK_CYCLE[i % len(TASK_CYCLE)].

`--world varied --styles train|held_out` evaluates on the varied world (its test split in
the train or the held-out style families) and adds referring gIoU and region accuracy per
object kind and per colour word (`by_kind`, `by_colour`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ros_segcap.core.answer import parse_answer
from ros_segcap.models.segcap.llm import DECODE_PATHS, DEFAULT_DECODE_PATH
from ros_segcap.core.pipeline import Pipeline
from ros_segcap.core.options import option
from ros_segcap.runtime import PipelineConfig, open_pipeline
from ros_segcap.core.preprocess import prompt_queries
from ros_segcap.core.types import SegCapResult
from ros_segcap.world import sample_scene
from ros_segcap.world.annotate import Annotation
from ros_segcap.world.varied import sample_varied_split
from training.data.sample import Sample
from training.data.tabletop import tabletop_example
from training.eval.by_attribute import AttributeMeter
from training.eval.cli import add_presence_argument, add_world_arguments, check_world_arguments
from training.eval.metrics import GcgMeter, ReferringMeter
from training.eval.text_metrics import (attribute_accuracy, cider_d, corpus_bleu,
                                        region_answer_accuracy)

TASK_CYCLE = ('referring', 'absent', 'gcg', 'region', 'referring', 'caption', 'region', 'vqa')
IMAGE_SIZE = (480, 640)  # (H, W): a VGA robot camera
MAX_NEW_TOKENS = option('max_new_tokens').default  # the product's: captions end on their own
# how a region question starts -> the kind of question it is (region_by_question)
REGION_QUESTIONS = (('what is', 'name'), ('what colour', 'colour'), ('what kind', 'kind'),
                    ('can you describe', 'describe'), ('please segment', 'segment'),
                    ('which is closer', 'closer'))


def region_question(question: str) -> str:
    """'What colour is <region>?' -> 'colour'; a question of no known kind -> 'other'."""
    low = ' '.join(question.lower().split())
    return next((name for start, name in REGION_QUESTIONS if low.startswith(start)), 'other')


def answer_with_prompts(pipe: Pipeline, sample: Sample) -> SegCapResult:
    """Run a sample; questions with several <region>/<mark> prompts use the same pieces."""
    if len(sample.prompts) <= 1:
        vp = sample.prompts[0] if sample.prompts else None
        return pipe.run(sample.image, sample.question, visual_prompt=vp)
    model = pipe.model
    with torch.no_grad():
        frame, box = pipe.encode(sample.image)
        q = prompt_queries(sample.prompts, box, model.config.mask_size)
        out = model.visual_prompts(frame, q)
        embeds, _ = model.prompt_embeds(frame, sample.question, model.prompt_tokens(out, frame))
        guide = model.answer_guide(frame, sample.question, q, box, pipe.engine,
                                   places=pipe.settings.region_places)
        gen = model.llm.generate(embeds, max_new_tokens=pipe.settings.max_new_tokens,
                                 guide=guide)
        parsed = parse_answer(gen.text)
    return SegCapResult(answer=parsed.text, raw_text=gen.text, model=model.config.name)


class Evaluator:
    """Accumulate predictions per task; `scores()` gives every metric."""

    def __init__(self) -> None:
        self.attributes = AttributeMeter()
        self.referring = ReferringMeter()
        self.gcg = GcgMeter()
        self.captions: list[tuple[str, str, list[tuple[str, set[str]]]]] = []
        self.region: list[tuple[str, str]] = []
        self.region_kinds: list[str] = []  # region_question of each region sample
        self.vqa: list[tuple[str, str]] = []

    def update(self, sample: Sample, result: SegCapResult, objects: Optional[Sequence] = None,
               ann: Optional[Annotation] = None) -> None:
        """Score one sample's result against its annotation.

        objects: the scene's objects (default: the default world's scene of the sample);
        ann: the world's annotation, to score by kind and colour.
        """
        if sample.task in ('referring', 'absent'):
            iou = self.referring.update(result.masks or None, sample.masks or None)
            if ann is not None and objects is not None and sample.task == 'referring':
                self.attributes.update('referring_giou', [objects[i] for i in ann.ref.targets],
                                       iou)
        elif sample.task == 'gcg':
            self.gcg.update(result.masks, sample.masks, result.phrases,
                            parse_answer(sample.answer).phrases, result.scores)
        elif sample.task == 'caption':
            if objects is None:
                objects = sample_scene(int(sample.source.split('/')[2])).objects
            named = [(f'{o.colour} {o.kind}', {o.colour}) for o in objects]
            self.captions.append((result.answer, sample.answer, named))
        elif sample.task == 'region':
            self.region.append((result.answer, parse_answer(sample.answer).text))
            self.region_kinds.append(region_question(sample.question))
            if ann is not None and objects is not None and ann.extra.get('objects'):
                right = region_answer_accuracy([result.answer], [self.region[-1][1]])
                self.attributes.update('region_acc', [objects[ann.extra['objects'][0]]], right)
        elif sample.task == 'vqa':
            self.vqa.append((result.answer, sample.answer))

    def scores(self) -> dict[str, Any]:
        """Every metric as a flat dict (NaN where a task had no samples)."""
        ref, gcg = self.referring.compute(), self.gcg.compute()
        out: dict[str, Any] = {
            'referring_ciou': ref.ciou, 'referring_giou': ref.giou,
            'no_target_acc': ref.no_target_acc, 'n_referring': ref.n_samples,
            'gcg_ap50': gcg.ap50, 'gcg_miou': gcg.miou, 'gcg_recall': gcg.recall,
            'n_gcg': gcg.n_images}
        if self.captions:
            hyps = [h for h, _, _ in self.captions]
            refs = [[r] for _, r, _ in self.captions]
            out['caption_bleu4'] = corpus_bleu(hyps, refs)
            out['caption_cider_d'] = cider_d(hyps, refs)
            out['caption_attr_acc'] = attribute_accuracy(
                hyps, [o for _, _, o in self.captions]).accuracy
        out['n_caption'] = len(self.captions)
        for name, pairs in (('region', self.region), ('vqa', self.vqa)):
            out[f'{name}_acc'] = region_answer_accuracy(
                [p for p, _ in pairs], [r for _, r in pairs]) if pairs else float('nan')
            out[f'n_{name}'] = len(pairs)
        out['region_by_question'] = {}
        for kind in sorted(set(self.region_kinds)):
            pairs = [p for p, k in zip(self.region, self.region_kinds) if k == kind]
            out['region_by_question'][kind] = {
                'acc': region_answer_accuracy([p for p, _ in pairs], [r for _, r in pairs]),
                'n': len(pairs)}
        return out


def evaluate(model: str, split: str = 'test', n: int = 96, seed_offset: int = 0,
             tasks: Sequence[str] = TASK_CYCLE, log: Optional[Path] = None,
             decode_path: str = DEFAULT_DECODE_PATH, refine_edges: bool = True,
             world: str = 'default', styles: str = 'train', check_presence: bool = True,
             region_places: bool = True, max_new_tokens: int = MAX_NEW_TOKENS
             ) -> dict[str, Any]:
    """Run n samples of a split through a Pipeline and return the scores.

    world='varied' adds the world, the style set and scores per kind and colour.
    """
    pipe = open_pipeline(PipelineConfig(model=model, max_new_tokens=max_new_tokens,
                                        decode_path=decode_path, refine_edges=refine_edges,
                                        check_presence=check_presence,
                                        region_places=region_places))
    ev = Evaluator()
    rows = []
    t0 = time.time()
    for i in range(n):
        task = tasks[i % len(tasks)]
        sample, ann = tabletop_example(split, i, IMAGE_SIZE, task, seed_offset, world, styles)
        result = answer_with_prompts(pipe, sample)
        if world == 'varied':
            spec = sample_varied_split(split, seed_offset + i, styles,
                                       aspect=IMAGE_SIZE[1] / IMAGE_SIZE[0])
            ev.update(sample, result, spec.objects, ann)
        else:
            ev.update(sample, result)
        rows.append({'i': i, 'task': task, 'question': sample.question,
                     'truth': sample.answer, 'answer': result.raw_text})
    scores = ev.scores()
    scores.update(split=split, n=n, seed_offset=seed_offset, seconds=time.time() - t0,
                  model=model, decode_path=pipe.model.llm.effective_decode_path(),
                  refine_edges=refine_edges, check_presence=check_presence,
                  region_places=region_places,
                  max_new_tokens=max_new_tokens,
                  answers=[r['answer'] for r in rows])
    if world != 'default':
        scores.update(world=world, styles=styles, **ev.attributes.compute())
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    return scores


def parity(fast: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Answer mismatch rate and metric differences (fast - reference) of two runs."""
    a, b = fast['answers'], reference['answers']
    mismatch = sum(x != y for x, y in zip(a, b)) / max(1, len(a))
    delta = {k: fast[k] - v for k, v in reference.items()
             if isinstance(v, float) and k != 'seconds' and not np.isnan(v)
             and isinstance(fast.get(k), float)}
    return {'answer_mismatch': mismatch, 'delta': delta, 'reference_seconds': reference['seconds']}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line of `evaluate`; prints the scores as JSON (and writes --out)."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='segcap-tiny', help='model directory or name')
    ap.add_argument('--split', default='test', choices=('train', 'val', 'test'))
    ap.add_argument('--n', type=int, default=96)
    ap.add_argument('--seed-offset', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--out', default='', help='write the scores JSON here')
    ap.add_argument('--answers', default='', help='write every answer as JSON lines here')
    ap.add_argument('--decode-path', default=DEFAULT_DECODE_PATH, choices=DECODE_PATHS)
    ap.add_argument('--max-new-tokens', type=int, default=MAX_NEW_TOKENS,
                    help='longest answer in tokens')
    ap.add_argument('--no-refine-edges', dest='refine_edges', action='store_false',
                    help='keep the masks as the mask grid gives them (no edge refinement)')
    add_world_arguments(ap)  # varied: scores per kind and colour too
    add_presence_argument(ap)
    ap.add_argument('--no-region-places', dest='region_places', action='store_false',
                    help="let the LLM alone say a region's place and which region is closer")
    ap.add_argument('--tasks', default=','.join(TASK_CYCLE),
                    help='comma-separated tasks that sample i cycles through (default: the '
                         'mixed cycle); e.g. region for region questions only')
    ap.add_argument('--parity', action='store_true',
                    help='also run the reference decode path on the same samples and report '
                         'the answer mismatch rate and the score differences')
    args = ap.parse_args(argv)
    check_world_arguments(ap, args)
    tasks = tuple(t for t in args.tasks.split(',') if t)
    unknown = sorted(set(tasks) - set(TASK_CYCLE))
    if unknown:
        ap.error(f'--tasks: unknown {", ".join(unknown)}; choose from '
                 f'{", ".join(sorted(set(TASK_CYCLE)))}')
    if not tasks:
        ap.error('--tasks is empty')
    torch.set_num_threads(args.threads)
    log = Path(args.answers) if args.answers else None
    world = dict(world=args.world, styles=args.styles, tasks=tasks,
                 check_presence=args.check_presence, region_places=args.region_places,
                 max_new_tokens=args.max_new_tokens)
    scores = evaluate(args.model, args.split, args.n, args.seed_offset, log=log,
                      decode_path=args.decode_path, refine_edges=args.refine_edges, **world)
    if args.parity:
        scores['parity'] = parity(scores, evaluate(args.model, args.split, args.n,
                                                   args.seed_offset, decode_path='reference',
                                                   refine_edges=args.refine_edges, **world))
    scores.pop('answers')  # in --answers
    text = json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v)
                       for k, v in scores.items()}, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()

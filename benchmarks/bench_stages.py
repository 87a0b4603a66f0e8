"""Per-stage CPU times of a SegCap model (default segcap-tiny at 512x512) and peak RSS.

    .venv/bin/python benchmarks/bench_stages.py [--model segcap-tiny] [--runs 7] [--threads 2]

Each stage runs on the outputs of the previous one, as the pipeline chains them: preprocess
(letterbox), backbone, pixel + OMG decoders, prior + projectors (+ prompt embeddings), LLM
prefill (whole prompt, and with the frame's visual prefix reused), one decode step with the
KV cache, one [SEG] mask decode (text2vision -> decoder on cached features -> masks at
the original size), and the edge refinement of the largest object mask. Every stage is
warmed up, then timed `--runs` times; the table gives the median, min and max in ms. Not a
test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from typing import Callable

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ros_segcap.models.segcap.encoder import normalize_image  # noqa: E402
from ros_segcap.models.segcap.model import FrameFeatures  # noqa: E402
from ros_segcap.core.preprocess import letterbox, unletterbox  # noqa: E402
from ros_segcap.core.refine import radius_px, refine  # noqa: E402
from ros_segcap.models.segcap.weights import load_model  # noqa: E402


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def test_image(height: int, width: int) -> np.ndarray:
    """A real photo (skimage astronaut) resized to height x width, or a gradient without it."""
    try:
        import cv2
        from skimage import data
        return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    except ImportError:
        yy, xx = np.mgrid[0:height, 0:width]
        return np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)


def timed(fn: Callable[[], object], runs: int, warmup: int) -> tuple[list[float], object]:
    """Milliseconds of `runs` calls after `warmup` calls, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, out


def no_stop_picker(stop_ids: set[int]):
    """Greedy pick that never ends the answer, so every run decodes the same token count."""
    def pick(logits: torch.Tensor, temperature: float, generator) -> int:
        logits = logits.clone()
        logits[list(stop_ids)] = float('-inf')
        return int(logits.argmax())
    return pick


def bench(args: argparse.Namespace) -> list[tuple[str, list[float]]]:
    """Run every stage; returns (stage name, times in ms)."""
    t0 = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t0
    print(f'loaded {args.model} in {load_s:.1f} s; RSS peak {peak_rss_mb():.0f} MB; '
          f'LLM decode path: {model.llm.decode_path}')
    cfg, llm = model.config, model.llm
    image = test_image(args.height, args.width)
    r, w = args.runs, args.warmup
    rows = []

    def add(name: str, fn: Callable[[], object]):
        times, out = timed(fn, r, w)
        rows.append((name, times))
        return out

    with torch.no_grad():
        tensor, box = add('preprocess (letterbox)', lambda: letterbox(image, cfg.image_size))
        feats = add('backbone', lambda: model.backbone.forward_features(
            normalize_image(cfg, tensor)))
        frame = add('pixel + OMG decoders', lambda: decoders(model, feats))
        question = 'Please segment the person in this image.'

        def prior_projectors():
            visual = model.visual_block(frame)
            ids, _ = llm.prompt_ids(question, visual.shape[0])
            return model.build_embeds(torch.tensor(ids), visual), ids, visual.shape[0]
        embeds, ids, n_visual = add('prior + projectors + embeds', prior_projectors)
        prefix_len = ids.index(llm.image_id) + n_visual
        llm._pick = no_stop_picker(llm.stop_ids)  # instance attribute shadows the method
        add(f'LLM prefill ({embeds.shape[1]} tokens)',
            lambda: llm.generate(embeds, max_new_tokens=1))
        if llm.decode_path != 'reference':
            add(f'LLM prefill, prefix reused ({embeds.shape[1] - prefix_len} new)',
                lambda: llm.generate(embeds, max_new_tokens=1, prefix_len=prefix_len,
                                     prefix_key='bench'))
        n = args.tokens
        step_runs: list[list[float]] = []

        def generate_n():
            # on_text fires after each token's cached step; the last token takes no step
            stamps = [time.perf_counter()]
            gen = llm.generate(embeds, max_new_tokens=n,
                               on_text=lambda piece: stamps.append(time.perf_counter()))
            if len(stamps) == n + 1:  # one callback per token (no partial UTF-8 pieces)
                step_runs.append(list(np.diff(stamps[1:-1]) * 1000.0))
            return gen
        gen = add(f'LLM generate {n} tokens (prefill + {n - 1} steps)', generate_n)
        assert gen.stats['new_tokens'] == n
        steps = [t for run in step_runs[-r:] for t in run]
        if steps:
            rows.append(('LLM per-token decode (step + pick)', steps))
        hidden = llm.hidden(embeds)[:, -1]  # a real last-layer hidden state (1, H)

        def mask_decode():
            out = model.decode_seg(frame, hidden)
            return unletterbox(out.mask_logits[-1][0], box).sigmoid() > 0.5
        masks = add('mask decode (1 [SEG])', mask_decode)
        assert masks.shape == (1, args.height, args.width)
        # the largest object mask the decoder found, refined as the pipeline does
        kept = frame.mask_logits[0, model.kept_queries(frame)]
        probs = unletterbox(kept, box).sigmoid().numpy()
        big = probs[int((probs > 0.5).sum((1, 2)).argmax())] if len(probs) else probs[0]
        radius = radius_px(box.cell_px(cfg.mask_size))
        add(f'mask edge refinement (1 mask, {int((big > 0.5).sum())} px)',
            lambda: refine(image, big, radius))
    return rows


def decoders(model, feats) -> FrameFeatures:
    """The part of SegCapModel.encode after the backbone."""
    return model.encode_features(feats)


def print_table(rows: list[tuple[str, list[float]]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f'\n{"stage":<{width}}  {"median ms":>10}  {"min":>8}  {"max":>8}')
    print('-' * (width + 32))
    for name, times in rows:
        print(f'{name:<{width}}  {statistics.median(times):>10.1f}  {min(times):>8.1f}  '
              f'{max(times):>8.1f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='segcap-tiny')
    parser.add_argument('--height', type=int, default=512, help='source image height')
    parser.add_argument('--width', type=int, default=512, help='source image width')
    parser.add_argument('--runs', type=int, default=7, help='timed runs per stage (median)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--tokens', type=int, default=16, help='tokens per generate run')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    args = parser.parse_args()
    if args.tokens < 3:
        parser.error('--tokens must be at least 3 (per-token times need two steps)')
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, '
          f'{platform.processor() or platform.machine()}; load average '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    rows = bench(args)
    print_table(rows)
    print(f'\npeak RSS {peak_rss_mb():.0f} MB; load average after: '
          f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')


if __name__ == '__main__':
    main()

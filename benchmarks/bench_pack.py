"""Stage-2 throughput with shared-prefix packing vs one sample per forward, in one run.

    python benchmarks/bench_pack.py --init runs/stage1/model --cache runs/cache/train

Times forward + backward of the same samples (all samples of --scenes cached scenes) once
packed per scene and once one by one, after a warm-up, and prints samples/s of both, their
ratio and the largest relative gradient difference (packing is exact up to rounding).
"""
from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence

import torch

from training.cache import load_cache
from training.config import make_config
from training.stages import build_stage
from training.train import make_items


def grads(stage) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in stage.named_parameters() if p.grad is not None}
    stage.zero_grad(set_to_none=True)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--init', default='runs/stage1/model')
    ap.add_argument('--cache', default='runs/cache/train')
    ap.add_argument('--scenes', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = make_config(2, dict(init=args.init, simple_refs=1, pack=64, lora_dropout=0.0))
    stage = build_stage(cfg)
    packs = make_items(load_cache(args.cache, args.scenes + 1), cfg)
    warm, packs = packs[0], packs[1:]
    n = sum(len(samples) for _, samples in packs)
    loss, _ = stage(warm)  # warm-up, and every frame computed before timing
    loss.backward()
    for scene, _ in packs:
        stage.frame(scene)
    grads(stage)
    t0 = time.perf_counter()
    for item in packs:
        loss, _ = stage(item)
        (loss * len(item[1]) / n).backward()
    t_pack = time.perf_counter() - t0
    g_pack = grads(stage)
    t0 = time.perf_counter()
    for scene, samples in packs:
        for sample in samples:
            loss, _ = stage((scene, sample))
            (loss / n).backward()
    t_single = time.perf_counter() - t0
    g_single = grads(stage)
    diff = max(float((g_pack[k] - g_single[k]).abs().max() /
                     g_single[k].abs().max().clamp(min=1e-12)) for k in g_single)
    print(f'{n} samples of {len(packs)} scenes, {args.threads} threads')
    print(f'one per forward: {n / t_single:.2f} samples/s ({t_single:.1f} s)')
    print(f'packed per scene: {n / t_pack:.2f} samples/s ({t_pack:.1f} s)')
    print(f'speed-up packed / single: {t_single / t_pack:.2f}x; max relative gradient '
          f'difference {diff:.1e}')


if __name__ == '__main__':
    main()

"""LLM turn speed: decode ms/token vs the memory-bandwidth floor and llama.cpp; TTFT reuse.

Prints, measured in one run on this machine:
  - read bandwidth (GB/s, torch sum over a 512 MB tensor) and the per-token floor
    = weight bytes read per token / bandwidth, for each decode path;
  - decode ms/token (median) of the reference (Hugging Face) path and our fast paths;
  - llama.cpp decode ms/token on the same GGUF and thread count, if a llama-cpp-python
    environment exists (benchmarks/setup_llama_cpp.sh builds one; never in CI);
  - time to first token of a second command on the same frame / the first command;
  - peak RSS of this process (the node's model + pipeline).

Usage: .venv/bin/python benchmarks/bench_llm.py [--threads 2] [--tokens 48] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
LLAMA_VENV = ROOT / 'benchmarks' / '.venv-llamacpp'


def read_bandwidth(threads: int) -> float:
    """GB/s of a streaming read (best of 5 sums over 512 MB of fp32)."""
    x = torch.ones(128 * 1024 * 1024)
    best = float('inf')
    for _ in range(5):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def decode_ms(llm, path: str, embeds: torch.Tensor, tokens: int) -> tuple[float, int]:
    """Median ms per decoded token of a decode path, and its weight bytes per token."""
    llm.decode_path = path
    times = []
    orig_pick = llm._pick
    last = [time.perf_counter()]

    def timed_pick(logits, temperature, generator):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        return orig_pick(logits, temperature, generator)
    llm._pick = timed_pick
    try:
        llm.stop_ids_saved = llm.stop_ids
        llm.stop_ids = set()  # decode exactly `tokens` tokens
        llm.generate(embeds, max_new_tokens=tokens)
    finally:
        llm.stop_ids = llm.stop_ids_saved
        del llm._pick
    steps = times[1:]  # the first interval includes the prefill
    nbytes = llm.fast().weight_bytes() if path != 'reference' else \
        sum(p.numel() * p.element_size() for n, p in llm.lm.named_parameters()
            if 'embed_tokens' not in n) + llm.lm.lm_head.weight.numel() * 4
    return statistics.median(steps) * 1000, nbytes


def llama_cpp_ms(threads: int, tokens: int) -> str | float:
    py = LLAMA_VENV / 'bin' / 'python'
    if not py.exists():
        return 'not built (run benchmarks/setup_llama_cpp.sh)'
    from ros_segcap.models.segcap.assets import SMOLLM2_GGUF, find_asset_file

    gguf = find_asset_file(SMOLLM2_GGUF)
    code = (
        'import json, sys, time\n'
        'from llama_cpp import Llama\n'
        f'm = Llama(model_path={str(gguf)!r}, n_threads={threads}, n_ctx=512, verbose=False)\n'
        'p = m.tokenize(b"Describe a red cup on a wooden table in detail.")\n'
        'm.eval(p)\n'
        'ts = []\n'
        f'for _ in range({tokens}):\n'
        '    t0 = time.perf_counter()\n'
        '    tok = m.sample(temp=0.0)\n'
        '    m.eval([tok])\n'
        '    ts.append(time.perf_counter() - t0)\n'
        'ts.sort(); print(json.dumps(ts[len(ts) // 2] * 1000))\n')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([str(py), '-c', code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return 'failed: ' + proc.stderr.strip().splitlines()[-1]
    return float(proc.stdout.strip().splitlines()[-1])


def ttft_ratio(pipe, image: np.ndarray) -> tuple[float, float]:
    """Time to first token (ms): first command on a new frame, second on the same frame."""
    out = []
    for i, q in enumerate(('segment the red cup', 'segment the blue bowl')):
        first = {}
        t0 = time.perf_counter()

        def on_text(piece, first=first, t0=t0):
            first.setdefault('t', time.perf_counter() - t0)
            return False  # stop after the first piece: we only time the first token
        pipe.run(image, q, frame_key='bench', on_text=on_text)
        out.append(first.get('t', time.perf_counter() - t0) * 1000)
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--tokens', type=int, default=48)
    ap.add_argument('--model', default='segcap-tiny')
    ap.add_argument('--paths', default='reference,fast,fast-q4')
    ap.add_argument('--rounds', type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from ros_segcap.models.segcap.config import DEFAULT_DECODE_PATH
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    from ros_segcap.world import render, sample_scene

    pipe = open_pipeline(PipelineConfig(model=args.model, max_new_tokens=args.tokens))
    llm = pipe.model.llm
    torch.manual_seed(0)
    embeds = torch.randn(1, 120, pipe.model.config.llm_hidden) * 0.02
    paths = args.paths.split(',')
    # Memory bandwidth on a shared host drifts by tens of percent within minutes, so every
    # round measures the bandwidth, each path and llama.cpp back to back; ratios are per
    # round, then the median over rounds is reported.
    ms = {p: [] for p in paths}
    floor_ratio = {p: [] for p in paths}
    llama_ratio = {p: [] for p in paths}
    bws, llamas, nbytes = [], [], {}
    llama = None
    for r in range(args.rounds):
        bw = read_bandwidth(args.threads)
        bws.append(bw)
        llama = llama_cpp_ms(args.threads, args.tokens)
        if isinstance(llama, float):
            llamas.append(llama)
        for path in paths:
            t, nbytes[path] = decode_ms(llm, path, embeds, args.tokens)
            ms[path].append(t)
            floor_ratio[path].append(t / (nbytes[path] / (bw * 1e9) * 1000))
            if isinstance(llama, float):
                llama_ratio[path].append(t / llama)
        print(f'round {r + 1}: bandwidth {bw:.1f} GB/s; ' + '; '.join(
            f'{p} {ms[p][-1]:.1f} ms' for p in paths) +
            (f'; llama.cpp {llama:.1f} ms' if isinstance(llama, float) else ''), flush=True)
    med = statistics.median
    print(f'read bandwidth: {med(bws):.1f} GB/s median over {args.rounds} rounds '
          f'({min(bws):.1f}-{max(bws):.1f}; {args.threads} threads)')
    rows = {p: med(ms[p]) for p in paths}
    for path in paths:
        print(f'{path:>10}: {rows[path]:7.1f} ms/token; weights {nbytes[path] / 1e6:6.1f} '
              f'MB/token; ratio to floor {med(floor_ratio[path]):5.2f} (goal <= 2.5; '
              f'rounds {", ".join(f"{x:.2f}" for x in floor_ratio[path])})')
    if llamas:
        llama = med(llamas)
        for path in paths:
            print(f'{path:>10} / llama.cpp ({llama:.1f} ms/token): '
                  f'{med(llama_ratio[path]):5.2f} (goal <= 2.0; rounds '
                  f'{", ".join(f"{x:.2f}" for x in llama_ratio[path])})')
    else:
        print(f'llama.cpp: {llama}')
    llm.decode_path = DEFAULT_DECODE_PATH
    image = render(sample_scene(2_000_009), 480, 640).image
    first, second = ttft_ratio(pipe, image)
    print(f'TTFT first command {first:.0f} ms, second on the same frame {second:.0f} ms: '
          f'ratio {second / first:.2f} (goal <= 0.3)')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'peak RSS (model + pipeline, as in the node): {peak:.0f} MB')
    print(json.dumps({'bandwidth_gbs': bws, 'decode_ms': ms, 'ratio_to_floor': floor_ratio,
                      'ratio_to_llama_cpp': llama_ratio, 'llama_cpp_ms': llama,
                      'ttft_ms': [first, second], 'peak_rss_mb': peak}))
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Engine speed on this machine, measured in one run with segcap-tiny weights at 512 x 512.

Prints:
  1. vision + seg through onnxruntime vs torch eager (same weights, same threads; medians of
     interleaved repeats): goal >= 1.5x faster;
  2. a second command on the same frame vs the first (cached vision outputs and, when the
     LLM path supports it, the cached visual prefix), per backend: goal <= 0.5x;
  3. achieved GFLOP/s of the vision graph (Conv/MatMul/Gemm/Einsum FLOPs counted from the
     ONNX file) vs this machine's fp32 GEMM GFLOP/s: goal >= 0.4;
  4. peak RSS of `segcap infer` with each backend (fresh processes, /usr/bin/time).

The model is saved once to a temporary model directory (untrained parts, where no weights
are shipped, are random): the engines and the `segcap infer` subprocesses
then use the very same weights (the manifest hash would refuse anything else).

Usage: .venv/bin/python benchmarks/bench_engines.py [--threads 2] [--repeats 7] [--tokens 16]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / 'ros_segcap' / 'assets' / 'coffee.jpg'
TIME = '/usr/bin/time'


def efficiency(vision, image: np.ndarray, gflop: float, repeats: int) -> dict[str, float]:
    """Vision-graph GFLOP/s vs fp32 GEMM GFLOP/s (torch.mm, n=2048), runs interleaved.

    Interleaving makes both numbers see the same share of a CPU that other jobs use too;
    the ratio of medians is reported, and the best of each for reference.
    """
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    gemm, graph = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        t1 = time.perf_counter()
        vision.run({'image': image})
        t2 = time.perf_counter()
        gemm.append(2 * n ** 3 / (t1 - t0) / 1e9)
        graph.append(gflop / (t2 - t1))
    return {'gemm': statistics.median(gemm), 'vision': statistics.median(graph),
            'gemm_best': max(gemm), 'vision_best': max(graph)}


def time_engines(engines: dict, image: np.ndarray, queries: dict, repeats: int
                 ) -> dict[str, dict[str, float]]:
    """Median ms of vision and seg per backend, repeats interleaved across backends."""
    times = {name: {'vision': [], 'seg': []} for name in engines}
    for name, e in engines.items():  # warm-up (ORT allocates arenas on the first run)
        e.segment(e.encode(image), **queries)
    for _ in range(repeats):
        for name, e in engines.items():
            t0 = time.perf_counter()
            frame = e.encode(image)
            t1 = time.perf_counter()
            e.segment(frame, **queries)
            t2 = time.perf_counter()
            times[name]['vision'].append((t1 - t0) * 1000)
            times[name]['seg'].append((t2 - t1) * 1000)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def second_vs_first(pipes: dict, image: np.ndarray, prompt: str, repeats: int
                    ) -> dict[str, dict[str, float]]:
    """Median wall ms of a first command on a new frame and of a second one on that frame.

    Same prompt both times (greedy, so the same answer length); backends interleaved.
    """
    times = {name: {'first': [], 'second': [], 'ttft1': [], 'ttft2': []} for name in pipes}
    for name, pipe in pipes.items():  # warm-up: first-call allocations, LLM fast path
        pipe.run(image, prompt, frame_key='warm-up')
    for i in range(repeats):
        for name, pipe in pipes.items():
            key = f'bench-{i}'
            t0 = time.perf_counter()
            first = pipe.run(image, prompt, frame_key=key)
            t1 = time.perf_counter()
            second = pipe.run(image, prompt, frame_key=key)
            t2 = time.perf_counter()
            times[name]['first'].append((t1 - t0) * 1000)
            times[name]['second'].append((t2 - t1) * 1000)
            times[name]['ttft1'].append(_before_decode(first.timing.ms))
            times[name]['ttft2'].append(_before_decode(second.timing.ms))
            times[name]['answer_chars'] = len(second.raw_text)
    return {name: {'first_ms': statistics.median(t['first']),
                   'second_ms': statistics.median(t['second']),
                   'first_ttft_ms': statistics.median(t['ttft1']),
                   'second_ttft_ms': statistics.median(t['ttft2']),
                   'answer_chars': t['answer_chars']} for name, t in times.items()}


def _before_decode(stages: dict[str, float]) -> float:
    """ms until the first answer token: everything but the token-by-token decode."""
    return sum(v for k, v in stages.items() if k not in ('llm_decode', 'mask_decode'))


def peak_rss_mb(model_dir: Path, engines_dir: Path, backend: str, threads: int,
                tokens: int, work: Path) -> float:
    """Peak RSS (MB) of one `segcap infer` process; raises if the command fails.

    Measured by /usr/bin/time (a small parent): the rusage of a child forked from this
    large process would report this process's size at the fork instead.
    """
    cmd = [sys.executable, '-m', 'ros_segcap.cli', 'infer', str(PHOTO), '--prompt',
           'segment the cup', '--model', str(model_dir), '--backend', backend,
           '--max-new-tokens', str(tokens)]
    if not Path(TIME).is_file():
        raise RuntimeError(f'{TIME} is missing (apt-get install time) for the RSS numbers')
    out = work / f'rss-{backend}.txt'
    env = dict(os.environ, SEGCAP_ENGINES=str(engines_dir), OMP_NUM_THREADS=str(threads),
               SEGCAP_ORT_THREADS=str(threads), HF_HUB_OFFLINE='1')
    proc = subprocess.run([TIME, '-f', '%M', '-o', str(out)] + cmd, env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'segcap infer --backend {backend} failed ({proc.returncode}):\n'
                           f'{proc.stderr}')
    return int(out.read_text().split()[-1]) / 1024  # KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--queries', type=int, default=1, help='[SEG] queries per seg call')
    parser.add_argument('--tokens', type=int, default=16, help='max new tokens per command')
    parser.add_argument('--json', help='also write the numbers to this file')
    args = parser.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ['SEGCAP_ORT_THREADS'] = str(args.threads)
    torch.set_num_threads(args.threads)
    import cv2

    from ros_segcap.backends.select import open_runners
    from ros_segcap.export.torch_runner import torch_engines
    from ros_segcap.runtime import PipelineConfig, open_pipeline
    from ros_segcap.core.preprocess import letterbox
    from ros_segcap.models.segcap.weights import load_model, save_model
    from ros_segcap.export.build import export_engines
    from ros_segcap.export.flops import count_flops

    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix='bench-engines-'))
    model = load_model('segcap-tiny')
    model_dir = save_model(model, work / 'segcap-tiny')
    engines_dir = work / 'engines'
    t0 = time.perf_counter()
    entry = export_engines(model, engines_dir, model_arg=str(model_dir), echo=lambda s: None)
    export_s = time.perf_counter() - t0
    engines = {'torch': torch_engines(model),
               'onnxruntime': open_runners(model, 'onnxruntime', directory=engines_dir)}
    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    image = letterbox(rgb, model.config.image_size)[0].numpy()
    rng = np.random.default_rng(0)
    d = model.config.dim
    queries = {'query_feat': rng.standard_normal((1, args.queries, d)).astype(np.float32),
               'query_pos': rng.standard_normal((1, args.queries, d)).astype(np.float32)}
    ms = time_engines(engines, image, queries, args.repeats)
    total = {k: v['vision'] + v['seg'] for k, v in ms.items()}
    speedup = total['torch'] / total['onnxruntime']
    gflop = sum(count_flops(engines_dir / entry['graphs']['vision']['onnx']).values()) / 1e9
    eff = efficiency(engines['onnxruntime'].vision, image, gflop, max(11, args.repeats))
    pipes = {name: open_pipeline(PipelineConfig(model=str(model_dir), backend=name,
                                                engines_dir=str(engines_dir),
                                                max_new_tokens=args.tokens), model=model)
             for name in ('torch', 'onnxruntime')}
    reuse = second_vs_first(pipes, rgb, 'segment the cup', max(3, args.repeats // 2))
    rss = {name: peak_rss_mb(model_dir, engines_dir, name, args.threads, args.tokens, work)
           for name in ('torch', 'onnxruntime')}
    load1 = os.getloadavg()[0]

    def goal(ok: bool) -> str:
        return 'meets goal' if ok else 'MISSES goal'

    print(f'segcap-tiny 512x512, {args.threads} threads, {args.repeats} repeats, '
          f'load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs; '
          f'export took {export_s:.1f} s')
    print(f'1. vision + seg ({args.queries} query): torch eager {total["torch"]:.1f} ms '
          f'(vision {ms["torch"]["vision"]:.1f}, seg {ms["torch"]["seg"]:.1f}); onnxruntime '
          f'{total["onnxruntime"]:.1f} ms (vision {ms["onnxruntime"]["vision"]:.1f}, seg '
          f'{ms["onnxruntime"]["seg"]:.1f}) -> {speedup:.2f}x faster [{goal(speedup >= 1.5)} '
          '>= 1.5x]')
    for name, r in reuse.items():
        ratio = r['second_ms'] / r['first_ms']
        ttft = r['second_ttft_ms'] / r['first_ttft_ms']
        print(f'2. second command on the same frame ({name}, {args.tokens} new tokens max, '
              f'answer {r["answer_chars"]} chars): {r["second_ms"]:.0f} ms vs first '
              f'{r["first_ms"]:.0f} ms -> {ratio:.2f}x [{goal(ratio <= 0.5)} <= 0.5x]; '
              f'time to first token {r["second_ttft_ms"]:.0f} vs {r["first_ttft_ms"]:.0f} ms '
              f'-> {ttft:.2f}x')
    ratio = eff['vision'] / eff['gemm']
    print(f'3. vision graph {gflop:.2f} GFLOP: {eff["vision"]:.1f} GFLOP/s (median; best '
          f'{eff["vision_best"]:.1f}) vs fp32 GEMM {eff["gemm"]:.1f} GFLOP/s (best '
          f'{eff["gemm_best"]:.1f}) -> {ratio:.2f} [{goal(ratio >= 0.4)} >= 0.4]')
    print('4. peak RSS of segcap infer: ' + ', '.join(f'{k} {v:.0f} MB' for k, v in rss.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            'ms': ms, 'speedup': speedup, 'reuse': reuse, 'vision_gflop': gflop,
            'efficiency': eff, 'rss_mb': rss,
            'load': [load0, load1], 'export_s': export_s}, indent=2) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())

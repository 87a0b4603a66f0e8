"""Training throughput per stage and peak RAM, read from the run directories.

    python benchmarks/bench_train.py runs/stage0 runs/stage1 runs/stage2

For each run: optimizer steps, median and mean samples/s over the logged steps (the loop
logs samples/s per step: samples in the step's items * world size / step time; a packed item
counts its samples), total wall time over all resumed chunks and the peak resident memory of
the training process (wall_time.json).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
import statistics
from typing import Any, Optional, Sequence


def summarise(run: Path) -> dict[str, Any]:
    """Throughput and memory of one run directory."""
    with open(run / 'metrics.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    sps = [float(r['samples_per_s']) for r in rows if r.get('samples_per_s')]
    info = json.loads((run / 'wall_time.json').read_text()) if \
        (run / 'wall_time.json').exists() else {}
    cfg = json.loads((run / 'train_config.json').read_text())
    return {'run': str(run), 'stage': cfg['stage'], 'steps': len(rows),
            'samples': len(rows) * cfg['accum'] * max(1, cfg.get('pack', 1)),  # at most
            'samples_per_s_median': statistics.median(sps) if sps else float('nan'),
            'samples_per_s_mean': statistics.fmean(sps) if sps else float('nan'),
            'wall_s': info.get('seconds'), 'peak_rss_mb': info.get('peak_rss_mb')}


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print one line per run and the JSON of all of them."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('runs', nargs='+')
    ap.add_argument('--json', default='', help='also write the summaries here')
    args = ap.parse_args(argv)
    out = [summarise(Path(r)) for r in args.runs]
    for s in out:
        print(f"stage {s['stage']} {s['run']}: {s['steps']} steps, {s['samples']} samples, "
              f"{s['samples_per_s_median']:.2f} samples/s (median), wall {s['wall_s'] or 0:.0f} "
              f"s, peak RSS {s['peak_rss_mb'] or 0:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + '\n')


if __name__ == '__main__':
    main()

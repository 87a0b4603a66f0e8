"""Run a training recipe: the feature cache, then each stage, then the shipped fp16 weights.

    python -m training.recipe training/recipes/segcap-tiny --out runs/segcap-tiny --minutes 60

A recipe is a directory of JSON files, one per step: cache.json (the options of
training.cache) and stage0.json, stage1.json, stage2.json (TrainConfig options of each stage);
an optional second_look.json holds the options of training.second_look, which trains the
shipped model's second look last and writes it into OUT/model.
A stage may run more than once: stage0b.json, say, is a second run of stage 0 that continues
from stage0's model with its own options; the steps run in the order of their names. The
runner supplies the paths: the cache directory, each step's run directory and the previous
step's model as --init. Each step runs in its own process; its wall time and peak
RAM are added up over chunks in OUT/recipe.json.

Resumable: finished steps are skipped, the cache keeps its written shards, and a stage with a
checkpoint continues from it. --minutes stops the run cleanly after that much wall time (a
stage saves a checkpoint first); the same command continues it. The last step writes the
shipped model directory OUT/model (fp16, marked trained).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import re
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

from training.config import make_config, parse_overrides

CACHE_KEYS = ('world', 'scenes', 'start', 'shard_size', 'threads', 'mix', 'model')
LOOK_KEYS = ('world', 'size', 'scenes', 'test_scenes', 'epochs', 'batch', 'lr', 'seed', 'threads')
STAGES = (0, 1, 2)
STAGE_FILE = re.compile(r'stage[0-2][a-z]?\.json')


def stage_names(path: Path) -> list[str]:
    """The recipe's stage steps in running order (their names' order): stage0, stage0b, ...,
    stage1, stage2. The three stages are always there (read_recipe says which is missing)."""
    found = {f.name[:-len('.json')] for f in path.glob('stage*.json')
             if STAGE_FILE.fullmatch(f.name)}
    return sorted(found | {f'stage{s}' for s in STAGES})


def stage_of(name: str) -> int:
    """The stage a step trains: 'stage0b' -> 0."""
    return int(name[len('stage')])


def read_recipe(path: str | Path) -> dict[str, dict[str, Any]]:
    """The step files of a recipe directory in running order, checked (unknown keys raise
    ValueError)."""
    path = Path(path)
    steps: dict[str, dict[str, Any]] = {}
    names = ['cache'] + stage_names(path)
    optional = ['second_look'] if (path / 'second_look.json').is_file() else []
    for name in names + optional:
        f = path / f'{name}.json'
        if not f.is_file():
            raise ValueError(f'recipe {path}: {f.name} is missing')
        values = json.loads(f.read_text())
        if not isinstance(values, dict):
            raise ValueError(f'recipe {f}: must hold a JSON object of options')
        steps[name] = values
    unknown = sorted(set(steps['cache']) - set(CACHE_KEYS))
    if unknown:
        raise ValueError(f'recipe {path}/cache.json: unknown options {unknown}; '
                         f'known: {", ".join(CACHE_KEYS)}')
    unknown = sorted(set(steps.get('second_look', {})) - set(LOOK_KEYS))
    if unknown:
        raise ValueError(f'recipe {path}/second_look.json: unknown options {unknown}; '
                         f'known: {", ".join(LOOK_KEYS)}')
    for name in names[1:]:
        try:
            make_config(stage_of(name), dict(parse_overrides(_flags(steps[name], 'train')),
                                             init='x'))
        except (TypeError, ValueError) as exc:
            raise ValueError(f'recipe {path}/{name}.json: {exc}') from None
    return steps


def _flags(values: dict[str, Any], style: str) -> list[str]:
    if style == 'cache':  # argparse: --shard-size 50
        return [a for k, v in values.items() for a in (f'--{k.replace("_", "-")}', str(v))]
    return [f'--{k}={v}' for k, v in values.items() if k != 'stage']


def commands(steps: dict[str, dict[str, Any]], out: Path, stop_at: float = 0.0
             ) -> list[tuple[str, list[str], Path]]:
    """(step name, argv after `python -m`, the file that exists once the step is done)."""
    cache = out / 'cache'
    todo = [('cache', ['training.cache', '--out', str(cache), '--split', 'train']
             + _flags(steps['cache'], 'cache'), cache / 'done')]
    previous = ''
    for name in (n for n in steps if n.startswith('stage')):
        run = out / name
        argv = ['training.train', '--stage', str(stage_of(name)), f'--out={run}',
                f'--cache={cache}']
        if previous:
            argv.append(f'--init={out / previous / "model"}')
        argv += _flags(steps[name], 'train')
        if stop_at:
            argv.append(f'--stop_at={stop_at:.0f}')
        if (run / 'checkpoint.pt').exists():
            argv.append('--resume')
        todo.append((name, argv, run / 'model' / 'config.json'))
        previous = name
    todo.append(('ship', ['training.ship', '--run', str(out / previous), '--out',
                          str(out / 'model'), '--shipped'], out / 'model' / 'config.json'))
    if 'second_look' in steps:
        look = out / 'second_look'
        todo.append(('second_look', ['training.second_look', '--model', str(out / 'model'),
                                     '--out', str(look), '--save', str(out / 'model')]
                     + _flags(steps['second_look'], 'cache'), look / 'report.json'))
    return todo


def _run(argv: list[str], timeout: Optional[float]) -> tuple[int, float, float]:
    """Run `python -m argv...`; (return code, seconds, peak RSS in MB of that process)."""
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, '-m'] + argv)
    deadline = None if timeout is None else t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        if deadline is not None and time.time() > deadline:
            proc.terminate()  # the cache writes whole shards only: nothing is lost
            deadline = None
        time.sleep(0.5)
    return proc.returncode, time.time() - t0, usage.ru_maxrss / 1024


def _note(log: Path, name: str, seconds: float, peak_mb: float, done: bool) -> None:
    info = json.loads(log.read_text()) if log.exists() else {}
    row = info.setdefault(name, {'seconds': 0.0, 'chunks': 0, 'peak_rss_mb': 0.0})
    row['seconds'] = round(row['seconds'] + seconds, 1)
    row['chunks'] += 1
    row['peak_rss_mb'] = round(max(row['peak_rss_mb'], peak_mb), 1)
    row['done'] = done
    log.write_text(json.dumps(info, indent=2) + '\n')


def run(recipe: str | Path, out: str | Path, minutes: float = 0.0) -> bool:
    """Run every unfinished step; True when the shipped model directory exists."""
    steps = read_recipe(recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / 'recipe.json'
    stop_at = time.time() + 60 * minutes if minutes else 0.0
    for name, argv, done_file in commands(steps, out, stop_at):
        if done_file.exists():
            print(f'recipe: {name} is done ({done_file})', flush=True)
            continue
        left = stop_at - time.time() if stop_at else None
        if left is not None and left <= 0:
            print(f'recipe: out of time before {name}; run the same command to continue',
                  flush=True)
            return False
        print(f'recipe: {name}: python -m {" ".join(argv)}', flush=True)
        code, seconds, peak = _run(argv, left if name == 'cache' else None)
        if name == 'cache' and code == 0:
            done_file.write_text('')
        _note(log, name, seconds, peak, done_file.exists())
        if code != 0 and not (name == 'cache' and left is not None):
            raise SystemExit(f'recipe: {name} failed with exit code {code}')
        if not done_file.exists():
            print(f'recipe: {name} stopped after {seconds / 60:.1f} min; run the same command '
                  'to continue', flush=True)
            return False
    print(f'recipe: done; the model is {out / "model"} (times: {log})', flush=True)
    return True


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line of `run`."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('recipe', help='recipe directory (cache.json, stage0.json, ...)')
    ap.add_argument('--out', required=True, help='run directory of the whole recipe')
    ap.add_argument('--minutes', type=float, default=0.0,
                    help='stop cleanly after this much wall time (0: run to the end)')
    args = ap.parse_args(argv)
    try:
        finished = run(args.recipe, args.out, args.minutes)
    except (ValueError, json.JSONDecodeError) as exc:
        ap.exit(2, f'{ap.prog}: error: {exc}\n')
    sys.exit(0 if finished else 3)


if __name__ == '__main__':
    main()

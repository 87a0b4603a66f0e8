"""One entry point for every stage of the recipe.

    python -m training.cache --scenes 800 --out runs/cache/train        # once
    python -m training.train --stage 0 --steps=1500
    python -m training.train --stage 1 --init=runs/stage0/model
    python -m training.train --stage 2 --init=runs/stage1/model
    torchrun --nproc_per_node=2 -m training.train --stage 2 --init=...    # DDP (gloo on CPU)

Options are the fields of training.config.TrainConfig as --key=value. --resume continues a
run from <out>/checkpoint.pt. At the end, rank 0 writes the trained model directory
<out>/model (model.safetensors + config.json), the input of the next stage.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import resource
import sys
import time
from typing import Any, Optional, Sequence

import torch

from ros_segcap.models.segcap.config import STUFF_NAMES, SegCapConfig
from ros_segcap.models.segcap.weights import save_model
from ros_segcap.world.palette import DEFAULT_VOCAB, Vocabulary
from training.cache import (CachedScene, load_cache, plural_referring, simple_absent,
                            simple_referring)
from training.config import TrainConfig, make_config, parse_overrides
from training.loop import dist_info, last_step, train_loop
from training.stages import build_stage


def model_vocab(config: SegCapConfig) -> Vocabulary:
    """The kinds and colour words a model knows (its thing classes and colour names)."""
    return Vocabulary(tuple(config.class_names[len(STUFF_NAMES):]), tuple(config.colour_names))


def make_items(scenes: list[CachedScene], cfg: TrainConfig,
               vocab: Vocabulary = DEFAULT_VOCAB) -> list[Any]:
    """Stage 0: one item per scene; stages 1-2: one per annotated sample (task filter), or
    per pack of up to cfg.pack samples of one scene. The added simple and plural requests
    use `vocab`'s words (the model's)."""
    if cfg.stage == 0:
        return [(s, None) for s in scenes]
    tasks = cfg.task_list
    items = [(s, a) for s in scenes for a in s.samples if not tasks or a.task in tasks]
    if cfg.simple_refs:
        items += [(s, a) for s in scenes for a in simple_referring(s, cfg.simple_refs)]
    if cfg.simple_absent:
        items += [(s, a) for s in scenes for a in simple_absent(s, cfg.simple_absent, vocab)]
    if cfg.plural_refs:
        items += [(s, a) for s in scenes
                  for a in plural_referring(s, cfg.plural_refs, vocab=vocab)]
    if not items:
        raise ValueError(f'no cached samples for tasks {tasks}; check --tasks and --cache')
    if cfg.pack > 1:  # one item = up to `pack` samples of a scene, one LLM forward
        by_scene: dict[int, list] = {}
        for s, a in items:
            by_scene.setdefault(id(s), [s]).append(a)
        items = [(group[0], group[1 + i:1 + i + cfg.pack])
                 for group in by_scene.values() for i in range(0, len(group) - 1, cfg.pack)]
    return items


def run(cfg: TrainConfig, resume: bool = False,
        scenes: Optional[list[CachedScene]] = None) -> Path:
    """Train one stage; returns the model directory written at the end (or the run dir)."""
    rank, _ = dist_info()
    torch.manual_seed(cfg.seed)
    stage = build_stage(cfg)
    scenes = scenes if scenes is not None else load_cache(cfg.cache, cfg.scenes or None)
    items = make_items(scenes, cfg, model_vocab(stage.model.config))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (run_dir / 'train_config.json').write_text(json.dumps(cfg.to_dict(), indent=2) + '\n')
    if cfg.place_fit and not resume:  # a resumed run takes the fitted head from its checkpoint
        try:
            fit = stage.fit_place_head(scenes[:cfg.place_fit])
        except ValueError as exc:  # no place head, or no description to fit it to
            raise SystemExit(f'training.train: {exc}') from None
        if rank == 0:
            print(f'place head fitted to {fit["descriptions"]} descriptions: MSE '
                  f'{fit["mse_before"]:.3f} -> {fit["mse_after"]:.3f}', file=sys.stderr)
    t0 = time.time()
    train_loop(stage, items, cfg, resume=resume)
    if rank == 0:
        _note_time(run_dir, time.time() - t0, len(items))
    if not _finished(cfg) or rank != 0:
        return run_dir
    model = stage.model
    model.eval()
    return save_model(model, run_dir / 'model', meta={'trained_stage': cfg.stage})


def _finished(cfg: TrainConfig) -> bool:
    state = torch.load(Path(cfg.run_dir) / 'checkpoint.pt', map_location='cpu',
                       weights_only=True)
    return int(state['step']) >= last_step(cfg)


def _note_time(run_dir: Path, seconds: float, n_items: int) -> None:
    """Accumulate wall time over resumed chunks in wall_time.json."""
    path = run_dir / 'wall_time.json'
    info = json.loads(path.read_text()) if path.exists() else {'seconds': 0.0, 'chunks': 0}
    info['seconds'] += seconds
    info['chunks'] += 1
    info['items'] = n_items
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    info['peak_rss_mb'] = max(info.get('peak_rss_mb', 0.0), peak)
    path.write_text(json.dumps(info, indent=2) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse --stage, --resume and --key=value overrides, then train."""
    ap = argparse.ArgumentParser(description='Train a SegCap stage (see module docstring).')
    ap.add_argument('--stage', type=int, required=True, choices=(0, 1, 2))
    ap.add_argument('--resume', action='store_true', help='continue from <out>/checkpoint.pt')
    args, rest = ap.parse_known_args(argv)
    try:
        cfg = make_config(args.stage, parse_overrides(rest))
    except ValueError as exc:
        ap.error(str(exc))
    out = run(cfg, resume=args.resume)
    if dist_info()[0] == 0:
        print(f'stage {cfg.stage}: wrote {out}', file=sys.stderr)


if __name__ == '__main__':
    main()

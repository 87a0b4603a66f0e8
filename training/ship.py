"""Export a run's checkpoint as a model directory, optionally as shipped fp16 weights.

    python -m training.ship --run runs/stage0 --out runs/stage0/model
    python -m training.ship --run runs/stage2 --out ros_segcap/weights/segcap-tiny --shipped

--shipped stores fp16 tensors and marks the model as trained (model.trained = True), which is
what `load_model('segcap-tiny')` picks up from ros_segcap/weights/.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import torch

from ros_segcap.models.segcap.weights import save_model
from training.config import make_config
from training.loop import CHECKPOINT
from training.stages import build_stage


def export(run: str | Path, out: str | Path, shipped: bool = False) -> Path:
    """Rebuild the run's stage, load its checkpoint's trained tensors, save a model dir."""
    run = Path(run)
    values = json.loads((run / 'train_config.json').read_text())
    stage = build_stage(make_config(values.pop('stage'), values))
    state = torch.load(run / CHECKPOINT, map_location='cpu', weights_only=True)
    params = dict(stage.named_parameters())
    with torch.no_grad():
        for name, value in state['params'].items():
            params[name].copy_(value)
    model = stage.model.eval()
    model.trained = shipped
    meta = {'trained_stage': values.get('stage', stage.cfg.stage), 'steps': state['step']}
    return save_model(model, out, dtype=torch.float16 if shipped else None, meta=meta)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line of `export`."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--run', required=True, help='run directory with checkpoint.pt')
    ap.add_argument('--out', required=True, help='model directory to write')
    ap.add_argument('--shipped', action='store_true', help='fp16 and trained=True')
    args = ap.parse_args(argv)
    print(export(args.run, args.out, args.shipped))


if __name__ == '__main__':
    main()

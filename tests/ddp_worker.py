"""torchrun worker for test_train: train, then dump this rank's trained parameters."""
from __future__ import annotations

import argparse
from pathlib import Path
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.config import make_config, parse_overrides  # noqa: E402
from training.loop import trained_state  # noqa: E402
from training.stages import build_stage  # noqa: E402
from training.loop import dist_info, train_loop  # noqa: E402
from training.train import make_items  # noqa: E402
from training.cache import load_cache  # noqa: E402


def main() -> None:
    """Run the stage under DDP and save rank{r}.pt with the trained tensors."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--stage', type=int, required=True)
    args, rest = ap.parse_known_args()
    cfg = make_config(args.stage, parse_overrides(rest))
    rank, _ = dist_info()
    torch.manual_seed(cfg.seed + 17 * rank)  # different random init per rank on purpose
    stage = build_stage(cfg)
    items = make_items(load_cache(cfg.cache), cfg)
    train_loop(stage, items, cfg)
    torch.save(trained_state(stage), Path(cfg.run_dir) / f'rank{rank}.pt')
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main()

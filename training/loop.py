"""The training loop shared by every stage: AdamW, cosine schedule with warmup, gradient
accumulation, fp32/bf16, DDP (torchrun, gloo on CPU), atomic checkpoints and exact resume.

Exact resume: the sample order is a pure function of (seed, global sample index), the random
state is re-seeded from (seed, step, rank) at every step, and a checkpoint holds the trained
tensors, the optimizer and the scheduler, so stopping at step k and resuming gives the same
parameters as an uninterrupted run.
"""
from __future__ import annotations

from contextlib import nullcontext
import math
import os
from pathlib import Path
import random
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training.config import TrainConfig
from training.runlog import RunLog

CHECKPOINT = 'checkpoint.pt'


def dist_info() -> tuple[int, int]:
    """(rank, world size); initialises the gloo process group under torchrun."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group('gloo')
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def cosine_lambda(cfg: TrainConfig):
    warm = max(1, int(round(cfg.warmup * cfg.steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, cfg.steps - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def build_optimizer(stage: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, embeddings and 1-d tensors; the projectors
    learn at lr * proj_lr_mult, their place head (place_anchor) at lr * place_lr_mult if that
    is set."""
    groups: dict[tuple[bool, float], list] = {}
    for name, p in stage.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or 'embed' in name or 'norm' in name or 'separator' in name
        mult = cfg.proj_lr_mult if 'projectors.' in name else 1.0
        if cfg.place_lr_mult and 'projectors.place_head.' in name:
            mult = cfg.place_lr_mult
        groups.setdefault((plain, mult), []).append(p)
    return torch.optim.AdamW(
        [{'params': ps, 'weight_decay': 0.0 if plain else cfg.weight_decay,
          'lr': cfg.lr * mult}
         for (plain, mult), ps in sorted(groups.items())], lr=cfg.lr)


def trained_state(stage: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in stage.named_parameters() if p.requires_grad}


def save_checkpoint(path: Path, stage: nn.Module, opt, sched, step: int, cfg: TrainConfig
                    ) -> None:
    """Write the checkpoint atomically: temp file in the same directory, fsync, rename."""
    state = {'step': step, 'params': trained_state(stage), 'optimizer': opt.state_dict(),
             'scheduler': sched.state_dict(), 'config': cfg.to_dict()}
    tmp = path.with_name(f'.{path.name}.tmp')
    with open(tmp, 'wb') as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, stage: nn.Module, opt, sched) -> int:
    """Restore a checkpoint written by save_checkpoint; returns the next step."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    params = dict(stage.named_parameters())
    with torch.no_grad():
        for name, value in state['params'].items():
            params[name].copy_(value)
    opt.load_state_dict(state['optimizer'])
    sched.load_state_dict(state['scheduler'])
    return int(state['step'])


def sample_index(cfg: TrainConfig, n_items: int, global_index: int) -> int:
    """Item of the g-th sample: a fresh permutation of the items per epoch, seeded."""
    epoch, pos = divmod(global_index, n_items)
    perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_items)
    return int(perm[pos])


def seed_step(cfg: TrainConfig, step: int, rank: int) -> None:
    seed = (cfg.seed * 1_000_003 + step * 1009 + rank) % (2 ** 31)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def train_loop(stage: nn.Module, items: Sequence[Any], cfg: TrainConfig,
               resume: bool = False) -> nn.Module:
    """Run cfg.steps optimizer steps of `stage` over `items`; returns the (unwrapped) stage."""
    rank, world = dist_info()
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if world > 1:  # identical start on every rank
        for p in stage.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, 0)
    opt = build_optimizer(stage, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(cfg))
    start = 0
    ckpt = run_dir / CHECKPOINT
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f'--resume: no checkpoint in {run_dir}; start without '
                                    '--resume')
        start = load_checkpoint(ckpt, stage, opt, sched)
    module = stage
    if world > 1:
        module = nn.parallel.DistributedDataParallel(stage, find_unused_parameters=True,
                                                     broadcast_buffers=False)
    log = RunLog(run_dir, start, enabled=rank == 0)
    _steps(module, stage, items, cfg, opt, sched, start, (rank, world), log)
    log.close()
    return stage


def _steps(module, stage, items, cfg: TrainConfig, opt, sched, start: int,
           rw: tuple[int, int], log: RunLog) -> None:
    rank, world = rw
    params = [p for p in stage.parameters() if p.requires_grad]
    autocast = (torch.autocast('cpu', dtype=torch.bfloat16) if cfg.precision == 'bf16'
                else nullcontext())
    last = last_step(cfg)
    end = last if not cfg.stop_after else min(last, start + cfg.stop_after)
    bar = _progress(start, end, last, rank)
    for step in range(start, end):
        t0 = time.perf_counter()
        seed_step(cfg, step, rank)
        totals: dict[str, float] = {}
        n_samples = 0
        for a in range(cfg.accum):
            g = (step * cfg.accum + a) * world + rank
            item = items[sample_index(cfg, len(items), g)]
            n_samples += len(item[1]) if isinstance(item[1], list) else 1  # packs hold several
            sync = a == cfg.accum - 1 or world == 1
            with (nullcontext() if sync else module.no_sync()), autocast:
                loss, logs = module(item)
            if loss.requires_grad:  # with train_only, a sample may touch no trained part
                (loss / cfg.accum).backward()
            for k, v in dict(logs, loss=float(loss.detach())).items():
                totals[k] = totals.get(k, 0.0) + v / cfg.accum
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        row = dict(step=step + 1, lr=sched.get_last_lr()[0], grad_norm=float(gnorm),
                   samples_per_s=n_samples * world / dt, **totals)
        log.add(row, write=(step + 1) % cfg.log_every == 0 or step + 1 == end)
        bar.update(1)
        bar.set_postfix(loss=f'{totals["loss"]:.3f}', refresh=False)
        out_of_time = bool(cfg.stop_at) and time.time() >= cfg.stop_at
        if cfg.stop_at and world > 1:  # every rank stops after the same step
            flag = torch.tensor([int(out_of_time)])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or step + 1 == end or out_of_time):
            save_checkpoint(Path(cfg.run_dir) / CHECKPOINT, stage, opt, sched, step + 1, cfg)
        if out_of_time:
            break
    bar.close()


def last_step(cfg: TrainConfig) -> int:
    """The step after which the run is finished: end_step if set, else steps."""
    return min(cfg.steps, cfg.end_step) if cfg.end_step else cfg.steps


def _progress(start: int, end: int, total: int, rank: int):
    from tqdm import tqdm
    return tqdm(total=total, initial=start, disable=rank != 0, mininterval=5.0,
                dynamic_ncols=False, ascii=True)

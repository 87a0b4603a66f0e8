"""Train the second look (ros_segcap/models/segcap/second_look.py) of a segcap model.

Crops come from rendered training scenes of the varied world: each object's exact mask on
the model's mask grid, its box jittered in place and size as a decoder mask's would be.
Only the second look's own blocks and head train; the rest of the model is untouched.

    python -m training.second_look --model runs/segcap-tiny/model --out runs/second_look

It writes the model with its second look to OUT/model (or --save DIR) and the kind accuracy
on crops of test scenes (exact masks, train and held-out styles) to OUT/report.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ros_segcap.core.preprocess import letterbox
from ros_segcap.models.segcap.config import STUFF_NAMES
from ros_segcap.models.segcap.encoder import normalize_image
from ros_segcap.models.segcap.second_look import mask_boxes, square_crops
from ros_segcap.world.render import FIRST_OBJECT_ID
from training.data.tabletop import world_scene

JITTER = 0.12  # box corners move by up to this share of the box's width / height


def grid_masks(panoptic: np.ndarray, box, size: int, stride: int, n_objects: int
               ) -> np.ndarray:
    """Each object's mask on the model's mask grid (cells at least half covered):
    (n_objects, size // stride, size // stride) bool, from a (H, W) panoptic id map."""
    canvas = np.full((size, size), -1, np.int32)
    nh, nw = round(box.height * box.scale), round(box.width * box.scale)
    top, left = int(box.top), int(box.left)
    canvas[top:top + nh, left:left + nw] = cv2.resize(panoptic, (nw, nh),
                                                      interpolation=cv2.INTER_NEAREST)
    g = size // stride
    cells = canvas.reshape(g, stride, g, stride)
    return np.stack([(cells == FIRST_OBJECT_ID + k).mean((1, 3)) >= 0.5
                     for k in range(n_objects)])


def scene_crops(world: str, split: str, styles: str, index: int, size: int, image_size: int,
                stride: int, rng: np.random.Generator, jitter: float = JITTER):
    """(crops uint8 (N, 3, size, size), masks uint8 (N, size, size), kinds [str]) of one
    scene's objects that cover at least one mask cell."""
    scene = world_scene(split, index, 480, 640, world, styles)
    image, box = letterbox(scene.image, image_size)
    masks = grid_masks(scene.panoptic, box, image_size, stride, len(scene.objects))
    seen = masks.reshape(len(masks), -1).any(1)
    if not seen.any():
        return None
    masks_t = torch.from_numpy(masks[seen])
    boxes = mask_boxes(masks_t, stride)
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    boxes = boxes + torch.from_numpy(rng.uniform(-jitter, jitter, boxes.shape)).float() * wh
    crops = square_crops(image, boxes, size)
    crop_masks = square_crops(masks_t[:, None].float(), boxes / stride, size)
    kinds = [o.kind for o, s in zip(scene.objects, seen) if s]
    return (crops.round().clamp(0, 255).to(torch.uint8),
            (crop_masks[:, 0] * 255).round().to(torch.uint8), kinds)


def collect(world: str, split: str, styles: str, n: int, size: int, image_size: int,
            stride: int, seed: int, kinds: list[str]):
    """Crops, masks and kind indices (into `kinds`) of the objects of scenes 0..n-1."""
    rng = np.random.default_rng(seed)
    crops, masks, labels = [], [], []
    for i in tqdm(range(n), desc=f'crops {split}/{styles}', unit='scene'):
        got = scene_crops(world, split, styles, i, size, image_size, stride, rng)
        if got is None:
            continue
        crops.append(got[0])
        masks.append(got[1])
        labels += [kinds.index(k) for k in got[2]]
    return torch.cat(crops), torch.cat(masks), torch.tensor(labels)


def logits_of(model, crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The second look's kind logits of uint8 crops and masks."""
    x = normalize_image(model.config, crops.float())
    return model.second_look(model.backbone, x, masks[:, None].float() / 255)


def accuracy(model, crops, masks, labels, batch: int = 256) -> float:
    """Share of crops whose kind the second look names right."""
    model.second_look.eval()
    with torch.no_grad():
        pred = torch.cat([logits_of(model, crops[i:i + batch], masks[i:i + batch]).argmax(1)
                          for i in range(0, len(labels), batch)])
    return float((pred == labels).float().mean())


def train(model, data, epochs: int, batch: int, lr: float, seed: int) -> list[float]:
    """Train model.second_look on data (crops, masks, labels); the losses per step."""
    crops, masks, labels = data
    batch = min(batch, len(labels))
    look = model.second_look
    opt = torch.optim.AdamW(look.parameters(), lr, weight_decay=1e-4)
    steps = epochs * (len(labels) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    bar = tqdm(total=steps, desc='second look', unit='step')
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=gen)
        for k in range(len(labels) // batch):
            idx = order[k * batch:(k + 1) * batch]
            x, m = crops[idx], masks[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip], m[flip] = x[flip].flip(-1), m[flip].flip(-1)
            look.train()
            for mod in look.modules():  # BatchNorm keeps the backbone's statistics
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.eval()
            loss = F.cross_entropy(logits_of(model, x, m), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f'{np.mean(losses[-50:]):.3f}')
    bar.close()
    look.eval()
    return losses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default='ros_segcap/weights/segcap-tiny')
    ap.add_argument('--world', default='varied', choices=('varied', 'default'))
    ap.add_argument('--size', type=int, default=112)
    ap.add_argument('--scenes', type=int, default=3000)
    ap.add_argument('--test-scenes', type=int, default=200)
    ap.add_argument('--epochs', type=int, default=4)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', required=True, help='run directory (report.json)')
    ap.add_argument('--save', help='model directory to write (default OUT/model)')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from ros_segcap.models.segcap.weights import load_model, resolve_model_dir, save_model
    from ros_segcap.models.segcap.second_look import SecondLook
    model = load_model(args.model)
    cfg = model.config
    kinds = [c for c in cfg.class_names if c not in STUFF_NAMES]
    if model.second_look is None:
        model.second_look = SecondLook(model.backbone, len(kinds), args.size)
    start = time.time()
    data = collect(args.world, 'train', 'train', args.scenes, args.size, cfg.image_size,
                   cfg.mask_stride, args.seed, kinds)
    styles = ('train', 'held_out') if args.world == 'varied' else ('train',)
    tests = {s: collect(args.world, 'test', s, args.test_scenes, args.size, cfg.image_size,
                        cfg.mask_stride, args.seed + 1, kinds) for s in styles}
    print(f'{len(data[2])} training crops in {time.time() - start:.0f} s')
    t0 = time.time()
    losses = train(model, data, args.epochs, args.batch, args.lr, args.seed)
    seconds = time.time() - t0
    after = {s: accuracy(model, *t) for s, t in tests.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.config = dataclasses.replace(cfg, second_look=args.size)
    info = json.loads((Path(resolve_model_dir(args.model)) / 'config.json').read_text())
    meta = {k: info[k] for k in ('trained_stage', 'steps') if k in info}
    save_model(model, args.save or out / 'model', dtype=torch.float16, meta=meta)
    report = {'crops': len(data[2]), 'train_seconds': round(seconds),
              'samples_per_s': round(args.epochs * len(data[2]) / seconds, 1),
              'kind_accuracy': after,
              'last_loss': float(np.mean(losses[-100:]))}
    (out / 'report.json').write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

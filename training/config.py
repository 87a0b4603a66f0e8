"""Training configs: one frozen dataclass for every stage, per-stage defaults, --key=value.

    python -m training.train --stage 2 --steps=800 --lr=2e-4 --init=runs/stage1/model

Every field of TrainConfig can be overridden with --key=value (types follow the field);
`--resume` continues the run in `out` from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Sequence


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are overwritten by STAGE_DEFAULTS[stage], then by flags."""

    stage: int = 0
    model: str = 'segcap-tiny'  # registry name (stage 0) of the architecture
    init: str = ''  # model directory of the previous stage (stages 1 and 2)
    cache: str = 'runs/cache/train'  # feature cache directory (python -m training.cache)
    scenes: int = 0  # use the first N cached scenes (0 = all)
    tasks: str = ''  # comma-separated task filter for stages 1-2 ('' = all)
    simple_refs: int = 0  # stages 1-2: add N 'segment the <colour> <kind>' samples per scene
    simple_absent: int = 0  # stages 1-2: add N such requests for pairs the scene does not have
    plural_refs: int = 0  # stages 1-2: add N 'segment all the <group>' requests of >= 3 targets
    train_only: str = ''  # stages 1-2: comma-separated parameter-name prefixes to train
    # (e.g. 'projectors.'); everything else of the stage stays frozen ('' = all)
    pack: int = 1  # stages 1-2: samples of one scene per LLM forward (training.pack)
    out: str = ''  # run directory ('' = runs/stage{stage})
    steps: int = 100  # optimizer steps
    accum: int = 4  # samples per optimizer step and process (gradient accumulation)
    lr: float = 1e-4
    warmup: float = 0.03  # fraction of steps with a linear warmup
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: str = 'fp32'  # fp32 | bf16 (autocast)
    seed: int = 0
    threads: int = 1  # torch intra-op threads per process
    log_every: int = 5
    ckpt_every: int = 25  # steps between checkpoints
    stop_after: int = 0  # stop this process after N steps (chunked runs; 0 = run to the end)
    end_step: int = 0  # the run ends for good after this step, though its learning-rate
    # schedule spans `steps` (0 = steps); the model is written there
    stop_at: float = 0.0  # stop this process after the step that ends past this Unix time
    # (with a checkpoint; training.recipe --minutes sets it; 0 = no time limit)
    # losses
    mse_weight: float = 10.0  # stage 1: text2vision(object path(q)) vs q
    bce_weight: float = 2.0  # stage 2: per [SEG] mask and decoder layer
    dice_weight: float = 0.5
    # stage 2: each [SEG] query also learns which frame object it means: its text2vision
    # output scores the frame's object queries (cosine / ptr_temperature) with CE against
    # the query whose mask best overlaps the target, plus an MSE pull towards that query
    ptr_weight: float = 0.0
    ptr_mse_weight: float = 0.0
    ptr_temperature: float = 0.1
    ptr_min_iou: float = 0.5  # skip the pointer loss when no query covers the target
    # (models with seg_pointer replace the mask and pointer losses by one CE over their object
    # tokens, see LanguageStage.object_pointer; ptr_min_iou still applies)
    # stage 2, models with word_anchor: the colour head on the object tokens, trained with CE
    # against the colour word of every grounded-caption phrase whose mask a frame query
    # covers (IoU >= 0.5): it pushes colour into the tokens the LLM reads
    colour_weight: float = 0.0
    # stage 2, models with place_anchor: the place head, trained with MSE against the place
    # words of every region description ('... at the front left of the table.') on the
    # described object's prompt mask
    place_weight: float = 0.0
    place_lr_mult: float = 0.0  # learning-rate multiplier of the place head (0 = that of
    # the projectors): its 3 inputs need weights of about 10 to say a place sharply
    place_fit: int = 0  # fit the place head to the region descriptions of the first N
    # scenes before step 1 (LanguageStage.fit_place_head; 0 = no fit)
    proj_lr_mult: float = 1.0  # learning-rate multiplier of the projectors
    class_weight: float = 2.0  # stage 0 Hungarian losses (Mask2Former weights)
    mask_bce_weight: float = 5.0
    mask_dice_weight: float = 5.0
    void_weight: float = 0.1  # class weight of unmatched queries (no object)
    prompt_weight: float = 1.0  # stage 0 prompt queries vs their target mask
    # stage 0, models with proposals: the centre heatmap's focal loss, and the class of the
    # prompt queries (a proposal's class is its prompt query's); the first stuff_classes
    # classes (background, table) have no centres
    centre_weight: float = 1.0
    prompt_class_weight: float = 1.0
    stuff_classes: int = 2
    # LoRA (stage 2)
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05

    @property
    def run_dir(self) -> str:
        return self.out or f'runs/stage{self.stage}'

    @property
    def task_list(self) -> tuple[str, ...]:
        return tuple(t for t in self.tasks.split(',') if t)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    0: dict(lr=1e-4, accum=2, steps=1500, weight_decay=0.05, ckpt_every=100, log_every=10),
    1: dict(lr=1e-3, accum=4, steps=120, ckpt_every=20),
    2: dict(lr=2e-4, accum=4, steps=800, ckpt_every=20, ptr_weight=1.0, ptr_mse_weight=0.1),
}


def _convert(field: dataclasses.Field, text: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if kind == 'int':
        return int(text)
    if kind == 'float':
        return float(text)
    if kind == 'bool':
        if text.lower() not in ('true', 'false', '1', '0'):
            raise ValueError(f'--{field.name} takes true or false, got {text!r}')
        return text.lower() in ('true', '1')
    return text


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """['--lr=1e-3', '--steps=10'] -> {'lr': 0.001, 'steps': 10}; unknown keys raise."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith('--') or '=' not in arg:
            raise ValueError(f'expected --key=value, got {arg!r}')
        key, value = arg[2:].split('=', 1)
        key = key.replace('-', '_')
        if key not in fields:
            raise ValueError(f'unknown option --{key}; known: {", ".join(sorted(fields))}')
        out[key] = _convert(fields[key], value)
    return out


def make_config(stage: int, overrides: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The config of a stage: dataclass defaults < STAGE_DEFAULTS[stage] < overrides."""
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f'stage must be one of {sorted(STAGE_DEFAULTS)}, got {stage}')
    values = dict(STAGE_DEFAULTS[stage], **(overrides or {}), stage=stage)
    cfg = TrainConfig(**values)
    if cfg.precision not in ('fp32', 'bf16'):
        raise ValueError(f'precision must be fp32 or bf16, got {cfg.precision!r}')
    if cfg.place_fit and stage == 0:
        raise ValueError('place_fit is an option of stages 1 and 2 (it fits a projector)')
    if stage > 0 and not cfg.init:
        raise ValueError(f'stage {stage} starts from the previous stage: pass '
                         f'--init=runs/stage{stage - 1}/model')
    return cfg

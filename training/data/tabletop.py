"""The procedural tabletop world as training / evaluation Samples.

Sample `i` of a split is scene `split_seed(split, seed_offset + i)` (train [0, 1e6),
val [1e6, 1e6 + 1e4), test [2e6, 2e6 + 1e4): never overlapping) with the task
`tasks[i % len(tasks)]`. Train samples mix the paper's fixed questions with paraphrases and
use random prompt points; val/test use only the fixed questions and inner-most prompt points.
A region sample on a scene with nothing big enough to prompt (tiny images) becomes a caption.
Every sample also carries the scene's panoptic segments (for stage 0).

world='varied' uses the domain-randomised world (ros_segcap.world.varied) on the same seeds,
with styles='train' or 'held_out' families (held-out only for the test split); its
panoptic classes follow the varied vocabulary (world.varied.VOCAB).
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import numpy as np

from ros_segcap.core.types import VisualPrompt
from ros_segcap.world import TASKS, annotate, render, sample_scene, split_seed
from ros_segcap.world.annotate import Annotation, PromptSpec
from ros_segcap.world.render import Scene
from ros_segcap.world.varied import render_varied, sample_varied_split
from training.data.sample import Sample

ImageSize = Union[int, tuple[int, int]]  # S (square) or (H, W)
WORLDS = ('default', 'varied')


def _hw(image_size: ImageSize) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _check_tasks(tasks: Optional[Sequence[str]]) -> tuple[str, ...]:
    tasks = TASKS if tasks is None else tuple(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise ValueError(f'unknown or no tasks {bad or tasks}; choose from {TASKS}')
    return tasks


def to_visual_prompt(p: PromptSpec) -> VisualPrompt:
    """Convert a world prompt into the runtime's VisualPrompt."""
    return VisualPrompt(kind=p.kind, point=p.point, box=p.box, mask=p.mask)


def tabletop_sample(split: str, index: int, image_size: ImageSize = 512, task: str = 'referring',
                    seed_offset: int = 0, world: str = 'default', styles: str = 'train'
                    ) -> Sample:
    """Build one Sample: scene `split_seed(split, seed_offset + index)` and a `task` annotation."""
    return tabletop_example(split, index, image_size, task, seed_offset, world, styles)[0]


def world_scene(split: str, index: int, h: int, w: int, world: str = 'default',
                styles: str = 'train') -> Scene:
    """Scene `index` of a split of a world, rendered at (h, w)."""
    if world == 'default':
        return render(sample_scene(split_seed(split, index)), h, w)
    if world == 'varied':
        return render_varied(sample_varied_split(split, index, styles, aspect=w / h), h, w)
    raise ValueError(f'unknown world {world!r}; use one of {WORLDS}')


def tabletop_example(split: str, index: int, image_size: ImageSize = 512,
                     task: str = 'referring', seed_offset: int = 0, world: str = 'default',
                     styles: str = 'train') -> tuple[Sample, Annotation]:
    """tabletop_sample and the world's annotation it came from (its expression's form...)."""
    _check_tasks([task])
    seed = split_seed(split, seed_offset + index)
    h, w = _hw(image_size)
    scene = world_scene(split, seed_offset + index, h, w, world, styles)
    rng = np.random.default_rng([seed, TASKS.index(task), 31337])
    ann = annotate(scene, task, rng, fixed=split != 'train')
    pan_masks, pan_classes = scene.panoptic_segments()
    sample = Sample(image=scene.image, question=ann.question, answer=ann.answer, task=ann.task,
                    masks=[scene.panoptic == s for s in ann.seg_ids],
                    prompts=[to_visual_prompt(p) for p in ann.prompts],
                    panoptic_masks=pan_masks, panoptic_classes=pan_classes,
                    source=(f'tabletop/{split}/{seed}/{task}' if world == 'default' else
                            f'{world}-{styles}/{split}/{seed}/{task}'))
    sample.check()
    return sample, ann


def tabletop_samples(split: str, n: int, image_size: ImageSize = 512,
                     tasks: Optional[Sequence[str]] = None, seed_offset: int = 0,
                     world: str = 'default', styles: str = 'train') -> Iterator[Sample]:
    """Yield n Samples of a split, cycling through `tasks` (default: all TASKS).

    Deterministic: the same arguments always give the same samples.
    """
    tasks = _check_tasks(tasks)
    for i in range(n):
        yield tabletop_sample(split, i, image_size, tasks[i % len(tasks)], seed_offset, world,
                              styles)


class TabletopDataset:
    """A fixed-length, indexable view of tabletop_samples (renders on access, torch-free)."""

    def __init__(self, split: str, n: int, image_size: ImageSize = 512,
                 tasks: Optional[Sequence[str]] = None, seed_offset: int = 0,
                 world: str = 'default', styles: str = 'train') -> None:
        """Hold the arguments; raise now if the split is too small for n samples."""
        self.tasks = _check_tasks(tasks)
        if n < 0:
            raise ValueError(f'n must be >= 0, got {n}')
        if n:
            split_seed(split, seed_offset + n - 1)  # raises with the split's size
        self.split, self.n, self.image_size, self.seed_offset = split, n, image_size, seed_offset
        self.world, self.styles = world, styles

    def __len__(self) -> int:
        """Return the number of samples."""
        return self.n

    def __getitem__(self, i: int) -> Sample:
        """Render sample i (negative indices count from the end)."""
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f'index {i} out of range for {self.n} samples')
        return tabletop_sample(self.split, i, self.image_size, self.tasks[i % len(self.tasks)],
                               self.seed_offset, self.world, self.styles)

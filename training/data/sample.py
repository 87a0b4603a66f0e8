"""The one sample type every dataset maps into (the unified answer format of MGLMM)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ros_segcap.core.types import VisualPrompt

TASKS = ('referring', 'absent', 'gcg', 'region', 'caption', 'vqa', 'panoptic')


@dataclass
class Sample:
    """One training / evaluation example.

    question: the user turn. Each '<region>' (box or mask prompt) or '<mark>' (point prompt)
    in it matches, in order, one entry of `prompts`.
    answer: the assistant turn in the unified format, e.g.
    '<p> the red cup </p> [SEG].'; each '[SEG]' matches, in order, one entry of `masks`.
    panoptic: for stage 0, instance masks and their class ids (thing or stuff).
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    question: str
    answer: str
    task: str
    masks: list[np.ndarray] = field(default_factory=list)  # (H, W) bool, one per [SEG]
    prompts: list[VisualPrompt] = field(default_factory=list)
    panoptic_masks: Optional[np.ndarray] = None  # (N, H, W) bool
    panoptic_classes: Optional[np.ndarray] = None  # (N,) int64 class ids
    source: str = ''  # dataset name and id, for debugging

    def check(self) -> None:
        """Raise ValueError if the counts of [SEG]/masks or <region>/<mark>/prompts disagree."""
        n_seg = self.answer.count('[SEG]')
        if n_seg != len(self.masks):
            raise ValueError(f'{self.source}: answer has {n_seg} [SEG] but '
                             f'{len(self.masks)} masks')
        n_prompt = self.question.count('<region>') + self.question.count('<mark>')
        if n_prompt != len(self.prompts):
            raise ValueError(f'{self.source}: question has {n_prompt} <region>/<mark> but '
                             f'{len(self.prompts)} prompts')
        if self.task not in TASKS:
            raise ValueError(f'{self.source}: unknown task {self.task!r}')

"""The two engine graphs of an OMG-LLaVA model as torch modules (what `segcap export` traces).

Names and order: ros_segcap.core.spec. The seg graph holds the [SEG] decoder (the *_llm copy
when the checkpoint has one); memory positions depend on the sizes only, so they are
constants of the seg graph rather than inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from ros_segcap.core.frames import FrameFeatures
from ros_segcap.core.spec import memory_sides, seg_memory_levels

from .model import OMGLlavaModel
from .positional import sine_3d_single_frame


class VisionGraph(nn.Module):
    """image (1, 3, S, S) float 0..255 -> the vision outputs, in spec order."""

    def __init__(self, model: OMGLlavaModel) -> None:
        super().__init__()
        self.model = model
        self.train(False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.model.encode(image)
        return (f.pixel_tokens, f.mask_features, *f.memories, *f.memory_pos, f.class_logits,
                f.mask_logits, f.query_feat, f.query_pos)


class SegGraph(nn.Module):
    """N independent [SEG]-decoder queries against one frame -> last-layer outputs."""

    def __init__(self, model: OMGLlavaModel) -> None:
        super().__init__()
        self.model = model
        self.sides = memory_sides(model.config)
        self.levels = seg_memory_levels(model.config)
        self.train(False)

    def forward(self, query_feat: torch.Tensor, query_pos: torch.Tensor,
                restrict: torch.Tensor, mask_features: torch.Tensor, *memories: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        """Inputs in seg-spec order; memories are the levels in self.levels."""
        d = self.model.config.dim
        full = [mask_features.new_zeros(1, s * s, d) for s in self.sides]
        for level, m in zip(self.levels, memories):
            full[level] = m
        pos = [sine_3d_single_frame(s, s, num_feats=d // 2, device=mask_features.device)
               for s in self.sides]
        frame = FrameFeatures(pixel_tokens=mask_features.new_zeros(1, 0, 1),
                              mask_features=mask_features, memories=full, memory_pos=pos,
                              class_logits=mask_features.new_zeros(1, 0, 1),
                              mask_logits=mask_features.new_zeros(1, 0, 1, 1),
                              query_feat=query_feat, query_pos=query_pos)
        out = self.model.decode_queries(frame, query_feat, query_pos, restrict)
        return out.mask_logits[-1], out.class_logits[-1], out.query_feat, out.query_pos

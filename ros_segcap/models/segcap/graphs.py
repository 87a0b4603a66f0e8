"""The two engine graphs of a segcap model as torch modules (what `segcap export` traces).

They call the model's own modules, so the exported engines and `SegCapModel.encode` /
`decode_queries` compute the same thing. The graphs' names: ros_segcap.core.spec.
"""
from __future__ import annotations

import torch
from torch import nn

from ros_segcap.core.spec import memory_sides, seg_memory_levels

from .encoder import sine_position
from .model import SegCapModel


class VisionGraph(nn.Module):
    """image (1, 3, S, S) float 0..255 -> the vision outputs, in spec order."""

    def __init__(self, model: SegCapModel) -> None:
        super().__init__()
        self.model = model
        self.train(False)  # inference graph; also what torch.onnx.export restores afterwards

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.model.encode(image)
        fine = () if f.fine is None else (f.fine,)
        return (f.pixel_tokens, f.mask_features, *f.memories, *f.memory_pos, f.class_logits,
                f.mask_logits, f.query_feat, f.query_pos, *fine)


class SegGraph(nn.Module):
    """N independent queries against one frame -> last-layer masks, classes, final queries.

    Memory positions depend on the weights only, so they are computed here (and folded into
    constants by the ONNX export) instead of being inputs.
    """

    def __init__(self, model: SegCapModel) -> None:
        super().__init__()
        self.model = model
        self.sides = memory_sides(model.config)
        self.levels = seg_memory_levels(model.config)  # memory inputs the decoder reads
        self.train(False)

    def memory_pos(self) -> list[torch.Tensor]:
        """(h*w, D) per level, the same values PixelDecoder.forward returns."""
        pd = self.model.pixel_decoder
        d = self.model.config.dim
        return [sine_position(s, s, d, device=pd.level_embed.device) + pd.level_embed[i]
                for i, s in enumerate(self.sides)]

    def forward(self, query_feat: torch.Tensor, query_pos: torch.Tensor,
                restrict: torch.Tensor, mask_features: torch.Tensor, *memories: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        """Inputs in seg-spec order; memories are the levels in self.levels."""
        d = self.model.config.dim
        full = [mask_features.new_zeros(1, s * s, d) for s in self.sides]  # unread levels
        for level, m in zip(self.levels, memories):
            full[level] = m
        out = self.model.decoder(query_feat, query_pos, mask_features, full, self.memory_pos(),
                                 restrict, independent=True)
        return out.mask_logits[-1], out.class_logits[-1], out.query_feat, out.query_pos

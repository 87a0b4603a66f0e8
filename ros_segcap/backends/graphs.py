"""The two engine graphs as torch modules (exported to ONNX, run by the torch backend).

They call the model's own modules, so the torch backend and `SegCapModel.encode` /
`decode_queries` compute the same thing. Conversions between the graphs' named arrays and
FrameFeatures / DecoderOutput live here too.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from ros_segcap.models.segcap.decoder import DecoderOutput
from ros_segcap.models.segcap.encoder import sine_position
from ros_segcap.models.segcap.model import FrameFeatures, SegCapModel

from .spec import MEMORY_LEVELS, memory_sides, seg_memory_levels


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


def frame_from_outputs(outputs: Mapping[str, np.ndarray],
                       device: str | torch.device = 'cpu') -> FrameFeatures:
    """FrameFeatures (torch, batch 1) from the vision graph's named outputs."""
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(outputs[name])).to(device)

    return FrameFeatures(
        pixel_tokens=t('pixel_tokens'), mask_features=t('mask_features'),
        memories=[t(f'memory_{i}') for i in range(MEMORY_LEVELS)],
        memory_pos=[t(f'memory_pos_{i}') for i in range(MEMORY_LEVELS)],
        class_logits=t('class_logits'), mask_logits=t('mask_logits'),
        query_feat=t('query_feat'), query_pos=t('query_pos'),
        fine=t('fine_features') if 'fine_features' in outputs else None)


def frame_arrays(frame: FrameFeatures) -> dict[str, np.ndarray]:
    """The vision graph's named outputs of a FrameFeatures (zero-copy on CPU)."""
    def a(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    out = {'pixel_tokens': a(frame.pixel_tokens), 'mask_features': a(frame.mask_features)}
    for i in range(MEMORY_LEVELS):
        out[f'memory_{i}'] = a(frame.memories[i])
    for i in range(MEMORY_LEVELS):
        out[f'memory_pos_{i}'] = a(frame.memory_pos[i])
    out.update(class_logits=a(frame.class_logits), mask_logits=a(frame.mask_logits),
               query_feat=a(frame.query_feat), query_pos=a(frame.query_pos))
    if frame.fine is not None:
        out['fine_features'] = a(frame.fine)
    return out


def decoder_output(outputs: Mapping[str, np.ndarray],
                   device: str | torch.device = 'cpu') -> DecoderOutput:
    """A one-layer DecoderOutput (last layer only) from the seg graph's named outputs."""
    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(outputs[name])).to(device)

    return DecoderOutput([t('seg_class_logits')], [t('seg_mask_logits')], t('seg_query_feat'),
                         t('seg_query_pos'))

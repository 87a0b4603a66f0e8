"""Conversions between the engine graphs' named arrays and FrameFeatures / DecoderOutput."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ros_segcap.core.frames import DecoderOutput, FrameFeatures
from ros_segcap.core.spec import MEMORY_LEVELS


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

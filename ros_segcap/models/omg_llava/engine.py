"""TorchEngine: the OMG-LLaVA vision half in eager torch behind core.protocol.Engine.

On a GPU (`--device cuda`) the trunk, head and projectors run in fp32 as the official model
does and the LLM in the bf16 / fp16 of the converted weights; no CPU-only kernels are
involved (the deformable attention is plain torch grid_sample).
"""
from __future__ import annotations

from typing import Optional

import torch

from ros_segcap.core.frames import DecoderOutput, FrameFeatures

from .model import OMGLlavaModel


class TorchEngine:
    """Runs the trunk, pixel decoder and decoders eagerly on the model's device."""

    backend = 'torch'

    def __init__(self, model: OMGLlavaModel, device: str | torch.device = 'cpu',
                 reason: str = 'requested') -> None:
        self.model = model
        self.device = torch.device(device)
        self.reason = reason
        self.detail = f'torch {torch.__version__} eager on {self.device}'

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> FrameFeatures."""
        return self.model.encode(image.to(self.device))

    def decode(self, frame: FrameFeatures, query_feat: torch.Tensor, query_pos: torch.Tensor,
               restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """[SEG]-decoder queries (1, N, D) against the frame's cached features."""
        return self.model.decode_queries(frame, query_feat, query_pos, restrict)

"""TorchEngine: the model's own vision modules behind the core's engine protocol."""
from __future__ import annotations

from typing import Optional

import torch

from ros_segcap.core.frames import DecoderOutput, FrameFeatures

from .model import SegCapModel


class TorchEngine:
    """Runs the backbone, pixel decoder and OMG decoder eagerly on the model's device."""

    backend = 'torch'

    def __init__(self, model: SegCapModel, device: str | torch.device = 'cpu',
                 reason: str = 'requested') -> None:
        self.model = model
        self.device = torch.device(device)
        self.reason = reason
        self.detail = f'torch {torch.__version__} eager on {self.device}'

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> FrameFeatures (all decoder layers run)."""
        return self.model.encode(image.to(self.device))

    def decode(self, frame: FrameFeatures, query_feat: torch.Tensor, query_pos: torch.Tensor,
               restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """Independent queries (B, N, D) against the frame's cached features."""
        return self.model.decode_queries(frame, query_feat, query_pos, restrict)

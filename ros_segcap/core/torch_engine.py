"""TorchEngine: a model's own vision modules, run eagerly, behind core.protocol.Engine.

Any model family whose model offers `encode(image) -> FrameFeatures` and
`decode_queries(frame, query_feat, query_pos, restrict) -> DecoderOutput` gets its torch
engine here. No CPU-only kernels are involved, so it runs on whatever device the model is on.
"""
from __future__ import annotations

from typing import Optional, Protocol

import torch

from .frames import DecoderOutput, FrameFeatures


class EagerVision(Protocol):
    """The vision half of a model, as torch modules."""

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        ...

    def decode_queries(self, frame: FrameFeatures, feat: torch.Tensor, pos: torch.Tensor,
                       restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        ...


class TorchEngine:
    """Runs the model's encoder and decoder eagerly on `device`."""

    backend = 'torch'

    def __init__(self, model: EagerVision, device: str | torch.device = 'cpu',
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
        """Independent queries (B, N, D) against the frame's cached features."""
        return self.model.decode_queries(frame, query_feat, query_pos, restrict)

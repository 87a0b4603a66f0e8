"""ArrayEngine: an exported vision + seg graph pair behind the core's engine protocol."""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ros_segcap.core.frames import DecoderOutput, FrameFeatures

from .base import Engines
from .arrays import decoder_output, frame_arrays, frame_from_outputs


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class ArrayEngine:
    """Runs onnxruntime or TensorRT runners; tensors in and out live on `device`."""

    def __init__(self, engines: Engines, device: str | torch.device = 'cpu') -> None:
        self.engines = engines
        self.backend = engines.backend
        self.reason = engines.reason
        self.detail = engines.detail
        self.device = torch.device(device)

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """(1, 3, S, S) float RGB 0..255 -> the frame's features (vision graph)."""
        return frame_from_outputs(self.engines.encode(_array(image.float())), self.device)

    def decode(self, frame: FrameFeatures, query_feat: torch.Tensor, query_pos: torch.Tensor,
               restrict: Optional[torch.Tensor] = None) -> DecoderOutput:
        """Independent queries (1, N, D) against the frame (seg graph, last layer only)."""
        out = self.engines.segment(frame_arrays(frame), _array(query_feat), _array(query_pos),
                                   None if restrict is None else _array(restrict))
        return decoder_output(out, self.device)

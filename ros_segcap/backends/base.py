"""The backend protocol: one graph, named numpy arrays in, named numpy arrays out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

import numpy as np

from ros_segcap.core.spec import GraphSpec, seg_inputs

BACKEND_NAMES = ('torch', 'onnxruntime', 'tensorrt')


class EngineError(ValueError):
    """Engines are missing, stale or do not fit; the message says how to rebuild them."""


class Backend(Protocol):
    """Runs one graph of the spec (vision or seg)."""

    name: str  # one of BACKEND_NAMES
    spec: GraphSpec

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs (optional ones may be absent) -> all named outputs of the spec."""
        ...


@dataclass
class Engines:
    """The vision and seg runners of one backend, and why that backend was chosen."""

    backend: str
    vision: Backend
    seg: Backend
    reason: str
    detail: str = ''  # e.g. the onnxruntime providers or the TensorRT plan precision

    def encode(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """(1, 3, S, S) float32 RGB 0..255 -> the vision outputs."""
        return self.vision.run({'image': image})

    def segment(self, frame: Mapping[str, np.ndarray], query_feat: np.ndarray,
                query_pos: np.ndarray, restrict: Optional[np.ndarray] = None
                ) -> dict[str, np.ndarray]:
        """N queries (1, N, D) against a frame's vision outputs -> the seg outputs."""
        return self.seg.run(seg_inputs(self.seg.spec, frame, query_feat, query_pos, restrict))

"""The reference runners: the engine graphs' torch modules run eagerly, arrays in and out.

What exported engines are checked against (export parity, backend tests, benchmarks)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ros_segcap.backends.base import Engines
from ros_segcap.core.protocol import Exportable
from ros_segcap.core.spec import GraphSpec, seg_spec, vision_spec


class TorchBackend:
    """Runs a graph module on `device`; inputs and outputs are numpy arrays on the host."""

    name = 'torch'

    def __init__(self, module: torch.nn.Module, spec: GraphSpec,
                 device: str | torch.device = 'cpu') -> None:
        self.module = module
        self.spec = spec
        self.device = torch.device(device)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.spec.prepare(inputs)
        args = [torch.from_numpy(a).to(self.device) for a in feeds.values()]
        with torch.no_grad():
            outs = self.module(*args)
        return {name: t.detach().cpu().numpy() for name, t in zip(self.spec.output_names, outs)}


def torch_backends(model: Exportable, device: str | torch.device = 'cpu'
                   ) -> tuple[TorchBackend, TorchBackend]:
    """(vision, seg) torch runners of a model."""
    vision, seg = model.graphs()
    return (TorchBackend(vision, vision_spec(model.config), device),
            TorchBackend(seg, seg_spec(model.config), device))


def torch_engines(model: Exportable, device: str | torch.device = 'cpu') -> Engines:
    """The torch runners as an Engines pair, like backends.select.open_runners gives."""
    vision, seg = torch_backends(model, device)
    return Engines('torch', vision, seg, 'reference', f'torch {torch.__version__} eager')

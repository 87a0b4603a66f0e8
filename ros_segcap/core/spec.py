"""The one definition of the engine graphs' inputs and outputs, shared by export and runners.

Every model family of the OMG design exposes its vision half through these two graphs.

Two graphs per model (docs/design.md section 4):

    vision  image (1, 3, S, S) float32 RGB 0..255
            -> pixel_tokens, mask_features, memory_0..2, memory_pos_0..2, class_logits,
               mask_logits, query_feat, query_pos, fine_features (models with
               fine_pool)  (everything FrameFeatures holds)
    seg     query_feat, query_pos (1, N, D) with N dynamic ('queries'), restrict
            (1, N, Hm, Wm) bool (optional: all True = unrestricted), mask_features,
            memory_i (only the levels the decoder reads) -> seg_mask_logits,
            seg_class_logits (last layer), seg_query_feat, seg_query_pos (the final
            queries, for the object tokens of visual prompts)

A dimension given as a string is dynamic and named; an int is fixed by the model config.
Bump SPEC_VERSION whenever a name, dtype or shape rule changes: exported engines record it
and the runners refuse engines of another version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np


SPEC_VERSION = 2  # 2: fine_features output (fine_pool models)
MEMORY_LEVELS = 3  # strides 32, 16, 8 (PixelDecoder)
QUERY_DIM = 'queries'  # the dynamic dimension of the seg graph
Dim = Union[int, str]
# a model config with the OMG design's sizes (image_size, dim, num_queries, mask_size, ...)
ModelConfig = Any


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a graph."""

    name: str
    dtype: str  # numpy dtype name: 'float32' or 'bool'
    shape: tuple[Dim, ...]
    doc: str = ''
    optional: bool = False  # inputs only: when absent the runner passes `fill`
    fill: float = 0.0

    def concrete(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with dynamic dims replaced from `dims`."""
        return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)

    def to_dict(self) -> dict:
        return {'name': self.name, 'dtype': self.dtype, 'shape': list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one engine graph, in the order the graph takes and returns them."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor name: {axis: dim name}} for torch.onnx.export."""
        axes = {}
        for t in self.inputs + self.outputs:
            dyn = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if dyn:
                axes[t.name] = dyn
        return axes

    def to_dict(self) -> dict:
        return {'inputs': [t.to_dict() for t in self.inputs],
                'outputs': [t.to_dict() for t in self.outputs]}

    def prepare(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check named inputs against the spec; fill absent optional inputs.

        Returns contiguous arrays of the spec's dtypes in input order. Raises ValueError
        naming the tensor, what was expected and what was given.
        """
        unknown = sorted(set(arrays) - set(self.input_names))
        if unknown:
            raise ValueError(f'{self.name} graph: unknown inputs {unknown}; it takes '
                             f'{self.input_names}')
        dims: dict[str, int] = {}
        out: dict[str, np.ndarray] = {}
        missing = []
        for t in self.inputs:
            if t.name not in arrays:
                if not t.optional:
                    missing.append(t.name)
                continue
            a = np.ascontiguousarray(arrays[t.name], dtype=t.dtype)
            _match_shape(self.name, t, a.shape, dims)
            out[t.name] = a
        if missing:
            raise ValueError(f'{self.name} graph: missing inputs {missing}')
        for t in self.inputs:
            if t.name not in out:
                out[t.name] = np.full(t.concrete(dims), t.fill, dtype=t.dtype)
        return {name: out[name] for name in self.input_names}

    def check_outputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise ValueError if a runner returned other names than the spec's outputs."""
        if list(arrays) != self.output_names and set(arrays) != set(self.output_names):
            raise ValueError(f'{self.name} graph returned {sorted(arrays)}; the spec says '
                             f'{self.output_names}')


def _match_shape(graph: str, t: TensorSpec, shape: tuple[int, ...], dims: dict[str, int]
                 ) -> None:
    if len(shape) != len(t.shape):
        raise ValueError(f'{graph} graph: input {t.name} must be {_fmt(t.shape)}, got '
                         f'{tuple(shape)}')
    for want, got in zip(t.shape, shape):
        if isinstance(want, str):
            if dims.setdefault(want, got) != got:
                raise ValueError(f'{graph} graph: input {t.name} has {want}={got} but another '
                                 f'input has {want}={dims[want]}')
        elif want != got:
            raise ValueError(f'{graph} graph: input {t.name} must be {_fmt(t.shape)}, got '
                             f'{tuple(shape)}')


def _fmt(shape: tuple[Dim, ...]) -> str:
    return '(' + ', '.join(str(d) for d in shape) + ')'


def memory_sides(config: ModelConfig) -> list[int]:
    """Side lengths of the memories (strides 32, 16, 8) for a square input."""
    return [config.image_size // s for s in (32, 16, 8)]


def seg_memory_levels(config: ModelConfig) -> list[int]:
    """Memory levels the decoder reads (round robin over its layers); the others are unused."""
    return sorted({i % MEMORY_LEVELS for i in range(config.decoder_layers)})


def vision_spec(config: ModelConfig) -> GraphSpec:
    """The vision graph of a model config (segcap-tiny shapes in the docs)."""
    s, d, nq = config.image_size, config.dim, config.num_queries
    hm, k1, t = config.mask_size, config.num_classes + 1, config.token_grid ** 2
    outputs = [
        TensorSpec('pixel_tokens', 'float32', (1, t, config.pixel_token_dim),
                   '(1, T, 4C) [1, 64, 5120] space-to-depth of the stride-32 map'),
        TensorSpec('mask_features', 'float32', (1, d, hm, hm), '(1, D, Hm, Wm) [1, 128, 64, 64]'),
    ]
    for i, side in enumerate(memory_sides(config)):
        outputs.append(TensorSpec(f'memory_{i}', 'float32', (1, side * side, d),
                                  f'(1, h*w, D) memory {i} (strides 32, 16, 8)'))
    for i, side in enumerate(memory_sides(config)):
        outputs.append(TensorSpec(f'memory_pos_{i}', 'float32', (side * side, d),
                                  f'(h*w, D) positions of memory {i} (weights only)'))
    outputs += [
        TensorSpec('class_logits', 'float32', (1, nq, k1), '(1, Nq, K+1) last layer'),
        TensorSpec('mask_logits', 'float32', (1, nq, hm, hm), '(1, Nq, Hm, Wm) last layer'),
        TensorSpec('query_feat', 'float32', (1, nq, d), '(1, Nq, D) final query features'),
        TensorSpec('query_pos', 'float32', (1, nq, d), '(1, Nq, D) query positions'),
    ]
    if config.fine_pool:
        outputs.append(TensorSpec('fine_features', 'float32',
                                  (1, config.backbone_channels[0], hm, hm),
                                  '(1, C8, Hm, Wm) [1, 40, 64, 64] stride-8 backbone features'))
    image = TensorSpec('image', 'float32', (1, 3, s, s), '(1, 3, S, S) letterboxed RGB 0..255')
    return GraphSpec('vision', (image,), tuple(outputs))


def seg_spec(config: ModelConfig) -> GraphSpec:
    """The seg graph: N independent queries against one frame's cached features."""
    d, hm, n, k1 = config.dim, config.mask_size, QUERY_DIM, config.num_classes + 1
    inputs = [
        TensorSpec('query_feat', 'float32', (1, n, d), '(1, N, D) query features'),
        TensorSpec('query_pos', 'float32', (1, n, d), '(1, N, D) query positions'),
        TensorSpec('restrict', 'bool', (1, n, hm, hm),
                   '(1, N, Hm, Wm) pixels each query may attend to; absent = all',
                   optional=True, fill=1),
        TensorSpec('mask_features', 'float32', (1, d, hm, hm), 'from the vision graph'),
    ]
    sides = memory_sides(config)
    for i in seg_memory_levels(config):
        inputs.append(TensorSpec(f'memory_{i}', 'float32', (1, sides[i] * sides[i], d),
                                 'from the vision graph'))
    outputs = (
        TensorSpec('seg_mask_logits', 'float32', (1, n, hm, hm), '(1, N, Hm, Wm) last layer'),
        TensorSpec('seg_class_logits', 'float32', (1, n, k1), '(1, N, K+1) last layer'),
        TensorSpec('seg_query_feat', 'float32', (1, n, d), '(1, N, D) final query features'),
        TensorSpec('seg_query_pos', 'float32', (1, n, d), '(1, N, D) query positions'),
    )
    return GraphSpec('seg', tuple(inputs), outputs)


def graph_specs(config: ModelConfig) -> dict[str, GraphSpec]:
    """{'vision': ..., 'seg': ...} of a model config."""
    return {'vision': vision_spec(config), 'seg': seg_spec(config)}


def seg_inputs(spec: GraphSpec, frame_arrays: Mapping[str, np.ndarray],
               query_feat: np.ndarray, query_pos: np.ndarray,
               restrict: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Seg-graph inputs from vision outputs (or FrameFeatures arrays) and N queries."""
    inputs = {'query_feat': query_feat, 'query_pos': query_pos}
    for name in spec.input_names:
        if name.startswith(('mask_features', 'memory_')):
            inputs[name] = frame_arrays[name]
    if restrict is not None:
        inputs['restrict'] = restrict
    return inputs

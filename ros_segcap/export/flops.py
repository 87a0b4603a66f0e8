"""Count the multiply-accumulate work of an ONNX graph (Conv, MatMul, Gemm, Einsum).

FLOPs = 2 x MACs. Elementwise ops, norms and resizes are ignored: they are memory-bound and
small next to the convolutions and matrix products.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np
import onnx


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField('dim_value') for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _einsum_flops(equation: str, shapes: list[list[int]]) -> int:
    lhs = equation.replace(' ', '').split('->')[0].split(',')
    sizes: dict[str, int] = {}
    for letters, shape in zip(lhs, shapes):
        for ch, n in zip(letters, shape):
            sizes[ch] = max(sizes.get(ch, 1), n)
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


def count_flops(path: Path | onnx.ModelProto) -> dict[str, int]:
    """{op type: FLOPs} of a graph with static shapes (e.g. the vision graph)."""
    model = onnx.load(str(path)) if not isinstance(path, onnx.ModelProto) else path
    shapes = _shapes(model)
    total: dict[str, int] = {}
    for node in model.graph.node:
        ins = [shapes.get(i) for i in node.input]
        out = shapes.get(node.output[0]) if node.output else None
        flops = 0
        if node.op_type == 'Conv' and ins[1] is not None and out is not None:
            w = ins[1]  # (Cout, Cin / groups, kh, kw): groups are already in w[1]
            flops = 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ('MatMul', 'Gemm') and ins[0] is not None and out is not None:
            k = ins[0][-1] if node.op_type == 'MatMul' else _gemm_k(node, ins[0])
            flops = 2 * int(np.prod(out)) * k
        elif node.op_type == 'Einsum' and all(s is not None for s in ins):
            eq = next(a.s.decode() for a in node.attribute if a.name == 'equation')
            flops = _einsum_flops(eq, ins)
        if flops:
            total[node.op_type] = total.get(node.op_type, 0) + flops
    return total


def _gemm_k(node: onnx.NodeProto, a_shape: list[int]) -> int:
    trans_a = next((a.i for a in node.attribute if a.name == 'transA'), 0)
    return a_shape[0] if trans_a else a_shape[-1]

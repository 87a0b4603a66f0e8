"""Export the vision and seg graphs of a model to ONNX (names and dims from backends.spec).

Uses the TorchScript-based exporter (`dynamo=False`): it needs no extra package and gives
plain graphs that onnxruntime and TensorRT's parser both take. Fix-ups keep the files
runnable everywhere: onnxruntime has no bool kernels for EyeLike / Where, so the decoder's
helpers are swapped for equivalents while tracing (graphs.exportable) and bool EyeLike nodes
get float casts around them; then onnxruntime's basic optimiser folds the traced shape
arithmetic, so the vision graph has static shapes. Every file passes onnx.checker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional
import warnings

import numpy as np
import onnx
import torch

from ros_segcap.core.protocol import Exportable
from ros_segcap.core.spec import GraphSpec, graph_specs


OPSET = 17
EXAMPLE_QUERIES = 3  # traced with 3 queries; 1 would let the tracer specialise on it


def example_inputs(spec: GraphSpec, rng: np.random.Generator, queries: int = EXAMPLE_QUERIES
                   ) -> dict[str, np.ndarray]:
    """Random inputs of the right names, dtypes and shapes (images 0..255, features N(0,1))."""
    out = {}
    for t in spec.inputs:
        shape = t.concrete({'queries': queries})
        if t.dtype == 'bool':
            out[t.name] = rng.random(shape) < 0.7
        elif t.name == 'image':
            out[t.name] = rng.uniform(0, 255, shape).astype(np.float32)
        else:
            out[t.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _fix_bool_eyelike(proto: onnx.ModelProto) -> int:
    """Bool EyeLike -> Cast(float) + EyeLike(float) + Cast(bool). Returns how many fixed."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    graph = proto.graph
    fixed = 0
    for idx in reversed(range(len(graph.node))):
        node = graph.node[idx]
        if node.op_type != 'EyeLike' or types.get(node.output[0]) != onnx.TensorProto.BOOL:
            continue
        for attr in list(node.attribute):
            if attr.name == 'dtype':
                node.attribute.remove(attr)
        node.attribute.append(onnx.helper.make_attribute('dtype', onnx.TensorProto.FLOAT))
        src, out = node.input[0], node.output[0]
        node.input[0], node.output[0] = f'{src}_float', f'{out}_float'
        graph.node.insert(idx + 1, onnx.helper.make_node(
            'Cast', [node.output[0]], [out], to=onnx.TensorProto.BOOL, name=f'{node.name}_out'))
        graph.node.insert(idx, onnx.helper.make_node(
            'Cast', [src], [node.input[0]], to=onnx.TensorProto.FLOAT, name=f'{node.name}_in'))
        fixed += 1
    return fixed


def export_graph(module: torch.nn.Module, spec: GraphSpec, inputs: dict[str, np.ndarray],
                 path: Path, *, opset: int = OPSET, metadata: Optional[dict[str, str]] = None
                 ) -> Path:
    """Trace `module` on named inputs and write a checked ONNX file to `path`."""
    args = tuple(torch.from_numpy(inputs[name]) for name in spec.input_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation / tracer notes
        torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset,
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
    proto = onnx.load(str(tmp))
    _fix_bool_eyelike(proto)
    onnx.save(proto, str(tmp))
    proto = _fold_shapes(tmp) or proto
    _fuse_pad_into_conv(proto)
    proto.producer_name = 'ros_segcap'
    props = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, **(metadata or {})})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


def _fold_shapes(path: Path) -> Optional[onnx.ModelProto]:
    """The graph after onnxruntime's basic (EP-independent, standard-op) optimisations.

    The tracer records TF-SAME padding and reshapes as Shape -> Gather -> Concat chains;
    folding them leaves static shapes that TensorRT and the FLOP count can read. Returns
    None when onnxruntime is not installed (the unfolded graph is valid too).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    folded = path.with_name(f'{path.name}.folded')
    opts.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        proto = onnx.load(str(folded))
    finally:
        folded.unlink(missing_ok=True)
    used = {n.domain for n in proto.graph.node} | {''}
    keep = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return proto


def _zero_spatial_pads(pad: onnx.NodeProto, inits: dict) -> Optional[list[int]]:
    """[top, left, bottom, right] of a constant-zero Pad of an NCHW tensor's H and W, else None."""
    mode = next((a.s for a in pad.attribute if a.name == 'mode'), b'constant')
    names = list(pad.input) + ['', '']
    if mode != b'constant' or names[1] not in inits or (names[2] and names[2] not in inits):
        return None
    if names[2] and np.any(onnx.numpy_helper.to_array(inits[names[2]]) != 0):
        return None
    pads = onnx.numpy_helper.to_array(inits[names[1]]).tolist()
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)):
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def _fuse_pad_into_conv(proto: onnx.ModelProto) -> int:
    """Zero Pad (spatial dims, constant pads) -> Conv becomes one Conv with `pads`.

    TF-SAME stride-2 convs are traced as Pad + Conv; a standalone Pad also makes
    onnxruntime convert its blocked NCHWc layout back and forth around it.
    """
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    fused = []
    for pad in graph.node:
        pads = _zero_spatial_pads(pad, inits) if pad.op_type == 'Pad' else None
        convs = users.get(pad.output[0], []) if pads else []
        if len(convs) != 1 or convs[0].op_type != 'Conv' or pad.output[0] in outputs:
            continue
        conv = convs[0]
        attrs = {a.name: a for a in conv.attribute}
        auto_pad = attrs['auto_pad'].s if 'auto_pad' in attrs else b'NOTSET'
        if any(attrs['pads'].ints if 'pads' in attrs else ()) or auto_pad != b'NOTSET':
            continue
        if 'pads' in attrs:
            conv.attribute.remove(attrs['pads'])
        conv.attribute.append(onnx.helper.make_attribute('pads', pads))
        conv.input[0] = pad.input[0]
        fused.append(pad)
    for pad in fused:
        graph.node.remove(pad)
    used = {name for node in graph.node for name in node.input} | outputs
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return len(fused)


def onnx_name(model_name: str, graph: str) -> str:
    """File name of a graph's ONNX file in the engines directory."""
    return f'{model_name}.{graph}.onnx'


def export_onnx(model: Exportable, out_dir: Path, *, digest: str, opset: int = OPSET,
                rng: Optional[np.random.Generator] = None,
                progress: Callable[[str], None] = print) -> dict[str, Path]:
    """Write <name>.vision.onnx and <name>.seg.onnx into out_dir; returns graph -> path."""
    if opset < 17:
        raise ValueError(f'opset {opset} is too old: LayerNormalization needs >= 17')
    rng = rng or np.random.default_rng()
    specs = graph_specs(model.config)
    meta = {'weights_sha256': digest, 'model': model.config.name}
    was_training = {m: m.training for m in model.modules()}
    paths = {}
    try:
        with model.exportable():
            vision, seg = model.graphs()
            v_in = example_inputs(specs['vision'], rng)
            progress(f'exporting {model.config.name} vision graph (opset {opset}) ...')
            paths['vision'] = export_graph(vision, specs['vision'], v_in,
                                           out_dir / onnx_name(model.config.name, 'vision'),
                                           opset=opset, metadata={**meta, 'graph': 'vision'})
            with torch.no_grad():
                outs = dict(zip(specs['vision'].output_names, vision(torch.from_numpy(
                    v_in['image']))))
            s_in = example_inputs(specs['seg'], rng)
            for name in s_in:
                if name.startswith(('mask_features', 'memory_')):  # real frame features
                    s_in[name] = outs[name].detach().numpy()
            progress(f'exporting {model.config.name} seg graph (dynamic queries) ...')
            paths['seg'] = export_graph(seg, specs['seg'], s_in,
                                        out_dir / onnx_name(model.config.name, 'seg'),
                                        opset=opset, metadata={**meta, 'graph': 'seg'})
    finally:
        for m, mode in was_training.items():
            m.training = mode
    return paths

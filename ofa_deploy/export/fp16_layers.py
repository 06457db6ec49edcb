"""The layers an int8 bound reverted, in fp16 (TensorRT-flavour files; ``export.bound``).

ONNX Runtime's quantizer leaves a reverted node without Q/DQ, i.e. in fp32. For a TensorRT
target the issue asks for fp16 there: the nodes of the reverted layers (every node whose
exporter name puts it in one of those modules: its Convs, activations, SE gate, residual
Add) get fp16 weights and fp16 tensors, with one Cast at each boundary with the rest of
the graph (fp32 -> fp16 on each float tensor entering the region, fp16 -> fp32 on each one
leaving it). A strongly typed TensorRT network (10.x, 11.x) takes every tensor's type from
the ONNX, so it builds those layers in fp16 and the rest as the Q/DQ nodes say.

The Q/DQ pairs stay where the quantizer put them, next to the int8 Convs: a Cast only ever
sits between float layers, or before a QuantizeLinear (an opset-17 QuantizeLinear reads
float32 only), never between a DequantizeLinear and the Conv it feeds, so TensorRT's fusion
of DQ -> Conv into an int8 kernel is not in the way of a Cast.

Why not ``onnxconverter_common.float16`` (what the fp16 export uses) with a node block
list: both it and ONNX Runtime's copy wrap the blocked nodes - here nearly all of them -
in Cast pairs of their own. Measured on the largest digits subnet with 3 of 21 layers
reverted: 142 and 648 Casts instead of the ~10 the region needs, rounding the float tensors
of the int8 part to fp16 and back as well. So the region is converted here, by name.

Host side only (onnx, numpy; no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import OfaError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def revert_layers_to_fp16(path: str | Path, layers: Iterable[str]) -> dict[str, Any]:
    """Rewrite the ONNX model ``path`` (an int8 file whose ``layers`` carry no Q/DQ) in
    place so that the nodes of ``layers`` compute in fp16; returns what changed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .precision import layer_of

    wanted = set(layers)
    model = onnx.load(str(path))
    graph = model.graph
    # Constants stay outside (their float32 value would need converting too); the exporter's
    # graphs have none left after ONNX Runtime's pre-processing folds them into initializers
    # ... and so do nodes still quantized (reading a DequantizeLinear), should a caller revert
    # part of a layer: a Cast between DQ and its Conv would keep TensorRT from fusing them
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    region = [n for n in graph.node if layer_of(n.name) in wanted and n.op_type not in (*QDQ_OPS, "Constant")
              and not any(i in dequantized for i in n.input)]
    if not region:
        return {"nodes": 0, "casts": 0, "initializers": 0}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    inits = {t.name: t for t in graph.initializer}
    types.update({name: t.data_type for name, t in inits.items()})
    inside = {id(n) for n in region}
    made_inside = {o for n in region for o in n.output}
    read_outside = {i for n in graph.node if id(n) not in inside for i in n.input} | {o.name for o in graph.output}

    def is_float(name: str) -> bool:
        return types.get(name) == TensorProto.FLOAT

    renamed: dict[str, str] = {}  # region-side name of each fp32 tensor crossing the boundary
    casts: list[Any] = []
    new_inits: list[Any] = []
    converted = 0
    for name in dict.fromkeys(i for n in region for i in n.input if i and i not in made_inside):
        if not is_float(name):
            continue  # integer inputs (shapes, axes) keep their type
        half = f"{name}::fp16"
        if name in inits:
            # a weight: stored in fp16 (a copy when a node outside also reads it)
            array = numpy_helper.to_array(inits[name]).astype(np.float16)
            if _too_large(array, inits[name]):
                raise OfaError(f"weight {name} overflows fp16; the layer cannot be reverted to fp16")
            new_inits.append(numpy_helper.from_array(array, half))
            converted += 1
        else:
            casts.append(helper.make_node("Cast", [name], [half], name=f"{name}::to_fp16", to=TensorProto.FLOAT16))
        renamed[name] = half
    leaving = {o for o in made_inside if o in read_outside and is_float(o)}
    for name in sorted(leaving):
        half = f"{name}::fp16"
        casts.append(helper.make_node("Cast", [half], [name], name=f"{name}::to_fp32", to=TensorProto.FLOAT))
        renamed[name] = half
    for node in region:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    graph.initializer.extend(new_inits)
    graph.node.extend(casts)
    _drop_unused_initializers(graph)
    _topological_sort(graph)
    # value_info of the old fp32 types would contradict the region's; the checker infers anew
    del graph.value_info[:]
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise OfaError(f"reverting layers to fp16 made invalid ONNX: {str(exc).splitlines()[0]}") from None
    onnx.save(model, str(path))
    return {"nodes": len(region), "casts": len(casts), "initializers": converted}


def _too_large(array: np.ndarray, tensor: Any) -> bool:
    from onnx import numpy_helper

    return bool(np.isinf(array).any() and not np.isinf(numpy_helper.to_array(tensor)).any())


def _drop_unused_initializers(graph: Any) -> None:
    """fp32 weights now read only through their fp16 copies go (the file stays one size)."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _topological_sort(graph: Any) -> None:
    """ONNX wants nodes in an order that computes every input first; the Casts were appended."""
    ready = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise OfaError("reverting layers to fp16 left a node whose inputs nothing computes")
        pending = left
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)

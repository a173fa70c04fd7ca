"""CLS pooling reads one token of the last layer, so the last layer computes that token only.

Each BERT layer mixes tokens only in attention; every other op (projections, residual adds,
LayerNorm, the feed-forward block) works row by row. The last layer's keys and values still need
every token, but its queries, attention output, feed-forward block and LayerNorms are needed for
the first token alone. Slicing the last layer's query side to that token is exact (the same
numbers, not an approximation) and skips about 1/12 of the encoder's GEMM work and the last
layer's attention rows.

The rewrite works on the plain exported graph (before ONNX Runtime's fusions), finding the last
attention block by structure: the last Softmax, the MatMul that makes its scores, and the
projection whose output is their query side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class GraphShapeError(ValueError):
    """The graph does not have the encoder structure the rewrite expects."""


@dataclass
class LastAttention:
    """The nodes of the last layer that the rewrite changes."""

    query: Any  # the query projection MatMul, reading the layer's input
    residual: Any  # the Add of the layer's input to the attention output
    masked: Any  # the Add of the mask to the scores
    mask: str  # the mask tensor, (batch, 1, query, key)
    merge: Any  # the Reshape that merges the heads back to (batch, seq, hidden)

    @property
    def layer_input(self) -> str:
        return self.query.input[0]


def keep_first_token(graph_in: Path, graph_out: Path) -> None:
    """Write ``graph_in`` with its last layer computing only the first token's state.

    The output keeps its name and becomes (batch, 1, hidden); earlier layers are unchanged.
    """
    import onnx

    model = onnx.load(str(graph_in))
    found = find_last_attention(model.graph)
    slices = _slice_query_side(model.graph, found)
    _insert_after_producers(model.graph, slices)
    output = model.graph.output[0].type.tensor_type.shape.dim
    if len(output) == 3:
        output[1].Clear()
        output[1].dim_value = 1
    onnx.checker.check_model(model, full_check=False)
    onnx.save(model, str(graph_out))


def find_last_attention(graph) -> LastAttention:
    """Find the last attention block by structure: the last Softmax, the MatMul that makes its
    scores, the query projection under them. GraphShapeError names the first thing missing."""
    nodes = list(graph.node)
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    softmaxes = [n for n in nodes if n.op_type == "Softmax"]
    if not softmaxes:
        raise GraphShapeError("no Softmax: not an attention encoder")
    masked = producer.get(softmaxes[-1].input[0])
    if masked is None or masked.op_type != "Add":
        raise GraphShapeError("the last Softmax does not read masked scores (an Add)")
    scores = next((producer.get(i) for i in masked.input if _op(producer.get(i)) == "MatMul"), None)
    if scores is None:
        raise GraphShapeError("the last attention's scores are not a MatMul")
    mask = next(i for i in masked.input if i != scores.output[0])

    # The query side: up from the scores' first input, through element-wise and layout ops, to
    # the projection MatMul that reads the layer's input.
    weights = {init.name for init in graph.initializer}
    query = _walk_up(producer, scores.input[0], weights, {i.name for i in graph.input})
    residual = [n for n in consumers.get(query.input[0], []) if n.op_type == "Add"]
    if len(residual) != 1:
        raise GraphShapeError(f"expected one residual Add of the last layer's input, found {len(residual)}")

    # The attention context: probabilities @ values, then heads merged back to (batch, seq, hidden).
    context = [n for n in consumers.get(softmaxes[-1].output[0], []) if n.op_type == "MatMul"]
    merge = _first_reshape_below(consumers, context[0]) if len(context) == 1 else None
    if merge is None:
        raise GraphShapeError("cannot find where the last attention merges its heads")
    return LastAttention(query, residual[0], masked, mask, merge)


def _slice_query_side(graph, found: LastAttention) -> dict[str, Any]:
    """Point the query, the residual and the mask at their first-token slices; return the Slice
    nodes by the tensor they slice (to be placed after its producer)."""
    from onnx import helper, numpy_helper

    def constant(name: str, value: list[int]) -> str:
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
        return name

    first, one = constant("first_token/first", [0]), constant("first_token/one", [1])
    seq_axis, query_axis = constant("first_token/axis1", [1]), constant("first_token/axis2", [2])
    first_row, first_mask = "first_token/layer_input", "first_token/mask"
    layer_input = found.layer_input
    slices = {
        layer_input: helper.make_node(
            "Slice", [layer_input, first, one, seq_axis], [first_row], name="first_token/slice_input"
        ),
        # The mask is (batch, 1, query, key): keep the first query row.
        found.mask: helper.make_node(
            "Slice", [found.mask, first, one, query_axis], [first_mask], name="first_token/slice_mask"
        ),
    }
    _replace_input(found.query, layer_input, first_row)
    _replace_input(found.residual, layer_input, first_row)
    _replace_input(found.masked, found.mask, first_mask)
    # The merge's shape is (batch, seq, hidden) from the full input's shape: keep batch, infer seq.
    hidden = _initializer(graph, found.query.input[1]).dims[-1]  # the query weight's output width
    found.merge.input[1] = constant("first_token/merged_shape", [0, -1, hidden])
    return slices


def _insert_after_producers(graph, slices: dict[str, Any]) -> None:
    """Place each new node right after the node that makes its input (topological order)."""
    ordered = []
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            if out in slices:
                ordered.append(slices.pop(out))
    if slices:  # a graph input (the mask of a graph built that way) has no producer node
        ordered[:0] = list(slices.values())
    graph.ClearField("node")
    graph.node.extend(ordered)


def _op(node) -> str | None:
    return node.op_type if node is not None else None


def _walk_up(producer: dict, name: str, weights: set[str], graph_inputs: set[str]):
    passthrough = {"Mul", "Div", "Transpose", "Reshape", "Add", "Identity", "Cast"}
    node = producer.get(name)
    static: dict[str, bool] = {}
    for _ in range(16):
        if node is None:
            break
        if node.op_type == "MatMul" and node.input[1] in weights:
            return node
        if node.op_type not in passthrough:
            break
        # Follow the activation, not a constant operand (a scale, a bias, a target shape).
        activations = [i for i in node.input if i and not _static(producer, graph_inputs, i, static)]
        if len(activations) != 1:
            break
        node = producer.get(activations[0])
    raise GraphShapeError("cannot find the last attention's query projection")


def _static(producer: dict, graph_inputs: set[str], name: str, known: dict) -> bool:
    """Whether a tensor is a constant or computed from constants and shapes only."""
    if name not in known:
        node = producer.get(name)
        if node is None:
            known[name] = name not in graph_inputs  # an initializer
        elif node.op_type in ("Constant", "Shape"):
            known[name] = True
        else:
            known[name] = all(_static(producer, graph_inputs, i, known) for i in node.input if i)
    return known[name]


def _first_reshape_below(consumers: dict, node):
    for _ in range(4):
        following = consumers.get(node.output[0], [])
        if len(following) != 1:
            return None
        node = following[0]
        if node.op_type == "Reshape":
            return node
    return None


def _replace_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def _initializer(graph, name: str):
    return next(init for init in graph.initializer if init.name == name)

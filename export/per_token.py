"""Per-token INT8: each token's activations get their own scale, computed in the graph at run time.

ONNX Runtime's dynamic quantization takes one activation scale per tensor, so a text's vector
depends on its batch mates and on padding (the batch's largest value sets everyone's step), and
an outlier token coarsens every other token's grid. Here each weight GEMM ``x @ W`` becomes

    s   = max|x| over the features of each token / 127          (batch, sequence, 1)
    x_q = QuantizeLinear(x, s, 128)                               uint8, per token (axis 0 of a 2-D view)
    y   = MatMulIntegerToFloat(x_q, W_q, 1, w_scale, 128) * s     int8 GEMM, per-column weight scales

so a token's result depends on that token alone. uint8 activations with zero point 128 keep the
u8×s8 kernels that every x86 CPU has; the weights are symmetric int8, per output column. GEMMs
that read the same activation (a layer's Q, K and V) run as one, their weights side by side and
their biases added once, then split: the same bits, fewer ops.

Smoothing (SmoothQuant, Xiao et al. 2023): a few feature channels of a BERT's activations run far
larger than the rest in every token, and a per-token scale set by them leaves the other channels
few steps. Dividing each channel by s_c = max|x_c|^α / max|W_c|^(1-α) and multiplying the matching
weight row by s_c leaves x @ W unchanged in exact arithmetic but evens out both sides' ranges
before they are rounded. The channel maxima come from a few calibration texts at export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

QMAX_ACTIVATION = 127
ZERO_POINT = QMAX_ACTIVATION + 1  # uint8 activations, symmetric around it
SMOOTHING_ALPHA = 0.5  # SmoothQuant's default: the range is split evenly between x and W


def channel_maxima(
    graph: Path, gemms: list[str], batches: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """max |x_c| of each named GEMM's input x, per feature channel, over the real tokens of ``batches``."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(graph))
    by_name = {node.name: node for node in model.graph.node}
    inputs = sorted({by_name[name].input[0] for name in gemms})
    for name in inputs:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)  # padding tokens do not count
        for name, value in zip(inputs, session.run(inputs, feeds)):
            # A layer computing only the first token (CLS pooling) has one row per text.
            found = np.abs(value[real[:, : value.shape[1]]]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], found) if name in maxima else found
    return maxima


def quantize_per_token(
    graph_in: Path,
    graph_out: Path,
    gemms: list[str],
    weight_bits: int,
    channel_max: dict[str, np.ndarray] | None = None,
) -> None:
    """Rewrite the named MatMuls (``x @ W``, W a 2-D initializer) as per-token INT8 GEMMs.

    ``weight_bits`` is 7 (exact on every CPU) or 8 (exact only where the CPU's u8×s8 multiply-add
    accumulates in int32: VNNI, ARM). ``channel_max`` (from `channel_maxima`) turns smoothing on.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(graph_in))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    wanted = set(gemms)
    smoothing = _smoothing(graph, initializers, wanted, channel_max) if channel_max else {}
    # Tokens with the same leading dims share their row count, zero points and 3-D shapes: in an
    # encoder that is every GEMM but the last layer's when it computes the first token only.
    row_groups = _row_groups(model, {n.input[0] for n in graph.node if n.name in wanted})
    rewrite = _Rewrite(row_groups, smoothing)
    # GEMMs that read one activation (Q, K and V) become one, written where the first of them was:
    # its input and every constant are ready there, and the rest come later.
    nodes = list(graph.node)  # one object per node, so that id() names it throughout
    readers = _gemms_by_input(nodes, initializers, wanted)
    firsts = {id(group[0]): group for group in readers.values()}
    biases = _bias_adds(nodes, initializers, [group for group in readers.values() if len(group) > 1])
    taken = {id(node) for group in readers.values() for node in group}
    taken |= {id(add) for adds in biases.values() if adds for _, add in adds}
    for node in nodes:
        if id(node) in firsts:
            rewrite.gemms(firsts[id(node)], initializers, weight_bits, biases.get(id(node)))
        elif id(node) not in taken:
            rewrite.nodes.append(node)
    rewrite.nodes = _live(rewrite.nodes, {output.name for output in graph.output})

    used = {name for node in rewrite.nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(rewrite.nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + rewrite.added)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model, full_check=False)
    onnx.save(model, str(graph_out))


class _Rewrite:
    """The nodes and constants of a per-token rewrite, built GEMM by GEMM.

    What several GEMMs can share is made once and remembered: a row group's token count and
    zero points, a (group, features) pair's 2-D view and 3-D shape, an activation's quantized
    form (Q, K and V read the same input).
    """

    def __init__(self, row_groups: dict[str, object], smoothing: dict[str, np.ndarray]) -> None:
        self.row_groups = row_groups
        self.smoothing = smoothing
        self.nodes: list = []
        self.added: list = []
        self._rows: dict[object, tuple[str, str]] = {}  # group → (leading dims, zero points)
        self._shapes: dict[tuple[object, int], tuple[str, str]] = {}  # → (2-D view, 3-D shape)
        self._quantized: dict[str, tuple[str, str]] = {}  # activation → (x_q, per-token scale)
        self.last_axis = self.constant("pt/last_axis", np.array([-1], np.int64))
        self.eps = self.constant("pt/eps", np.array(1e-12, np.float32))
        self.inv_qmax = self.constant("pt/inv_qmax", np.array(1 / QMAX_ACTIVATION, np.float32))
        self.zero_point = self.constant("pt/zero_point", np.array(ZERO_POINT, np.uint8))
        self.one = self.constant("pt/one", np.array(1.0, np.float32))

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.added.append(numpy_helper.from_array(value, name))
        return name

    def gemms(self, nodes: list, initializers: dict, weight_bits: int, biases: list | None = None) -> None:
        """``x @ W`` → MatMulIntegerToFloat(x_q, W_q) x per-token scale, for one GEMM or for
        several that read one activation (Q, K and V): then their int8 weights go side by side
        into one GEMM, (``biases``: each GEMM's (bias, Add)) their biases are added once, and a
        Split writes what each GEMM's output (or its Add's) was.

        Each column is computed exactly as alone (integer sums are exact, and every column keeps
        its own weight scale), so the vectors are the same bit for bit; a layer saves two GEMMs'
        and four elementwise ops' dispatch and two reads of the quantized input.
        """
        from onnx import helper

        x = nodes[0].input[0]
        quantized = [self._weight(initializers[node.input[1]], x, weight_bits) for node in nodes]
        name = nodes[0].name if len(nodes) == 1 else f"{nodes[0].name}/fused"
        w_q = self.constant(f"{name}/int8", np.concatenate([w for w, _ in quantized], axis=1))
        w_scale = self.constant(f"{name}/scale", np.concatenate([s for _, s in quantized]))
        x_q, x_scale = self._quantized_input(x, quantized[0][0].shape[0])
        outputs = [add.output[0] for _, add in biases] if biases else [node.output[0] for node in nodes]
        result = outputs[0] if len(nodes) == 1 and not biases else f"{name}/out"
        self.nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [x_q, w_q, self.one, w_scale, self.zero_point],
                [f"{name}/per_token"],
                domain="com.microsoft",
                name=name,
            ),
            helper.make_node("Mul", [f"{name}/per_token", x_scale], [result]),
        ]
        if biases:
            bias = self.constant(f"{name}/bias", np.concatenate([b for b, _ in biases]).astype(np.float32))
            self.nodes.append(helper.make_node("Add", [result, bias], [f"{name}/biased"]))
            result = f"{name}/biased"
        if len(nodes) > 1:
            widths = np.array([w.shape[1] for w, _ in quantized], np.int64)
            self.nodes.append(
                helper.make_node("Split", [result, self.constant(f"{name}/widths", widths)], outputs, axis=-1)
            )

    def _weight(self, weight, x: str, weight_bits: int) -> tuple[np.ndarray, np.ndarray]:
        """The int8 weights and per-column scales of ``x @ W``, smoothed where ``x`` is."""
        from onnx import numpy_helper

        w = numpy_helper.to_array(weight).astype(np.float32)
        if x in self.smoothing:
            w = w * self.smoothing[x][:, None]
        return quantize_weight(w, weight_bits)

    def _row_group(self, x: str) -> tuple[str, str]:
        """(leading dims, per-token zero points) of ``x``'s row group, made once per group."""
        from onnx import TensorProto, helper

        group = self.row_groups[x]
        if group not in self._rows:
            g = f"pt/rows{len(self._rows)}"
            zero = helper.make_tensor("zp", TensorProto.UINT8, [1], [ZERO_POINT])
            self.nodes += [
                helper.make_node("Shape", [x], [f"{g}/dims"], end=-1),
                helper.make_node("ReduceProd", [f"{g}/dims"], [f"{g}/tokens"], keepdims=1),
                helper.make_node("ConstantOfShape", [f"{g}/tokens"], [f"{g}/zero_points"], value=zero),
            ]
            self._rows[group] = (f"{g}/dims", f"{g}/zero_points")
        return self._rows[group]

    def _shape(self, x: str, features: int) -> tuple[str, str]:
        """(2-D view, 3-D shape) for ``x``'s row group at this feature width."""
        from onnx import helper

        group = self.row_groups[x]
        if (group, features) not in self._shapes:
            dims, _ = self._row_group(x)
            view = self.constant(f"{dims}/view_{features}", np.array([-1, features], np.int64))
            feature_dim = self.constant(f"{dims}/features_{features}", np.array([features], np.int64))
            shape = f"{dims}/shape_{features}"
            self.nodes.append(helper.make_node("Concat", [dims, feature_dim], [shape], axis=0))
            self._shapes[group, features] = (view, shape)
        return self._shapes[group, features]

    def _quantized_input(self, x: str, features: int) -> tuple[str, str]:
        """(uint8 x_q, per-token scale) of activation ``x``, smoothed first where calibrated."""
        from onnx import helper

        if x in self._quantized:
            return self._quantized[x]
        _, zero_points = self._row_group(x)
        view, shape = self._shape(x, features)
        p = f"pt/{x}"
        source = x
        if x in self.smoothing:
            inverse = self.constant(f"{p}/inverse_smoothing", (1 / self.smoothing[x]).astype(np.float32))
            source = f"{p}/smoothed"
            self.nodes.append(helper.make_node("Mul", [x, inverse], [source]))
        self.nodes += [
            # max|x| per token without materializing |x|: max(max x, -min x)
            helper.make_node("ReduceMax", [source, self.last_axis], [f"{p}/max"], keepdims=1),
            helper.make_node("ReduceMin", [source, self.last_axis], [f"{p}/min"], keepdims=1),
            helper.make_node("Neg", [f"{p}/min"], [f"{p}/neg_min"]),
            helper.make_node("Max", [f"{p}/max", f"{p}/neg_min", self.eps], [f"{p}/absmax"]),
            helper.make_node("Mul", [f"{p}/absmax", self.inv_qmax], [f"{p}/scale"]),
            # QuantizeLinear takes a per-axis scale on one axis: quantize a (tokens, features) view
            helper.make_node("Reshape", [f"{p}/scale", self.last_axis], [f"{p}/scale_1d"]),
            helper.make_node("Reshape", [source, view], [f"{p}/x_2d"]),
            helper.make_node(
                "QuantizeLinear", [f"{p}/x_2d", f"{p}/scale_1d", zero_points], [f"{p}/q_2d"], axis=0
            ),
            helper.make_node("Reshape", [f"{p}/q_2d", shape], [f"{p}/q"]),
        ]
        self._quantized[x] = (f"{p}/q", f"{p}/scale")
        return self._quantized[x]


def quantize_weight(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 weights of ``bits`` bits and their float32 scales."""
    qmax = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / qmax
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale.astype(np.float32)


def _smoothing(
    graph, initializers: dict, wanted: set[str], channel_max: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """s_c per GEMM input; GEMMs that share an input (Q, K, V) share its s from their joint max |W_c|."""
    from onnx import numpy_helper

    weight_max: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.name in wanted and node.input[0] in channel_max:
            row_max = np.abs(numpy_helper.to_array(initializers[node.input[1]])).max(axis=1)
            x = node.input[0]
            weight_max[x] = np.maximum(weight_max[x], row_max) if x in weight_max else row_max
    smoothing = {}
    for x, w in weight_max.items():
        s = channel_max[x] ** SMOOTHING_ALPHA / np.maximum(w, 1e-5) ** (1 - SMOOTHING_ALPHA)
        # A channel that never fired in calibration is left alone; the rest within two decades.
        smoothing[x] = np.where(channel_max[x] > 0, np.clip(s, 1e-2, 1e2), 1.0).astype(np.float32)
    return smoothing


def _gemms_by_input(nodes: list, initializers: dict, wanted: set[str]) -> dict[str, list]:
    """The named MatMuls of a 2-D weight, grouped by the activation they read (graph order)."""
    readers: dict[str, list] = {}
    for node in nodes:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if node.name in wanted and weight is not None and len(weight.dims) == 2:
            readers.setdefault(node.input[0], []).append(node)
    return readers


def _bias_adds(nodes: list, initializers: dict, groups: list[list]) -> dict[int, list | None]:
    """Per group of GEMMs (keyed by its first one's id): the (bias, Add) of each GEMM whose output
    only a bias Add reads (the bias a constant vector of its width, through Identity nodes or
    not); None unless every GEMM of the group has one."""
    from onnx import numpy_helper

    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    identity = {n.output[0]: n.input[0] for n in nodes if n.op_type == "Identity"}

    def constant(name: str) -> np.ndarray | None:
        while name in identity:
            name = identity[name]
        return numpy_helper.to_array(initializers[name]) if name in initializers else None

    def bias_add(gemm) -> tuple[np.ndarray, object] | None:
        readers = consumers.get(gemm.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "Add":
            return None
        add = readers[0]
        bias = constant(add.input[1] if add.input[0] == gemm.output[0] else add.input[0])
        width = initializers[gemm.input[1]].dims[1]
        return (bias, add) if bias is not None and bias.shape == (width,) else None

    found = {}
    for group in groups:
        adds = [bias_add(gemm) for gemm in group]
        found[id(group[0])] = adds if all(adds) else None
    return found


def _live(nodes: list, outputs: set[str]) -> list:
    """``nodes`` without those whose every output nothing reads (a folded bias's Identity)."""
    while True:
        read = outputs | {name for node in nodes for name in node.input}
        kept = [node for node in nodes if any(out in read for out in node.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def _row_groups(model, activations: set[str]) -> dict[str, object]:
    """Group GEMM inputs whose leading (token) dims shape inference proves equal.

    An input whose dims it cannot name is a group of its own: correct, three small ops more.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    known = {
        v.name: v.type.tensor_type.shape.dim
        for v in list(inferred.graph.value_info) + list(inferred.graph.input)
    }
    groups: dict[str, object] = {}
    for name in activations:
        dims = known.get(name, [])
        leading = tuple(d.dim_param or d.dim_value or None for d in dims[:-1])
        groups[name] = leading if dims and None not in leading else name
    return groups

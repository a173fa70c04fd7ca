"""The per-token INT8 rewrite against the same arithmetic written out in numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the export extra is not installed")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gist_onnx.cpu import cpu_flags, exact_weight_bits  # noqa: E402
from gist_onnx.export.per_token import quantize_per_token  # noqa: E402


def _one_gemm_graph(path: Path, weight: np.ndarray) -> None:
    """x (batch, sequence, features) → x @ weight."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="gemm")],
        "one-gemm",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", weight.shape[0]]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", weight.shape[1]])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def int8_gemm(x_q: np.ndarray, w_q: np.ndarray, saturating: bool) -> np.ndarray:
    """x_q @ w_q as ONNX Runtime's u8 x s8 kernels compute it, activations shifted to uint8 by 128.

    ``saturating``: as x86 without VNNI does (vpmaddubsw): each two neighbouring products along
    the features are added into an int16 that clips at ±32767, and the zero point's share
    (128 x column sums of w_q) is taken off afterwards, exactly. Otherwise exact int32 sums.
    """
    x_q, w_q = x_q.astype(np.int64), w_q.astype(np.int64)
    if not saturating:
        return x_q @ w_q
    products = (x_q + 128)[..., :, None] * w_q  # (..., features, columns)
    pairs = products.reshape(*products.shape[:-2], -1, 2, w_q.shape[1]).sum(axis=-2)
    return np.clip(pairs, -32768, 32767).sum(axis=-2) - 128 * w_q.sum(axis=0)


def _reference(
    x: np.ndarray,
    w: np.ndarray,
    weight_bits: int,
    smooth: np.ndarray | None = None,
    saturating: bool = False,
) -> np.ndarray:
    if smooth is not None:  # x @ W = (x / s) @ (s W)
        x, w = x / smooth, w * smooth[:, None]
    qmax = 2 ** (weight_bits - 1) - 1
    w_scale = np.abs(w).max(axis=0) / qmax
    w_q = np.round(w / w_scale)
    x_scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-12) / 127
    x_q = np.round(x / x_scale)  # what the graph holds as uint8 x_q + 128
    return int8_gemm(x_q, w_q, saturating) * w_scale * x_scale


# Whether this machine's int8 kernels saturate 8-bit weights: the tests compare ONNX Runtime
# against the arithmetic this CPU really does, and check the other CPU's arithmetic apart.
SATURATES_8_BIT = exact_weight_bits(cpu_flags()) == 7


def test_seven_bit_weights_never_saturate_and_eight_bit_ones_can() -> None:
    """The reason for the portable preset, on the emulated kernel, whatever this CPU is."""
    worst = np.full((1, 64), 127.0)  # uint8 255 after the shift
    for bits, clips in ((7, False), (8, True)):
        qmax = 2 ** (bits - 1) - 1
        w_q = np.full((64, 3), float(qmax))
        exact, saturated = int8_gemm(worst, w_q, False), int8_gemm(worst, w_q, True)
        assert (exact != saturated).any() == clips, bits
    rng = np.random.default_rng(3)
    x_q, w_q = rng.integers(-127, 128, (20, 96)), rng.integers(-63, 64, (96, 16))
    np.testing.assert_array_equal(int8_gemm(x_q, w_q, True), int8_gemm(x_q, w_q, False))


@pytest.mark.parametrize("weight_bits", [7, 8])
def test_onnxruntime_int8_kernels_match_the_emulation_of_this_cpu(weight_bits: int) -> None:
    """ONNX Runtime's MatMulInteger, bit for bit, against the arithmetic this CPU should do."""
    rng = np.random.default_rng(4)
    qmax = 2 ** (weight_bits - 1) - 1
    x_q = rng.integers(-127, 128, (15, 64))
    w_q = rng.integers(-qmax, qmax + 1, (64, 24)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b", "zero"], ["y"])],
        "int8-gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(x_q.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [15, 24])],
        [numpy_helper.from_array(w_q, "b"), numpy_helper.from_array(np.array(128, np.uint8), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"a": (x_q + 128).astype(np.uint8)})
    saturating = SATURATES_8_BIT and weight_bits == 8
    np.testing.assert_array_equal(found, int8_gemm(x_q, w_q, saturating))


@pytest.mark.parametrize("weight_bits", [8, 7])
def test_each_token_is_quantized_on_its_own_scale(tmp_path: Path, weight_bits: int) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(48, 24)).astype(np.float32)
    x = rng.normal(size=(3, 5, 48)).astype(np.float32)
    x[0, 1] *= 1000  # an outlier token must not coarsen its neighbours
    x[2, 4] = 0  # an all-zero token (padding can be) gives zeros, not NaN
    _one_gemm_graph(tmp_path / "fp32.onnx", w)
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", ["gemm"], weight_bits)

    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"x": x})
    saturating = SATURATES_8_BIT and weight_bits == 8
    expected = _reference(x.astype(np.float64), w.astype(np.float64), weight_bits, saturating=saturating)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert not np.isnan(found).any() and not found[2, 4].any()
    # Per token: row [0, 0] is as close to fp32 as any other row despite its neighbour's outlier.
    error = np.abs(found - x @ w).max(axis=-1) / np.abs(x @ w).max(axis=-1).clip(1e-6)
    assert error[0, 0] < (0.5 if saturating else 0.05)  # clipped sums are far off: the point of 7 bits


def test_gemms_on_different_token_counts_in_one_graph(tmp_path: Path) -> None:
    """The last layer of a CLS model works on the first token only, the others on every token."""
    rng = np.random.default_rng(2)
    w_all, w_first = rng.normal(size=(2, 16, 8)).astype(np.float32)
    x = rng.normal(size=(3, 5, 16)).astype(np.float32)
    starts, ends, axes = (
        numpy_helper.from_array(np.array([v], np.int64), n) for v, n in [(0, "s"), (1, "e"), (1, "a")]
    )
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w_all"], ["y_all"], name="all"),
            helper.make_node("Slice", ["x", "s", "e", "a"], ["x_first"]),
            helper.make_node("MatMul", ["x_first", "w_first"], ["y_first"], name="first"),
        ],
        "two-row-counts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 16])],
        [
            helper.make_tensor_value_info("y_all", TensorProto.FLOAT, ["batch", "sequence", 8]),
            helper.make_tensor_value_info("y_first", TensorProto.FLOAT, ["batch", 1, 8]),
        ],
        [
            numpy_helper.from_array(w_all, "w_all"),
            numpy_helper.from_array(w_first, "w_first"),
            starts,
            ends,
            axes,
        ],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "fp32.onnx")
    )
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", ["all", "first"], 7)

    session = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    y_all, y_first = session.run(None, {"x": x})
    x64 = x.astype(np.float64)
    for found, expected in [
        (y_all, _reference(x64, w_all, 7)),
        (y_first, _reference(x64[:, :1], w_first, 7)),
    ]:
        assert found.shape == expected.shape
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_gemms_not_named_stay_fp32(tmp_path: Path) -> None:
    w = np.eye(8, dtype=np.float32)
    _one_gemm_graph(tmp_path / "fp32.onnx", w)
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", [], 8)
    ops = [node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert "MatMul" in ops and "MatMulIntegerToFloat" not in ops


def test_smoothing_evens_out_an_outlier_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(48, 24)).astype(np.float32)
    x = rng.normal(size=(4, 6, 48)).astype(np.float32)
    x[..., 7] *= 60  # one channel runs large in every token, as in a trained BERT
    exact = x.astype(np.float64) @ w
    _one_gemm_graph(tmp_path / "fp32.onnx", w)
    feeds = {"x": x}

    channel_max = {"x": np.abs(x).max(axis=(0, 1))}
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "smoothed.onnx", ["gemm"], 7, channel_max)
    quantize_per_token(tmp_path / "fp32.onnx", tmp_path / "plain.onnx", ["gemm"], 7)
    (smoothed,) = ort.InferenceSession(
        str(tmp_path / "smoothed.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, feeds)
    (plain,) = ort.InferenceSession(str(tmp_path / "plain.onnx"), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )

    # s_c = sqrt(max|x_c| / max|W_c|), SmoothQuant with alpha 0.5
    smooth = np.clip(np.sqrt(channel_max["x"] / np.abs(w).max(axis=1)), 1e-2, 1e2)
    expected = _reference(x.astype(np.float64), w.astype(np.float64), 7, smooth)
    np.testing.assert_allclose(smoothed, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    error = lambda found: np.abs(found - exact).mean() / np.abs(exact).mean()  # noqa: E731
    assert error(smoothed) < error(plain) / 2


def _qkv_graph(path: Path, weights: list[np.ndarray], biases: list[np.ndarray], shared: bool) -> None:
    """x → three ``x @ W + b``, as a BERT layer's Q, K and V (the second bias through an Identity,
    as optimum writes it). ``shared=False`` gives each GEMM its own copy of x."""
    nodes = []
    for k in range(3):
        x = "x" if shared else f"x{k}"
        if not shared:
            nodes.append(helper.make_node("Identity", ["x"], [x]))
        bias = f"b{k}"
        if k == 1:
            nodes.append(helper.make_node("Identity", [bias], [f"{bias}/id"]))
            bias = f"{bias}/id"
        nodes.append(helper.make_node("MatMul", [x, f"w{k}"], [f"m{k}"], name=f"gemm{k}"))
        nodes.append(helper.make_node("Add", [bias, f"m{k}"] if k < 2 else [f"m{k}", bias], [f"y{k}"]))
    dims = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        "qkv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*dims, weights[0].shape[0]])],
        [
            helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [*dims, w.shape[1]])
            for k, w in enumerate(weights)
        ],
        [numpy_helper.from_array(w, f"w{k}") for k, w in enumerate(weights)]
        + [numpy_helper.from_array(b, f"b{k}") for k, b in enumerate(biases)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y0", "y1", "y2"], {"x": x})


def test_gemms_that_read_one_input_run_as_one_and_give_the_same_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    weights = [rng.normal(size=(48, n)).astype(np.float32) for n in (16, 16, 8)]
    biases = [rng.normal(size=w.shape[1]).astype(np.float32) for w in weights]
    x = rng.normal(size=(3, 5, 48)).astype(np.float32)
    x[1, 2] *= 300  # an outlier token keeps its own scale in the fused GEMM too
    names = ["gemm0", "gemm1", "gemm2"]
    outputs = {}
    for shared in (True, False):
        _qkv_graph(tmp_path / f"fp32-{shared}.onnx", weights, biases, shared)
        quantize_per_token(tmp_path / f"fp32-{shared}.onnx", tmp_path / f"int8-{shared}.onnx", names, 7)
        ops = [node.op_type for node in onnx.load(str(tmp_path / f"int8-{shared}.onnx")).graph.node]
        assert ops.count("MatMulIntegerToFloat") == (1 if shared else 3)
        if shared:  # the biases are added once, after the one GEMM: the Adds and the Identity are gone
            assert ops.count("Add") == 1 and ops.count("Split") == 1 and "Identity" not in ops
        outputs[shared] = _run(tmp_path / f"int8-{shared}.onnx", x)
    for fused, apart, w, b in zip(outputs[True], outputs[False], weights, biases):
        np.testing.assert_array_equal(fused, apart)  # bit for bit
        expected = _reference(x.astype(np.float64), w.astype(np.float64), 7) + b
        np.testing.assert_allclose(fused, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # Smoothed, the three share one s_c from their joint max |W_c|, as they did apart from each other.
    channel_max = {"x": np.abs(x).max(axis=(0, 1))}
    quantize_per_token(tmp_path / "fp32-True.onnx", tmp_path / "smoothed.onnx", names, 7, channel_max)
    joint = np.abs(np.concatenate(weights, axis=1)).max(axis=1)
    smooth = np.clip(np.sqrt(channel_max["x"] / joint), 1e-2, 1e2)
    for found, w, b in zip(_run(tmp_path / "smoothed.onnx", x), weights, biases):
        expected = _reference(x.astype(np.float64), w.astype(np.float64), 7, smooth) + b
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

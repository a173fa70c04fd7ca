"""Timing primitives: throughput, latency, the machine's GEMM peak, and a BERT's FLOP count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(call: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latency_ms(encode_one: Callable[[str], object], texts: list[str], calls: int) -> dict[str, float]:
    """Single-text latency percentiles over ``calls`` calls, cycling through ``texts``."""
    for text in texts[:5]:  # warm-up: first calls allocate
        encode_one(text)
    samples = np.array([timed(lambda t=texts[i % len(texts)]: encode_one(t)) for i in range(calls)]) * 1e3
    return {
        "p50": float(np.percentile(samples, 50)),
        "p95": float(np.percentile(samples, 95)),
        "p99": float(np.percentile(samples, 99)),
        "calls": calls,
        "samples": [round(float(x), 3) for x in samples],
    }


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def bert_flops(config: dict[str, Any], lengths: list[int]) -> float:
    """FLOPs (2 per multiply-add) of a BERT encoder over texts of these real token counts.

    Per token and layer: Q, K, V and output projections (4h²) and the two FFN GEMMs (2hi)
    multiply-adds; per text and layer, the attention scores and their weighted sum (2s²h).
    Padding is not counted: this is the useful work, whatever a stack pads.
    """
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    s = np.asarray(lengths, dtype=np.float64)
    per_layer = s.sum() * (4 * h * h + 2 * h * i) + (s**2).sum() * 2 * h
    return float(2 * layers * per_layer)


def best_peak(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The better of two GEMM-peak measurements: a peak is what the machine can do, and a
    shared machine's slow moments only lower it."""
    return max(first, second, key=lambda peak: peak["peak_gflops"])


def gemm_peak_gflops(repeats: int = 5) -> dict[str, float]:
    """This machine's fp32 GEMM peak, as the best of numpy's BLAS and ONNX Runtime's MatMul.

    The shape is BERT-base's FFN GEMM for 4096 tokens (4096×768 by 768×3072, 19.3 GFLOP), run
    with every core; the best of ``repeats`` runs counts.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 4096, 768, 3072
    flops = 2.0 * m * k * n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)

    np.matmul(a, b)
    numpy_best = min(timed(lambda: np.matmul(a, b)) for _ in range(repeats))

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"a": a})
    ort_best = min(timed(lambda: session.run(None, {"a": a})) for _ in range(repeats))
    return {
        "numpy_gflops": flops / numpy_best / 1e9,
        "onnxruntime_gflops": flops / ort_best / 1e9,
        "peak_gflops": flops / min(numpy_best, ort_best) / 1e9,
        "shape": f"{m}x{k} @ {k}x{n} fp32",
    }


def weight_pass_ms(hidden: int, weights: int, tokens: int, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of one GEMM pass over ``weights`` parameters at ``tokens`` tokens.

    A one-text call must read every weight of the encoder from memory once, so this pass is the
    floor of single-text latency, before attention, LayerNorm and per-op overheads: in fp32
    (ONNX Runtime's MatMul) and in int8 (its MatMulIntegerToFloat, what the int8 graphs run).
    The weights are one (hidden × weights/hidden) matrix, all cores.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    columns = weights // hidden
    rng = np.random.default_rng(0)

    def session(node: Any, initializers: list[Any], x_type: int) -> Any:
        graph = helper.make_graph(
            [node], "weight-pass",
            [helper.make_tensor_value_info("x", x_type, [tokens, hidden])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [tokens, columns])],
            initializers,
        )  # fmt: skip
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets)
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def median_ms(session: Any, x: np.ndarray) -> float:
        for _ in range(3):
            session.run(None, {"x": x})
        return median([timed(lambda: session.run(None, {"x": x})) for _ in range(repeats)]) * 1e3

    fp32 = session(
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        [numpy_helper.from_array(rng.standard_normal((hidden, columns), dtype=np.float32), "w")],
        TensorProto.FLOAT,
    )
    fp32_ms = median_ms(fp32, rng.standard_normal((tokens, hidden), dtype=np.float32))
    del fp32  # 4 bytes a weight: free it before the int8 copy is built
    int8 = session(
        helper.make_node("MatMulIntegerToFloat", ["x", "w", "one", "w_scale", "zero"], ["y"], domain="com.microsoft"),
        [
            numpy_helper.from_array(rng.integers(-127, 128, (hidden, columns), dtype=np.int8), "w"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.ones(columns, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "zero"),
        ],
        TensorProto.UINT8,
    )
    int8_ms = median_ms(int8, rng.integers(0, 256, (tokens, hidden), dtype=np.uint8))
    return {"fp32_ms": fp32_ms, "int8_ms": int8_ms, "tokens": tokens, "weights": columns * hidden}


def weight_gemm_params(config: dict[str, Any]) -> int:
    """Parameters in a BERT encoder's weight GEMMs: Q, K, V, output (4h²) and FFN (2hi) per layer."""
    h, i = config["hidden_size"], config["intermediate_size"]
    return config["num_hidden_layers"] * (4 * h * h + 2 * h * i)

"""Timing primitives: throughput, latency, batch independence, the machine's GEMM peak, and a
BERT's FLOP count."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import Encode


def timed(call: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latency_ms(encode_one: Callable[[str], object], texts: list[str], calls: int) -> dict[str, float]:
    """Single-text latency percentiles over ``calls`` calls, cycling through ``texts``."""
    return interleaved_latency({"one": encode_one}, texts, calls)["one"]


def alternating_latency(
    encoders: dict[str, Callable[[str], object]], texts: list[str], calls: int, block: int = 10
) -> dict[str, float]:
    """Single-text p50 (ms) of each encoder, ``calls`` each, in alternating blocks
    (`interleaved_latency`)."""
    return {
        name: figures["p50"] for name, figures in interleaved_latency(encoders, texts, calls, block).items()
    }


def interleaved_latency(
    encoders: dict[str, Callable[[str], object]], texts: list[str], calls: int, block: int = 10
) -> dict[str, dict[str, Any]]:
    """Single-text latency percentiles (ms) of each encoder, ``calls`` each, in blocks of
    ``block`` calls whose order alternates: a noisy minute of a shared machine falls on all of
    them alike.

    Blocks, not single calls: each session's idle threads spin for a while after a call and
    would slow the other's next call.
    """
    for text in texts[:5]:  # warm-up: first calls allocate
        for encode in encoders.values():
            encode(text)
    samples: dict[str, list[float]] = {name: [] for name in encoders}
    for start in range(0, calls, block):
        order = list(encoders.items())
        for name, encode in order if (start // block) % 2 == 0 else order[::-1]:
            for index in range(start, min(start + block, calls)):
                text = texts[index % len(texts)]
                samples[name].append(timed(lambda e=encode, t=text: e(t)) * 1e3)
    return {name: _percentiles(np.array(values), calls) for name, values in samples.items()}


def _percentiles(samples: np.ndarray, calls: int) -> dict[str, Any]:
    return {
        "p50": float(np.percentile(samples, 50)),
        "p95": float(np.percentile(samples, 95)),
        "p99": float(np.percentile(samples, 99)),
        "calls": calls,
        "samples": [round(float(x), 3) for x in samples],
    }


def throughput(
    encoders: dict[str, Encode], texts: list[str], batch_size: int, passes: int
) -> dict[str, float]:
    """Median seconds per pass of each encoder over ``texts``, passes interleaved.

    Interleaving (pass 1 of every encoder, then pass 2, ...) spreads the machine's drift over
    all of them alike, so ratios taken in one run are fair even on a noisy machine.
    """
    # A warm-up batch of the measured size, but at most a quarter of a pass: long texts are costly.
    warm = texts[: max(1, min(batch_size, len(texts) // 4))]
    for encode in encoders.values():
        encode(warm, batch_size)
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(passes):
        for name, encode in encoders.items():
            seconds[name].append(timed(lambda e=encode: e(texts, batch_size)))
    return {name: median(values) for name, values in seconds.items()}


def batch_drift(encoders: dict[str, Encode], texts: list[str]) -> dict[str, dict[str, float]]:
    """Cosine between each text's vector alone and in batches of 32 (1.0: batch mates don't matter)."""
    from gist_onnx.export.verify import agreement

    out = {}
    for name, encode in encoders.items():
        alone = np.concatenate([encode([text], 1) for text in texts])
        found = agreement(alone, encode(texts, 32))
        out[name] = {"min_cosine": found.min_cosine, "mean_cosine": found.mean_cosine, "texts": len(texts)}
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# Tail figures carry a bootstrap interval: a p99 of a few hundred answers rests on its few
# slowest, and two runs of the same phase differed by tens of percent (docs/serving.md).
INTERVAL_LEVEL = 0.90
RESAMPLES = 2000


def percentile_interval(
    samples: Sequence[float],
    q: float,
    level: float = INTERVAL_LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval (``level``, percentile method) of the ``q``-th percentile of independent
    ``samples``."""
    values = np.asarray(samples, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("no samples")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    estimates = np.percentile(values[draws], q, axis=1)
    low, high = np.quantile(estimates, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def block_interval(
    blocks: Sequence[Sequence[Sequence[float]]],
    statistic: Callable[..., float],
    level: float = INTERVAL_LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of ``statistic(*sides)`` over blocks: ``blocks[k]`` holds block k's
    samples of every side. Whole blocks are drawn, every side's block k with the same draw, so
    what is correlated within a block (a queue's latencies) and what is paired across sides (the
    same arrivals) stays together."""
    if not blocks:
        raise ValueError("no blocks")
    sides = [[np.asarray(b[side], dtype=np.float64) for b in blocks] for side in range(len(blocks[0]))]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(blocks), size=len(blocks))
        estimates.append(statistic(*(np.concatenate([side[k] for k in drawn]) for side in sides)))
    low, high = np.quantile(estimates, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


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


def best_peak(first: dict[str, Any], second: dict[str, Any], key: str = "peak_gflops") -> dict[str, Any]:
    """The better of two GEMM-peak measurements by ``key``: a peak is what the machine can do,
    and a shared machine's slow moments only lower it."""
    return max(first, second, key=lambda peak: peak[key])


# BERT-base's FFN GEMM for 4096 tokens (4096×768 by 768×3072, 19.3 GFLOP): the peaks' shape.
PEAK_SHAPE = (4096, 768, 3072)


def gemm_peak_gflops(repeats: int = 5) -> dict[str, float]:
    """This machine's fp32 GEMM peak, as the best of numpy's BLAS and ONNX Runtime's MatMul.

    The shape is ``PEAK_SHAPE``, run with every core; the best of ``repeats`` runs counts.
    """
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = PEAK_SHAPE
    flops = 2.0 * m * k * n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)

    np.matmul(a, b)
    numpy_best = min(timed(lambda: np.matmul(a, b)) for _ in range(repeats))
    session = _one_node_session(
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        [numpy_helper.from_array(b, "w")],
        (TensorProto.FLOAT, [m, k]),
        (TensorProto.FLOAT, [m, n]),
    )
    ort_best = _best_seconds(session, a, repeats)
    return {
        "numpy_gflops": flops / numpy_best / 1e9,
        "onnxruntime_gflops": flops / ort_best / 1e9,
        "peak_gflops": flops / min(numpy_best, ort_best) / 1e9,
        "shape": f"{m}x{k} @ {k}x{n} fp32",
    }


def int8_gemm_peak_gops(repeats: int = 5) -> dict[str, float | str]:
    """This machine's int8 GEMM peak through ONNX Runtime (MatMulInteger, uint8 activations by
    constant int8 weights: the kernels the per-token int8 graph runs), on ``PEAK_SHAPE``; the
    best of ``repeats`` runs counts."""
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = PEAK_SHAPE
    rng = np.random.default_rng(0)
    session = _one_node_session(
        helper.make_node("MatMulInteger", ["x", "w", "x_zero", "w_zero"], ["y"]),
        [
            numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "w"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        ],
        (TensorProto.UINT8, [m, k]),
        (TensorProto.INT32, [m, n]),
    )
    best = _best_seconds(session, rng.integers(0, 256, (m, k), dtype=np.uint8), repeats)
    return {"peak_gops": 2.0 * m * k * n / best / 1e9, "shape": f"{m}x{k} @ {k}x{n} uint8 x int8"}


def _one_node_session(
    node: Any, initializers: list[Any], x: tuple[int, list[int]], y: tuple[int, list[int]]
) -> Any:
    """An ONNX Runtime CPU session of one node from input "x" to output "y" ((type, shape) each),
    its weights constant initializers."""
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(
        [node], "one-node",
        [helper.make_tensor_value_info("x", *x)],
        [helper.make_tensor_value_info("y", *y)],
        initializers,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _best_seconds(session: Any, x: np.ndarray, repeats: int) -> float:
    """The fastest of ``repeats`` runs after a warm-up: the machine's best, not its noise."""
    session.run(None, {"x": x})
    return min(timed(lambda: session.run(None, {"x": x})) for _ in range(repeats))


def weight_pass_ms(hidden: int, weights: int, tokens: int, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of one GEMM pass over ``weights`` parameters at ``tokens`` tokens.

    A one-text call must read every weight of the encoder from memory once, so this pass is the
    floor of single-text latency, before attention, LayerNorm and per-op overheads: in fp32
    (ONNX Runtime's MatMul) and in int8 (its MatMulIntegerToFloat, what the int8 graphs run).
    The weights are one (hidden × weights/hidden) matrix, all cores.
    """
    from onnx import TensorProto, helper, numpy_helper

    columns = weights // hidden
    rng = np.random.default_rng(0)

    def session(node: Any, initializers: list[Any], x_type: int) -> Any:
        return _one_node_session(
            node, initializers, (x_type, [tokens, hidden]), (TensorProto.FLOAT, [tokens, columns])
        )

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
        helper.make_node(
            "MatMulIntegerToFloat", ["x", "w", "one", "w_scale", "zero"], ["y"], domain="com.microsoft"
        ),
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

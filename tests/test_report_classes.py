"""The report's classes (near-lossless or quantized) and our best against the best peer in each."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.report import best_against_peers, classes, peers_table


def _variant(stack: str, short: float, p50: float, min_cos: float, long_cos: float = 1.0) -> dict[str, Any]:
    return {
        "stack": stack,
        "throughput": [{"workload": "short", "batch_size": 32, "texts_per_s": short}],
        "latency_ms": {"p50": p50},
        "quality": {"min_cosine_to_pytorch": min_cos, "long_min_cosine_to_pytorch": long_cos},
    }


REAL = {
    "pytorch-fp32": _variant("pytorch", 100, 40, 1.0),
    "openvino": _variant("openvino", 300, 12, 0.99995),
    # Exact on short texts, but it truncates long ones elsewhere: not near-lossless.
    "fastembed-fp32": _variant("fastembed", 500, 5, 1.0, long_cos=0.6),
    "openvino-int8": _variant("openvino", 400, 7, 0.9),
    "gist-onnx-fp32": _variant("gist-onnx", 250, 10, 1.0),
    "gist-onnx-int8": _variant("gist-onnx", 450, 6, 0.99),
}


def test_a_variant_is_near_lossless_only_where_short_and_long_texts_keep_its_vectors() -> None:
    found = classes({"models": {"minilm": {"variants": REAL}}})
    assert found == {
        "pytorch-fp32": "near-lossless",
        "openvino": "near-lossless",
        "fastembed-fp32": "quantized",
        "openvino-int8": "quantized",
        "gist-onnx-fp32": "near-lossless",
        "gist-onnx-int8": "quantized",
    }


def test_ours_over_the_best_peer_per_class_higher_throughput_and_lower_latency_win() -> None:
    classed = classes({"models": {"minilm": {"variants": REAL}}})
    rows = {(r["class"], r["figure"]): r for r in best_against_peers({"variants": REAL}, classed)}
    short = rows["near-lossless", "short texts/s"]
    assert (short["ours"], short["peer"]) == ("gist-onnx-fp32", "openvino")
    assert short["ratio"] == pytest.approx(250 / 300)
    latency = rows["near-lossless", "single-text p50 ms"]
    assert (latency["peer"], latency["ratio"]) == ("openvino", pytest.approx(10 / 12))
    quantized = rows["quantized", "short texts/s"]
    assert (quantized["ours"], quantized["peer"]) == ("gist-onnx-int8", "fastembed-fp32")
    assert rows["quantized", "single-text p50 ms"]["ratio"] == pytest.approx(6 / 5)
    # No medium workload in these figures: no row claims one.
    assert not any(figure.startswith("~120") for _, figure in rows)
    assert "| near-lossless | short texts/s | gist-onnx-fp32 250.0 | openvino 300.0 | 0.83x |" in peers_table(
        {"variants": REAL}, classed
    )


def test_only_the_settings_we_recommend_count_as_ours_where_asked() -> None:
    classed = classes({"models": {"minilm": {"variants": REAL}}})
    rows = best_against_peers({"variants": REAL}, classed, ours_only={"gist-onnx-fp32"})
    assert {r["class"] for r in rows} == {"near-lossless"}  # no recommended int8: no quantized row
    assert {r["ours"] for r in rows} == {"gist-onnx-fp32"}

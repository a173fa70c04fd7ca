"""The ceiling study's profile split finds exactly the encoder's weight GEMMs."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
import onnxruntime as ort  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from benchmarks.studies.ceiling import split_profile  # noqa: E402
from gist_onnx import Embedder  # noqa: E402


def test_profile_split_counts_the_weight_gemm_flops(
    tiny_export: Path, tiny_model: Path, tmp_path: Path
) -> None:
    config = json.loads((tiny_model / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    texts = ["the cat sat on the mat"] * 4
    tokenizer = Tokenizer.from_file(str(tiny_export / "tokenizer.json"))
    tokenizer.no_padding()
    tokens = len(tokenizer.encode(texts[0]).ids)
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "tiny")
    embedder = Embedder(tiny_export, provider="cpu", precision="fp32", session_options=options)
    for _ in range(2):  # a warm-up group, then the measured one
        embedder.encode(texts)
    del embedder
    gc.collect()
    (profile,) = tmp_path.glob("tiny_*.json")
    split = split_profile(profile, groups=2)

    rows, firsts = len(texts) * tokens, len(texts)
    # Every layer projects Q, K, V and O (4h²) and runs the FFN (2hi) for every token, except the
    # last: a CLS export computes its K and V for every token and the rest for the first token only.
    macs = (layers - 1) * rows * (4 * h * h + 2 * h * i) + rows * 2 * h * h + firsts * (2 * h * h + 2 * h * i)
    assert split["weight_gemm_gflop"] * 1e9 == pytest.approx(2 * macs, rel=1e-12)
    assert split["weight_gemm_ms"] > 0 and split["rest_ms"] > 0


def test_each_case_is_bounded_by_the_peak_of_its_own_precision() -> None:
    from benchmarks.studies.ceiling import with_bounds

    case = {"pytorch_ms": 300.0, "gist_ms": 100.0, "weight_gemm_ms": 80.0, "rest_ms": 20.0,
            "weight_gemm_gflop": 40.0, "target": 3.0, "batch_size": 32}  # fmt: skip
    fp32 = with_bounds(case | {"precision": "fp32"}, peak=1000.0)
    int8 = with_bounds(case | {"precision": "int8"}, peak=2000.0)
    assert fp32["ratio"] == int8["ratio"] == 3.0 and fp32["ceiling"] == int8["ceiling"] == 3.75
    assert (fp32["weight_gemm_of_peak"], int8["weight_gemm_of_peak"]) == (0.5, 0.25)
    # 40 GFLOP take 40 ms at an fp32 peak of 1,000 GFLOP/s and 20 ms at an int8 peak of 2,000.
    assert (fp32["ceiling_at_peak"], int8["ceiling_at_peak"]) == (7.5, 15.0)
    assert "ceiling_at_peak" not in with_bounds(case | {"precision": "int8", "batch_size": 1}, peak=2000.0)

"""The benchmark's peers and the OpenVINO int8 study's graphs, on the committed tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.peers import load_onnxruntime
from gist_onnx import Embedder

TEXTS = ["How to bake a cake?", "A recipe for chocolate cake", "The stock market fell sharply today.", "x"]


@pytest.mark.parametrize("model", ["core_model", "core_mean_model"])
def test_the_peer_pipeline_pools_as_the_model_says(model: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(model)
    expected = Embedder(folder, provider="cpu", precision="fp32").encode(TEXTS, batch_size=2)
    found = load_onnxruntime(folder / "model.onnx", folder)(TEXTS, 2)
    np.testing.assert_allclose(found, expected, atol=1e-5)


@pytest.mark.parametrize("model", ["core_model", "core_mean_model"])
def test_the_elementwise_per_token_graph_matches_the_exported_one(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from benchmarks.studies.openvino_int8 import elementwise_quantize

    folder = request.getfixturevalue(model)
    rewritten = tmp_path / "model_int8_elementwise.onnx"
    assert elementwise_quantize(folder / "model_int8.onnx", rewritten) > 0
    expected = Embedder(folder, provider="cpu", precision="int8").encode(TEXTS, batch_size=2)
    found = load_onnxruntime(rewritten, folder)(TEXTS, 2)
    # The same arithmetic in other ops: equal but for a rounding tie now and then.
    assert float((found * expected).sum(axis=1).min()) > 0.99999


def test_openvino_runs_the_elementwise_graph_and_not_the_exported_one(
    core_model: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino", reason="the bench extra is not installed")
    from benchmarks import peers
    from benchmarks.studies.openvino_int8 import elementwise_quantize

    with pytest.raises(RuntimeError, match="FakeQuantize"):
        peers.load_openvino(core_model / "model_int8.onnx", core_model)(TEXTS, 2)
    rewritten = tmp_path / "model_int8_elementwise.onnx"
    elementwise_quantize(core_model / "model_int8.onnx", rewritten)
    expected = Embedder(core_model, provider="cpu", precision="int8").encode(TEXTS, batch_size=2)
    found = peers.load_openvino(rewritten, core_model, {"INFERENCE_PRECISION_HINT": "f32"})(TEXTS, 2)
    assert float((found * expected).sum(axis=1).min()) > 0.999

"""CLS models: the last layer computes the first token only, with the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gist_onnx.export.convert import to_onnx  # noqa: E402
from gist_onnx.export.first_token import GraphShapeError, keep_first_token  # noqa: E402
from gist_onnx.tokenize import TextTokenizer  # noqa: E402

TEXTS = ["a short one", "a somewhat longer sentence about the capital of France", "", "x " * 40]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("first-token")
    raw = folder / "raw.onnx"
    to_onnx(tiny_model, raw, None)
    keep_first_token(raw, folder / "first.onnx")
    return raw, folder / "first.onnx"


def test_first_token_state_is_the_full_graphs(graphs: tuple[Path, Path], tiny_export: Path) -> None:
    feeds = _feeds(tiny_export)  # padded: the mask matters
    full, first = (ort.InferenceSession(str(g), providers=["CPUExecutionProvider"]) for g in graphs)
    expected = full.run(None, feeds)[0]
    found = first.run(None, feeds)[0]
    assert expected.shape[1] == feeds["input_ids"].shape[1] > 1
    assert found.shape == (len(TEXTS), 1, expected.shape[2])
    np.testing.assert_allclose(found[:, 0], expected[:, 0], atol=1e-5)


def test_the_last_layers_feed_forward_sees_one_token_per_text(
    graphs: tuple[Path, Path], tiny_export: Path
) -> None:
    model = onnx.load(str(graphs[1]))
    weights = {init.name for init in model.graph.initializer}
    last_gemm = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights][-1]
    model.graph.output.append(helper.make_tensor_value_info(last_gemm.input[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(tiny_export)
    assert session.run([last_gemm.input[0]], feeds)[0].shape[:2] == (len(TEXTS), 1)


def _feeds(folder: Path) -> dict[str, np.ndarray]:
    tokenizer = TextTokenizer(folder / "tokenizer.json", 512)
    return tokenizer.pad(tokenizer.encode(TEXTS), ["input_ids", "attention_mask", "token_type_ids"])


def test_a_graph_without_attention_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "no-attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "g.onnx"))
    with pytest.raises(GraphShapeError, match="no Softmax"):
        keep_first_token(tmp_path / "g.onnx", tmp_path / "out.onnx")

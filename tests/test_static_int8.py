"""`export --openvino-int8`: static int8 for provider="openvino", written beside the other graphs,
verified like them, and chosen by the runtime only under OpenVINO. Exported for real on the tiny
GIST-shaped model; run for real on ONNX Runtime's CPU provider everywhere and under OpenVINO where
its plugin offers a CPU device."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nncf", reason="the export extra is not installed")

from gist_onnx import Embedder, ModelFolderError, ProviderError  # noqa: E402
from gist_onnx import openvino as ov  # noqa: E402
from gist_onnx.cli import main as cli  # noqa: E402
from gist_onnx.errors import ExportError  # noqa: E402
from gist_onnx.export import export_model  # noqa: E402
from gist_onnx.export.static_int8 import (  # noqa: E402
    MIN_CALIBRATION_TEXTS,
    builtin_calibration,
    residual_projections,
)
from gist_onnx.export.verify import PROBES  # noqa: E402
from gist_onnx.manifest import MANIFEST_NAME, read_manifest  # noqa: E402

TEXTS = ["What is the capital of France?", "", "naïve café 🚀", "word " * 700]


@pytest.fixture(scope="module")
def static_export(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("static-int8") / "onnx"
    args = ["export", str(tiny_model), "-o", str(out), "--quantize", "int8", "--openvino-int8"]
    assert cli(args) == 0
    return out


def _openvino_here() -> bool:
    try:
        ov.engine()  # the plugin, or OpenVINO's own runtime
    except ProviderError:
        return False
    return True


def test_the_graph_is_written_described_and_verified(static_export: Path) -> None:
    manifest = read_manifest(static_export)
    assert set(manifest.graphs) == {"fp32", "int8", "int8-openvino"}
    graph = manifest.graphs["int8-openvino"]
    assert (graph.file, graph.precision) == ("model_int8_openvino.onnx", "int8")
    assert graph.quantization["activations"] == "static"
    assert graph.quantization["calibration_texts"] == len(builtin_calibration())
    result = manifest.verification["results"]["int8-openvino"]
    assert result["threshold"] == 0.98 and result["min_cosine"] >= 0.98
    # Named apart from its precision: format 3, which older runtimes refuse with "upgrade".
    assert manifest.format_version == 3
    assert json.loads((static_export / MANIFEST_NAME).read_text())["format_version"] == 3


def test_a_folder_without_it_stays_format_2(tiny_export: Path) -> None:
    assert read_manifest(tiny_export).format_version == 2


def test_the_builtin_calibration_spans_lengths_and_kinds() -> None:
    texts = builtin_calibration()
    assert len(texts) == len(set(texts)) >= 400 and "" not in texts
    words = sorted(len(t.split()) for t in texts)
    assert words[0] == 1 and words[-1] > 300  # one-word queries to passages past 256 tokens
    assert any("東京" in t for t in texts) and not set(PROBES) & set(texts)


def test_it_is_quantized_with_static_qdq_pairs(static_export: Path) -> None:
    import onnx

    ops = {node.op_type for node in onnx.load(str(static_export / "model_int8_openvino.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "DynamicQuantizeLinear" not in ops and "MatMulIntegerToFloat" not in ops


def test_the_residual_projections_are_found_by_structure(static_export: Path) -> None:
    import onnx

    graph = onnx.load(str(static_export / "model.onnx")).graph
    found = residual_projections(graph)
    # Two a layer, the first-token last layer's included: attention output, then FFN output.
    assert found == [
        f"/encoder/layer.{i}/{part}/dense/MatMul" for i in range(2) for part in ("attention/output", "output")
    ]
    # The same GEMMs fused the way ONNX Runtime's O2 writes them: bias + residual + LayerNorm in one op.
    fused = onnx.GraphProto()
    fused.CopyFrom(graph)
    for node in fused.node:
        if node.op_type == "LayerNormalization":
            node.op_type = "SkipLayerNormalization"
    assert residual_projections(fused) == found


def test_the_residual_projections_stay_in_float(static_export: Path) -> None:
    import onnx

    graph = onnx.load(str(static_export / "model_int8_openvino.onnx")).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    activation_quantized = {
        node.name: producer.get(node.input[0]) == "DequantizeLinear"
        for node in graph.node
        if node.op_type == "MatMul"
    }
    in_float = {name for name, quantized in activation_quantized.items() if not quantized}
    # Softmax x V is never quantized (NNCF's transformer preset); the rest are our choice.
    assert in_float - {n for n in in_float if n.endswith("attention/self/MatMul_1")} == set(
        residual_projections(onnx.load(str(static_export / "model.onnx")).graph)
    )
    assert sum(activation_quantized.values()) == 2 * 5  # Q, K, V, Q x K and the FFN input, 2 layers
    assert read_manifest(static_export).graphs["int8-openvino"].quantization["float_gemms"] == 4


def test_it_is_made_from_the_unfused_graph_whatever_the_fp32_optimization(
    tmp_path: Path, tiny_model: Path
) -> None:
    import onnx

    out = tmp_path / "onnx"
    args = ["export", str(tiny_model), "-o", str(out), "--optimize", "O2", "--openvino-int8"]
    assert cli(args) == 0
    manifest = read_manifest(out)
    assert manifest.graphs["fp32"].optimization == "O2"
    graph = manifest.graphs["int8-openvino"]
    assert graph.optimization == "none" and graph.quantization["float_gemms"] == 4
    domains = {node.domain for node in onnx.load(str(out / graph.file)).graph.node}
    assert domains <= {"", "ai.onnx"}  # none of ONNX Runtime's com.microsoft fused ops


def test_the_cpu_provider_keeps_its_per_token_graph(static_export: Path) -> None:
    embedder = Embedder(static_export, provider="cpu", precision="int8")
    assert embedder.info.graph == "int8"


def test_run_by_name_on_the_cpu_it_is_batch_independent(static_export: Path) -> None:
    embedder = Embedder(static_export, provider="cpu", graph="int8-openvino")
    assert (embedder.info.graph, embedder.info.precision) == ("int8-openvino", "int8")
    together = embedder.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([embedder.encode([t])[0] for t in TEXTS])
    # Fixed scales: a text's vector does not depend on its batch mates.
    np.testing.assert_allclose(together, alone, atol=1e-6)
    fp32 = Embedder(static_export, provider="cpu", precision="fp32").encode(TEXTS)
    assert np.min((together * fp32).sum(axis=1)) >= 0.98


def test_a_graph_the_folder_lacks_or_a_precision_it_does_not_compute_is_named(tiny_export: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"has no graph 'int8-openvino' \(it has \['fp32', 'int8'\]\)"):
        Embedder(tiny_export, provider="cpu", graph="int8-openvino")
    with pytest.raises(ValueError, match="graph 'int8' computes in int8, not precision='fp32'"):
        Embedder(tiny_export, provider="cpu", graph="int8", precision="fp32")
    assert Embedder(tiny_export, provider="cpu", graph="int8", precision="int8").info.graph == "int8"


def test_calibration_from_a_file(tmp_path: Path, tiny_model: Path) -> None:
    texts = tmp_path / "mine.txt"
    texts.write_text("\n".join(f"support ticket {i}: the printer on floor {i % 7} jams" for i in range(120)))
    out = tmp_path / "onnx"
    export_model(str(tiny_model), out, openvino_int8=True, calibration=texts)
    manifest = read_manifest(out)
    assert set(manifest.graphs) == {"fp32", "int8-openvino"}
    assert manifest.graphs["int8-openvino"].quantization["calibration_texts"] == 120


def test_bad_calibration_settings_fail_before_any_work(tmp_path: Path, tiny_model: Path) -> None:
    few = tmp_path / "few.txt"
    few.write_text("one text\nanother text\n\none text\n")
    with pytest.raises(ExportError, match=f"2 distinct non-empty lines.*at least {MIN_CALIBRATION_TEXTS}"):
        export_model(str(tiny_model), tmp_path / "a", openvino_int8=True, calibration=few)
    with pytest.raises(ExportError, match="cannot read it as UTF-8"):
        export_model(str(tiny_model), tmp_path / "b", openvino_int8=True, calibration=tmp_path / "none.txt")
    with pytest.raises(ExportError, match="pass both or neither"):
        export_model(str(tiny_model), tmp_path / "c", calibration=few)
    with pytest.raises(ExportError, match=r"--min-cosine names no graph: \['int8_openvino'\]"):
        export_model(str(tiny_model), tmp_path / "d", min_cosine={"int8_openvino": 0.9})
    assert list(tmp_path.iterdir()) == [few]


def test_openvino_int8_for_real_where_it_runs(static_export: Path) -> None:
    if not _openvino_here():
        pytest.skip("neither the OpenVINO plugin (with a CPU device) nor OpenVINO's runtime is here")
    embedder = Embedder(static_export, provider="openvino", precision="int8")
    assert (embedder.info.device, embedder.info.graph) == ("openvino", "int8-openvino")
    together = embedder.encode(TEXTS, batch_size=len(TEXTS))
    alone = np.stack([embedder.encode([t])[0] for t in TEXTS])
    assert np.min((together * alone).sum(axis=1)) >= 0.9999  # batch-independent under OpenVINO too
    fp32 = Embedder(static_export, provider="cpu", precision="fp32").encode(TEXTS)
    assert np.min((together * fp32).sum(axis=1)) >= 0.98


def test_the_calibration_study_grows_one_set_into_the_exports() -> None:
    from benchmarks.studies.static_calibration import calibration_sets

    sets = list(calibration_sets().values())
    assert [len(s) for s in sets[:3]] == [300, 360, 410]
    for smaller, larger in zip(sets, sets[1:]):
        assert set(smaller) < set(larger)
    assert sets[-1] == builtin_calibration()


def test_the_study_swaps_in_a_graph_calibrated_otherwise(static_export: Path, tmp_path: Path) -> None:
    from benchmarks.studies.static_calibration import calibration_sets, static_folder

    texts = next(iter(calibration_sets().values()))
    folder = static_folder(static_export, tmp_path / "swapped", texts)
    graph = read_manifest(folder).graphs["int8-openvino"]
    assert graph.quantization["calibration_texts"] == len(texts) == 300
    assert graph.sha256 != read_manifest(static_export).graphs["int8-openvino"].sha256
    embedder = Embedder(folder, provider="cpu", graph="int8-openvino")  # sizes and sha256 checked
    assert embedder.encode(TEXTS).shape == (len(TEXTS), embedder.dim)
    assert static_folder(static_export, folder, []) == folder  # made once, then reused
    assert not (tmp_path / "swapped.partial").exists()


def test_the_scope_study_leaves_the_sets_it_names_in_float(static_export: Path, tmp_path: Path) -> None:
    import onnx

    from benchmarks.studies.static_calibration import static_folder
    from benchmarks.studies.static_scope import fake_quantized, scopes

    graph = onnx.load(str(static_export / "model.onnx")).graph
    sets = scopes(graph)
    assert list(sets.values())[0] == [] and list(sets.values())[-1] == residual_projections(graph)
    late = sets["both, last half of the layers"]
    assert late == [n for n in residual_projections(graph) if "layer.1/" in n] and len(late) == 2
    folder = static_folder(static_export, tmp_path / "scope", builtin_calibration()[:100], late)
    assert read_manifest(folder).graphs["int8-openvino"].quantization["float_gemms"] == 2
    # Fake quantization is the same arithmetic as the int8 kernels, up to their rounding.
    exact = Embedder(folder, provider="cpu", graph="int8-openvino").encode(TEXTS)
    assert np.min((fake_quantized(folder).encode(TEXTS) * exact).sum(axis=1)) >= 0.99

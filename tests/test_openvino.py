"""The OpenVINO path's logic, everywhere: device selection from ONNX Runtime's EP devices (fake
lists), which engine runs it (the plugin, else OpenVINO's own runtime), bf16 only where the CPU
computes it natively, what each device runs, and the errors.

Where either engine can run (the plugin on an Intel CPU, OpenVINO's runtime anywhere it is
installed) the last tests run it for real; where neither can, asking for it must be one clear error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from gist_onnx import Embedder, ModelFolderError, ProviderError
from gist_onnx import openvino as ov
from gist_onnx.cli import main as cli
from gist_onnx.manifest import read_manifest
from gist_onnx.options import MAX_BATCH_TOKENS
from gist_onnx.providers import CPU, OPENVINO, OPENVINO_RUNTIME, providers_for
from gist_onnx.session import choose_precision, graph_of

pytestmark = pytest.mark.core
AMX = frozenset({"avx512f", "avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16"})
EPYC = frozenset({"avx2", "fma"})
# A Xeon whose AMX the hypervisor hides, or an AMD EPYC Zen 4: bf16 is native on both; under
# OpenVINO it is slower than f32 on the Xeon and faster on the EPYC.
AVX512_BF16 = frozenset({"avx512f", "avx512_vnni", "avx512_bf16"})
INTEL, AMD = "GenuineIntel", "AuthenticAMD"


def _device(ep_name: str, ov_device: str) -> SimpleNamespace:
    return SimpleNamespace(ep_name=ep_name, ep_metadata={"ov_device": ov_device})


def test_the_openvino_cpu_device_is_picked_from_the_ep_devices() -> None:
    cpu = _device(OPENVINO, "CPU")
    devices = [_device("CPUExecutionProvider", ""), _device(OPENVINO, "GPU"), cpu]
    assert ov.cpu_device(devices, OPENVINO) is cpu
    with pytest.raises(ProviderError, match=r"offers no CPU device here \(its devices: GPU;"):
        ov.cpu_device(devices[:2], OPENVINO)
    with pytest.raises(ProviderError, match=r"devices: none; it offers none on AMD CPUs"):
        ov.cpu_device([], OPENVINO)


def test_bf16_only_where_the_cpu_computes_it_natively() -> None:
    assert ov.native_bf16(AMX) and ov.native_bf16(AVX512_BF16) and not ov.native_bf16(EPYC)
    assert ov.fast_bf16(AMX, INTEL) and ov.fast_bf16(AVX512_BF16, AMD)
    assert not ov.fast_bf16(AVX512_BF16, INTEL) and not ov.fast_bf16(EPYC, AMD)
    hint = json.loads(ov.load_config("bf16", AMX)["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"]
    assert hint == "bf16"
    exact = json.loads(ov.load_config("fp32", EPYC)["load_config"])["CPU"]["INFERENCE_PRECISION_HINT"]
    assert exact == "f32"  # fp32 under OpenVINO is exact, not its bf16 default
    with pytest.raises(ProviderError, match="needs a CPU with native bf16"):
        ov.load_config("bf16", EPYC)
    # int8's float parts run in bf16 where bf16 is fast (and its quality was measured), else f32.
    cases = (
        (AMX, INTEL, "bf16"),
        (AVX512_BF16, AMD, "bf16"),
        (AVX512_BF16, INTEL, "f32"),
        (EPYC, AMD, "f32"),
    )
    for flags, vendor, hint in cases:
        config = json.loads(ov.load_config("int8", flags, vendor)["load_config"])
        assert config["CPU"]["INFERENCE_PRECISION_HINT"] == hint, (flags, vendor)


def test_the_graph_each_precision_runs_on_each_device() -> None:
    assert graph_of("bf16", "openvino") == "fp32"
    assert graph_of("int8", "openvino") == "int8-openvino"
    assert [graph_of("int8", device) for device in ("cpu", "cuda")] == ["int8", "int8"]
    assert graph_of("fp32", "openvino") == "fp32"


def test_what_each_device_runs(core_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = read_manifest(core_model)
    assert choose_precision("bf16", manifest, "openvino", core_model) == "bf16"
    with pytest.raises(ProviderError, match="bf16 runs under OpenVINO"):
        choose_precision("bf16", manifest, "cpu", core_model)
    # OpenVINO's int8 is a graph of its own: a folder without it says which export flag adds it.
    with pytest.raises(ModelFolderError, match=r"has no int8 graph for OpenVINO.*--openvino-int8"):
        choose_precision("int8", manifest, "openvino", core_model)
    with pytest.raises(ProviderError, match="does not run on openvino"):
        choose_precision("fp16", manifest, "openvino", core_model)
    # auto: bf16 where it beats f32 under OpenVINO (measured), else exact f32.
    for flags, vendor, auto in (
        (AMX, INTEL, "bf16"), (AVX512_BF16, AMD, "bf16"), (AVX512_BF16, INTEL, "fp32"), (EPYC, AMD, "fp32")
    ):  # fmt: skip
        monkeypatch.setattr(ov, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(ov, "cpu_vendor", lambda vendor=vendor: vendor)
        assert choose_precision("auto", manifest, "openvino", core_model) == auto, (flags, vendor)


def test_auto_never_picks_openvino() -> None:
    assert providers_for("openvino", [CPU]) == [OPENVINO, CPU]
    assert providers_for("auto", [OPENVINO, CPU]) == [CPU]


def test_the_plugin_library_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(ov, "_plugin", lambda: ("/opt/libopenvino_ep.so", OPENVINO))
    monkeypatch.setattr(ov, "_registered", {})
    monkeypatch.setattr(
        ort, "register_execution_provider_library", lambda *args: calls.append(args), raising=False
    )
    assert ov.register() == ov.register() == OPENVINO
    assert calls == [(ov.REGISTRATION_NAME, "/opt/libopenvino_ep.so")]


def test_the_plugin_runs_where_it_offers_a_device_and_openvinos_runtime_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_device() -> None:
        ov.cpu_device([], OPENVINO)

    monkeypatch.setattr(ov, "device", lambda: _device(OPENVINO, "CPU"))
    assert ov.engine() == OPENVINO  # an Intel CPU with the plugin: the measured path
    monkeypatch.setattr(ov, "device", no_device)
    monkeypatch.setitem(sys.modules, "openvino", SimpleNamespace())
    assert ov.engine() == OPENVINO_RUNTIME  # an AMD CPU, where the plugin offers none
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino fails
    with pytest.raises(ProviderError, match=r"offers none on AMD CPUs\), and OpenVINO's own runtime is not"):
        ov.engine()
    monkeypatch.setattr(ov, "_plugin", lambda: (_ for _ in ()).throw(ProviderError("plugin missing")))
    monkeypatch.setattr(ov, "device", ov.register)
    with pytest.raises(ProviderError, match=r"plugin missing, .*gist-onnx\[openvino\]"):
        ov.engine()


def _usable_here() -> bool:
    try:
        ov.engine()
    except ProviderError:
        return False
    return True


def test_asking_for_openvino_where_it_cannot_run_is_one_clear_error(
    core_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if _usable_here():
        pytest.skip("OpenVINO runs here (its plugin or its own runtime)")
    with pytest.raises(ProviderError, match=r"gist-onnx\[openvino\]|offers no CPU device"):
        Embedder(core_model, provider="openvino")
    assert cli(["info", "-m", str(core_model), "--provider", "openvino"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "openvino" in err[0]


def test_openvino_for_real_where_it_runs(core_model: Path) -> None:
    if not _usable_here():
        pytest.skip("neither the OpenVINO plugin (with a CPU device) nor OpenVINO's runtime is here")
    exact = Embedder(core_model, provider="openvino", precision="fp32", threads=1)
    assert exact.info.device == "openvino" and exact.info.providers[0] == ov.engine()
    assert exact.info.max_batch_tokens == MAX_BATCH_TOKENS["openvino"]  # its own cap, not the CPU's
    assert not exact.info.batch_invariant  # its kernels follow the run's shape: bits not promised
    texts = ["How to bake a cake?", "the stock market fell sharply today " * 5]
    reference = Embedder(core_model, provider="cpu").encode(texts)
    assert np.min((exact.encode(texts) * reference).sum(axis=1)) >= 0.99999
    together = exact.encode(texts, batch_size=2)  # threads share one Embedder: a request per thread
    assert np.array_equal(exact.encode(texts[:1]), together[:1])
    if ov.native_bf16():
        fast = Embedder(core_model, provider="openvino", precision="bf16")
        assert np.min((fast.encode(texts) * reference).sum(axis=1)) >= 0.9999


def test_openvinos_runtime_compiles_with_the_precision_and_threads_asked(core_model: Path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO's runtime is not installed")
    graph = core_model / read_manifest(core_model).graphs["fp32"].file
    session = ov.RuntimeSession(graph, {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
    assert session.get_providers() == [OPENVINO_RUNTIME]
    assert {i.name for i in session.get_inputs()} <= {"input_ids", "attention_mask", "token_type_ids"}
    assert str(session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    assert session._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    with pytest.raises(ModelFolderError, match="is not a graph OpenVINO can compile"):
        ov.RuntimeSession(core_model / "tokenizer.json", {})

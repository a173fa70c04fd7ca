"""int8 graphs and the CPU's instruction set: both kinds of x86 checked, whatever this machine is.

The CPU's flags are read from /proc/cpuinfo through ``gist_onnx.cpu.cpu_flags``; these tests put
other CPUs' flags there to exercise the paths this machine would not take.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
from gist_onnx import Embedder  # noqa: E402
from gist_onnx import cpu as cpu_module  # noqa: E402
from gist_onnx.cli import main as cli  # noqa: E402
from gist_onnx.cpu import exact_weight_bits, int8_mismatch  # noqa: E402
from gist_onnx.export.convert import detect_preset, quantize_settings  # noqa: E402
from gist_onnx.manifest import read_manifest  # noqa: E402

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})  # an AMD EPYC of this project's machines
AVX512 = AVX2 | {"avx512f", "avx512bw"}  # Skylake: AVX-512, no VNNI
AVX512_VNNI = AVX512 | {"avx512_vnni", "amx_int8"}  # Sapphire Rapids
AVX_VNNI = AVX2 | {"avx_vnni"}  # Alder Lake: VNNI without AVX-512


@pytest.mark.parametrize(
    ("flags", "machine", "preset", "bits"),
    [
        (AVX2, "x86_64", "avx2", 7),
        (AVX512, "x86_64", "avx512", 7),
        (AVX512_VNNI, "x86_64", "avx512_vnni", 8),
        (AVX_VNNI, "x86_64", "avx512_vnni", 8),
        (frozenset(), "aarch64", "arm64", 8),
    ],
)
def test_presets_and_exact_bits_per_cpu(flags: frozenset[str], machine: str, preset: str, bits: int) -> None:
    assert detect_preset(flags, machine) == preset
    assert exact_weight_bits(flags, machine) == bits
    assert quantize_settings(preset).weight_bits == bits


def test_portable_is_the_default_and_seven_bits() -> None:
    settings = quantize_settings("portable")
    assert (settings.weight_bits, settings.reduce_range, settings.preset) == (7, True, "portable")
    for flags in (AVX2, AVX512, AVX512_VNNI, AVX_VNNI):
        assert int8_mismatch(7, flags, "x86_64") is None


def test_eight_bit_weights_are_flagged_only_without_vnni() -> None:
    message = int8_mismatch(8, AVX2, "x86_64")
    assert message and "VNNI" in message and "--quantize-preset portable" in message
    assert int8_mismatch(8, AVX512, "x86_64")
    assert int8_mismatch(8, AVX512_VNNI, "x86_64") is None
    assert int8_mismatch(8, AVX_VNNI, "x86_64") is None
    assert int8_mismatch(8, frozenset(), "aarch64") is None


@pytest.fixture(scope="module")
def eight_bit_export(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    out = tmp_path_factory.mktemp("int8-vnni") / "onnx"
    assert (
        cli(
            [
                "export",
                str(tiny_model),
                "-o",
                str(out),
                "--quantize",
                "int8",
                "--quantize-preset",
                "avx512_vnni",
            ]
        )
        == 0
    )
    return out


def test_manifest_records_the_weight_bits(eight_bit_export: Path, tiny_export: Path) -> None:
    vnni = read_manifest(eight_bit_export).graphs["int8"]
    portable = read_manifest(tiny_export).graphs["int8"]
    assert (vnni.weight_bits, vnni.quantization["preset"]) == (8, "avx512_vnni")
    assert (portable.weight_bits, portable.quantization["preset"]) == (7, "portable")


@pytest.mark.parametrize(
    ("flags", "warns"), [(AVX2, True), (AVX512, True), (AVX512_VNNI, False), (AVX_VNNI, False)]
)
def test_loading_eight_bit_weights_warns_on_a_cpu_without_vnni(
    eight_bit_export: Path,
    tiny_export: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: frozenset[str],
    warns: bool,
) -> None:
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: flags)
    monkeypatch.setattr(cpu_module.platform, "machine", lambda: "x86_64")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedder = Embedder(eight_bit_export, provider="cpu", precision="int8")
        Embedder(tiny_export, provider="cpu", precision="int8")  # portable: never a word
        Embedder(eight_bit_export, provider="cpu", precision="fp32")  # float graphs: never a word
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == int(warns)
    assert (embedder.info.int8_mismatch is not None) == warns
    if warns:
        assert "model_int8.onnx" in messages[0] and "--quantize-preset portable" in messages[0]


def test_info_says_whether_int8_is_exact_here(
    eight_bit_export: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cpu_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: AVX2)
    assert cli(["info", "-m", str(eight_bit_export), "--provider", "cpu"]) == 0
    assert "8-bit weights (NOT exact on this CPU" in capsys.readouterr().out
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: AVX512_VNNI)
    assert cli(["info", "-m", str(eight_bit_export), "--provider", "cpu"]) == 0
    assert "8-bit weights (exact on this CPU)" in capsys.readouterr().out

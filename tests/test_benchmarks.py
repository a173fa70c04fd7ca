"""`python -m benchmarks --quick` runs end to end and writes a complete, well-formed report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the export extra is not installed")
from benchmarks.variants import BASELINE, SPECS  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], check=True, timeout=900
    )
    return json.loads((out / "report.json").read_text()), out


def test_report_names_the_machine_and_versions(report: tuple[dict, Path]) -> None:
    data, _ = report
    assert data["machine"]["cpu"] and data["machine"]["logical_cores"] >= 1
    assert {"onnxruntime", "torch", "sentence-transformers", "gist-onnx"} <= set(data["versions"])
    assert data["gemm_peak"]["peak_gflops"] > 0
    runtime, torch_stack = data["footprint"].values()
    assert "onnxruntime" in runtime["packages"] and "torch" not in runtime["packages"]
    assert "torch" in torch_stack["packages"] and torch_stack["mib"] > runtime["mib"]


def test_every_variant_has_every_figure(report: tuple[dict, Path]) -> None:
    data, _ = report
    assert set(data["models"]) == {"gist-random", "minilm"}
    precisions = {spec.name: spec.precision for spec in SPECS}
    for model in data["models"].values():
        # Every variant ran or says why not; the bench extra installs every peer's package.
        ran, skipped = set(model["variants"]), model["skipped"]
        assert ran | set(skipped) == {spec.name for spec in SPECS} and not ran & set(skipped)
        assert all(reason.strip() for reason in skipped.values())
        assert {"fastembed-fp32", "openvino", "openvino-int8", "gist-onnx-int8"} <= ran
        for name, variant in model["variants"].items():
            workloads = {row["workload"] for row in variant["throughput"]}
            assert workloads == {"short", "medium", "long"}, name
            # The peak is fp32's: bf16 and int8 run on other units (AMX: several times faster).
            most = 2 if precisions[name] == "fp32" else 32
            for row in variant["throughput"]:
                assert row["texts_per_s"] > 0 and row["tokens_per_s"] > row["texts_per_s"]
                assert 0 < row["fraction_of_gemm_peak"] < most and row["vs_pytorch"] > 0, name
            latency = variant["latency_ms"]
            assert latency["calls"] >= 200 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
            assert variant["cold_start_s"] > 0 and variant["peak_rss_mib"] > 0
            quality = variant["quality"]
            assert -100 <= quality["stsb_spearman_x100"] <= 100
            assert 0 < quality["min_cosine_to_pytorch"] <= quality["mean_cosine_to_pytorch"] <= 1.0001
            drift = variant["batch_drift"]
            assert drift["texts"] > 0 and 0 < drift["min_cosine"] <= drift["mean_cosine"] <= 1.0001
        floor = model["single_text_floor"]
        assert floor["tokens"] > 0 and 0 < floor["int8_ms"] and 0 < floor["fp32_ms"]
        # The fp32 peers compute the same vectors, long texts included (fastembed truncates at
        # tokenizer_config's 128 unless told the model's length); OpenVINO's default is bf16 with
        # AMX or AVX512_BF16.
        for name, least in (("fastembed-fp32", 0.9999), ("openvino", 0.999)):
            quality = model["variants"][name]["quality"]
            assert min(quality["min_cosine_to_pytorch"], quality["long_min_cosine_to_pytorch"]) >= least, name
        # gist-onnx's int8 with per-token scales: batch mates change nothing.
        assert model["variants"]["gist-onnx-int8"]["batch_drift"]["min_cosine"] >= 0.99999
        baseline = model["variants"][BASELINE]
        assert all(row["vs_pytorch"] == pytest.approx(1.0) for row in baseline["throughput"])


def test_markdown_and_charts_are_written(report: tuple[dict, Path]) -> None:
    data, out = report
    markdown = (out / "report.md").read_text()
    for name in data["models"]:
        assert f"## {name}" in markdown and "Single-text floor:" in markdown
        for spec in SPECS:
            assert f"| {spec.name} |" in markdown or f"- skipped **{spec.name}**" in markdown
        assert "| near-lossless | short texts/s | gist-onnx-" in markdown
        assert "| quantized | single-text p50 ms | gist-onnx-" in markdown
        for chart in (f"throughput-{name}.png", f"latency-{name}.png"):
            assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_benchmark_quick_writes_every_figure(tmp_path: Path) -> None:
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "benchmarks.serve",
        "--quick",
        "--work",
        str(tmp_path),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, timeout=600)
    report = json.loads((out / "serve.json").read_text())
    fp32 = report["precisions"]["fp32"]
    in_process = fp32["in_process"]
    assert in_process["ceiling_texts_per_s"] > in_process["floor_texts_per_s"] > 0
    beside = fp32["server"]["closed_64"]  # two blocks, each after an in-process floor and ceiling
    assert len(beside["ceilings"]) == len(beside["floors"]) == len(beside["block_texts_per_s"]) == 2
    assert beside["vs_ceiling"] > 0 and beside["vs_floor"] > beside["vs_ceiling"]
    queue = in_process["open_50%"]  # the same arrivals to the batcher without HTTP
    assert set(queue["statuses"]) == {"200"} and queue["errors"] == 0
    assert queue["rate_per_s"] == fp32["server"]["open_50%"]["rate_per_s"] and queue["p99_ms"] > 0
    # In alternating blocks on the same seeds: the server got exactly the same arrivals.
    assert sum(queue["statuses"].values()) == sum(fp32["server"]["open_50%"]["statuses"].values())
    paired = queue["paired"]  # the server's p99 over the in-process one, with bootstrap intervals
    assert paired["blocks"] >= 1
    low, high = paired["p99_ratio_interval"]
    assert 0 < low <= paired["p99_ratio"] <= high
    low, high = paired["server_p99_interval_ms"]
    assert 0 < low <= fp32["server"]["open_50%"]["p99_ms"] <= high
    mixed = fp32["traffic"]["mixed"]
    assert mixed["big_statuses"] == [200] * (1 + report["plan"]["traffic"]["big_requests"])
    low, high = mixed["small_p99_vs_idle_interval"]
    assert 0 < low <= mixed["small_p99_vs_idle"] <= high
    for name in ("closed_1", "closed_16", "closed_64", "open_50%", "open_200%", "right_after_overload"):
        figures = fp32["server"][name]
        assert figures["texts_per_s"] > 0 and figures["errors"] == 0, name
        assert set(figures["statuses"]) <= {"200", "429"}, name
    assert fp32["server_no_batching"]["closed_64"]["texts_per_s"] > 0
    assert fp32["exit_codes"] == {"server_no_batching": 0, "server": 0}
    assert "| fp32 |" in (out / "serve.md").read_text()
    from benchmarks.serve import readme_table

    ratios = [rate / ceiling for rate, ceiling in zip(beside["block_texts_per_s"], beside["ceilings"])]
    spread = f"{min(ratios):.2f}–{max(ratios):.2f}x"
    row = f"| fp32 | {beside['texts_per_s']:.1f} ({beside['vs_ceiling']:.2f}x; {spread})"
    assert row in readme_table(report)  # the median, and the spread of the blocks it comes from
    assert "| openvino fp32 |" in readme_table({**report, "provider": "openvino"})  # rows name it


def test_bulk_benchmark_tiny_checks_its_vectors(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="the bulk extra is not installed")
    out = tmp_path / "out"
    pytest.importorskip("moto", reason="the test extra is not installed")
    command = [
        sys.executable,
        "-m",
        "benchmarks.bulk",
        "--tiny",
        "--rows",
        "64",
        "--engines",
        "local",
        "--s3",
    ]
    command += ["--rounds", "1", "--read-rows", "200000"]
    subprocess.run([*command, "--work", str(tmp_path), "--out", str(out)], check=True, timeout=600)
    report = json.loads((out / "bulk.json").read_text())
    local = report["results"]["local"]
    assert local["startup_s"] > 0 and local["s3_vs_local"] > 0
    for place in ("local", "s3"):
        assert local[place]["min_cosine_to_encode"] >= 0.99999 and local[place]["rows_per_s"] > 0
    reads = report["reads"]
    for key in ("local_parquet", "local_jsonl", "s3_parquet", "s3_jsonl"):
        assert reads[key]["first"] > 0 and reads[key]["last"] > 0, key
    markdown = (out / "bulk.md").read_text()
    assert "| local | s3 |" in markdown and "| s3 parquet |" in markdown

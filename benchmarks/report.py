"""The report: a markdown table and PNG charts from the JSON figures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.variants import BASELINE

HEADLINE_BATCH = 32


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _find(rows: list[dict[str, Any]], workload: str, batch_size: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["workload"] == workload and r["batch_size"] == batch_size), None)


def headline(model: dict[str, Any]) -> list[str]:
    """One row per variant: batch-32 throughput per workload, latency, start, memory, quality."""
    workloads = list(
        dict.fromkeys(r["workload"] for r in next(iter(model["variants"].values()))["throughput"])
    )
    head = (
        ["variant"]
        + [f"{w} b{HEADLINE_BATCH} texts/s" for w in workloads]
        + [
            "latency p50 / p95 / p99 ms",
            "cold start s",
            "peak RSS MiB",
            "STS-B x100",
            "min / mean cos to PyTorch",
            "alone vs batch min cos",
        ]
    )
    lines = [_row(head), _row(["---"] * len(head))]
    for name, v in model["variants"].items():
        cells = [name]
        for w in workloads:
            r = _find(v["throughput"], w, HEADLINE_BATCH) or max(
                (r for r in v["throughput"] if r["workload"] == w), key=lambda r: r["batch_size"]
            )
            mark = "" if r["batch_size"] == HEADLINE_BATCH else f" (b{r['batch_size']})"
            cells.append(f"{r['texts_per_s']:.1f} ({r['vs_pytorch']:.2f}x){mark}")
        lat = v["latency_ms"]
        q = v["quality"]
        cells += [
            f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ({lat['p50_vs_pytorch']:.2f}x)",
            f"{v['cold_start_s']:.2f}",
            f"{v['peak_rss_mib']:.0f}",
            f"{q['stsb_spearman_x100']:.2f}",
            f"{q['min_cosine_to_pytorch']:.5f} / {q['mean_cosine_to_pytorch']:.5f}",
            f"{v['batch_drift']['min_cosine']:.5f}",
        ]
        lines.append(_row(cells))
    return lines


def floor_note(model: dict[str, Any]) -> list[str]:
    """Single-text latency against its floor: one pass over the weights must come from memory."""
    floor, variants = model["single_text_floor"], model["variants"]
    pytorch = variants[BASELINE]["latency_ms"]["p50"]
    return [
        f"Single-text floor: one GEMM pass over the encoder's {floor['weights'] / 1e6:.1f}M weight-GEMM "
        f"parameters at {floor['tokens']} tokens (the short texts' median) takes {floor['fp32_ms']:.2f} ms "
        "in fp32 "
        f"and {floor['int8_ms']:.2f} ms in int8 here ({floor['fp32_ms'] / pytorch:.2f}x and "
        f"{floor['int8_ms'] / pytorch:.2f}x PyTorch's p50 of {pytorch:.1f} ms), before attention, LayerNorm "
        "and per-op overheads. Alone vs batch: each of the first "
        f"{next(iter(variants.values()))['batch_drift']['texts']} short texts embedded alone and in batches "
        "of 32.",
    ]


def detail(model: dict[str, Any]) -> list[str]:
    head = ["variant", "workload", "batch", "texts/s", "tokens/s", "x PyTorch", "GFLOP/s", "of GEMM peak"]
    lines = [_row(head), _row(["---"] * len(head))]
    for name, v in model["variants"].items():
        for r in v["throughput"]:
            lines.append(
                _row(
                    [
                        name,
                        r["workload"],
                        str(r["batch_size"]),
                        f"{r['texts_per_s']:.1f}",
                        f"{r['tokens_per_s']:.0f}",
                        f"{r['vs_pytorch']:.2f}",
                        f"{r['gflops']:.1f}",
                        f"{100 * r['fraction_of_gemm_peak']:.0f}%",
                    ]
                )
            )
    return lines


def markdown(report: dict[str, Any]) -> str:
    m, peak = report["machine"], report["gemm_peak"]
    lines = [
        "# gist-onnx benchmark",
        "",
        f"`{report['command']}` on {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}), "
        f"{m['memory_gib']} GiB; {report['created']}; {report['wall_s'] / 60:.1f} min.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        "",
        f"GEMM peak: {peak['peak_gflops']:.0f} GFLOP/s fp32 (best of numpy {peak['numpy_gflops']:.0f} and "
        f"ONNX Runtime {peak['onnxruntime_gflops']:.0f}, {peak['shape']}, all cores; the better of a "
        "measurement before and one after the workloads). GFLOP/s below count the "
        "useful FLOPs of the real (unpadded) tokens.",
        "",
        "Install footprint: "
        + "; ".join(
            f"{k} {v['mib']:.0f} MiB ({len(v['packages'])} packages)" for k, v in report["footprint"].items()
        )
        + ".",
        "",
        f"Throughput is the median of {report['plan']['passes']} timed passes after a warm-up, passes "
        "interleaved across variants; ratios are to pytorch-fp32 in this same run. Latency is one text "
        f"per call, {report['plan']['latency_calls']} calls. Cold start is a new process until its first "
        "embedding; peak RSS is that process's after embedding the medium texts at batch 32.",
    ]
    for name, model in report["models"].items():
        c = model["config"]
        lines += [
            "",
            f"## {name}: {model['about']}",
            "",
            f"{c['num_hidden_layers']} layers, hidden {c['hidden_size']}, {model['pooling']} pooling, "
            f"max {model['max_seq_length']} tokens; quality on {model['quality_pairs']} STS-B pairs.",
            "",
            *floor_note(model),
            "",
            *headline(model),
            "",
            "<details><summary>every workload and batch size</summary>",
            "",
            *detail(model),
            "",
            "</details>",
        ]
    return "\n".join(lines) + "\n"


def charts(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, model in report["models"].items():
        variants = model["variants"]
        workloads = list(dict.fromkeys(r["workload"] for r in next(iter(variants.values()))["throughput"]))
        fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
        for ax, workload in zip(axes[0], workloads):
            for variant, v in variants.items():
                rows = [r for r in v["throughput"] if r["workload"] == workload]
                ax.plot(
                    [r["batch_size"] for r in rows],
                    [r["texts_per_s"] for r in rows],
                    marker="o",
                    label=variant,
                )
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel("texts/s")
            ax.set_title(f"{name}: {workload} texts")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = out / f"throughput-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(9, 4))
        ax.boxplot([v["latency_ms"]["samples"] for v in variants.values()], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(variants) + 1), list(variants), rotation=20, fontsize=8)
        ax.set_ylabel("ms per text (box: quartiles, whiskers: p1-p99)")
        ax.set_title(f"{name}: single-text latency")
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        path = out / f"latency-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def write_report(report: dict[str, Any], out: Path) -> None:
    (out / "report.md").write_text(markdown(report))
    charts(report, out)


# The README's tables are generated from committed reports, between markers that name the table
# and its report, so the test can regenerate them and compare.
GENERATED = re.compile(r"(<!-- generated: (\w+) from (\S+) -->\n)(.*?)(<!-- end generated -->)", re.S)
README_VARIANTS = ("pytorch-fp32", "st-onnx-int8", "gist-onnx-fp32", "gist-onnx-int8")


def readme_table(report: dict[str, Any]) -> str:
    """The README's headline: speed on GIST's architecture, quality on MiniLM, from one report."""
    speed, quality = report["models"]["gist-random"]["variants"], report["models"]["minilm"]["variants"]
    lines = [
        f"{machine_line(report)} Speed: GIST's architecture with random weights; quality: the real "
        "all-MiniLM-L6-v2 on STS-B. Ratios are to PyTorch in the same run.",
        "",
        _row(["variant", "short texts/s, batch 32", "512-token texts/s", "latency p50 ms", "peak RSS MiB",
              "STS-B x100 (MiniLM)", "min cosine to PyTorch (MiniLM)"]),
        _row(["---"] * 7),
    ]  # fmt: skip
    for name in README_VARIANTS:
        v, q = speed[name], quality[name]["quality"]
        short = _find(v["throughput"], "short", HEADLINE_BATCH)
        long = max((r for r in v["throughput"] if r["workload"] == "long"), key=lambda r: r["batch_size"])
        lines.append(_row([
            name, f"{short['texts_per_s']:.1f} ({short['vs_pytorch']:.2f}x)",
            f"{long['texts_per_s']:.1f} ({long['vs_pytorch']:.2f}x)", f"{v['latency_ms']['p50']:.1f}",
            f"{v['peak_rss_mib']:.0f}", f"{q['stsb_spearman_x100']:.2f}", f"{q['min_cosine_to_pytorch']:.4f}",
        ]))  # fmt: skip
    return "\n".join(lines) + "\n"


def machine_line(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = f", {report['gpu']} (CUDA)" if report.get("gpu") else ""
    return f"{m['cpu']}, {m['logical_cores']} cores ({', '.join(m['simd'])}){gpu}, {report['created'][:10]}."


def generated_tables() -> dict[str, Any]:
    """Table name → the function that makes it from its report's JSON."""
    from benchmarks import bulk, serve

    return {"headline": readme_table, "serve": serve.readme_table, "bulk": bulk.readme_table}


def regenerate(text: str, root: Path) -> str:
    """``text`` with every generated table made again from the report its marker names."""
    import json

    tables = generated_tables()

    def table(match: re.Match) -> str:
        start, name, source, _, end = match.groups()
        report = json.loads((root / source).read_text())
        link = f"From [{source}]({source.removesuffix('.json')}.md): "
        return f"{start}{link}{tables[name](report)}{end}"

    return GENERATED.sub(table, text)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description="Regenerate README tables."
    )
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="the markdown file to update")
    args = parser.parse_args()
    args.readme.write_text(
        regenerate(args.readme.read_text(encoding="utf-8"), args.readme.parent), encoding="utf-8"
    )

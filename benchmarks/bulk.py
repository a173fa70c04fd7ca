"""`python -m benchmarks.bulk`: rows/s of single-process encode, the local engine and Ray Data.

One corpus (STS-B sentences joined into passages of ~128 tokens, written as Parquet), GIST's
architecture with random weights. Each engine first embeds a one-row dataset (its start-up:
worker processes or the Ray cluster and actors, each loading the model) and then the corpus into
a fresh folder; its rate once started is rows / (corpus time - one-row time), and start-up is
reported apart. The vectors are checked against ``Embedder.encode``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log, machine, random_gist, versions
from benchmarks.corpus import Workload, load_stsb, workload_texts

# Small shards, so that every worker has several: the corpus is small next to a real one.
ROWS_PER_SHARD = 25


def _corpus(folder: Path, rows: int, tokenizer: Path) -> tuple[Path, list[str]]:
    """STS-B sentences joined into passages of up to 126 tokens, as Parquet (and a one-row file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    workload = {"passages": Workload(rows, 126, (32,))}
    texts = workload_texts(workload, load_stsb().sentences(), tokenizer)["passages"]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), folder / "corpus.parquet")
    pq.write_table(pa.table({"text": texts[:1]}), folder / "one-row.parquet")
    return folder / "corpus.parquet", texts


def _check(out: Path, expected: np.ndarray) -> float:
    """Min cosine between the written vectors and ``Embedder.encode``'s, by row id."""
    import pyarrow.parquet as pq

    found = {}
    for path in out.glob("*.parquet"):
        table = pq.read_table(path)
        for row_id, vector in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
            found[int(row_id.rsplit(":", 1)[1])] = vector
    assert len(found) == len(expected), f"{len(found)} rows written, {len(expected)} expected"
    got = np.array([found[i] for i in range(len(expected))], dtype=np.float32)
    return float(((got * expected).sum(axis=1) / np.linalg.norm(got, axis=1)).min())


def measure_engine(
    engine: str, model: Path, corpus: Path, scratch: Path, precision: str, expected: np.ndarray
) -> dict[str, Any]:
    from gist_onnx.bulk import embed_dataset

    def run(source: Path, name: str) -> float:
        out = scratch / f"{engine}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        embed_dataset(
            model, str(source), out, engine=engine, precision=precision, rows_per_shard=ROWS_PER_SHARD,
            show_progress=False,
        )  # fmt: skip
        return time.perf_counter() - started

    log(f"{engine}: start-up (a one-row dataset)")
    startup = run(corpus.parent / "one-row.parquet", "startup")
    per_job = run(corpus.parent / "one-row.parquet", "per-job") if engine == "ray" else startup
    log(f"{engine}: the corpus")
    total = run(corpus, "corpus")
    rows = len(expected)
    return {
        "startup_s": startup,
        "per_job_overhead_s": per_job,
        "wall_s": total,
        "rows_per_s": rows / max(total - per_job, 1e-9),
        "rows_per_s_with_startup": rows / total,
        "min_cosine_to_encode": _check(scratch / f"{engine}-corpus", expected),
    }


def markdown(report: dict[str, Any]) -> str:
    m, r = report["machine"], report["results"]
    single = r["encode"]["rows_per_s"]
    lines = [
        "# Bulk embedding benchmark",
        "",
        f"`{report['command']}` on {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}); "
        f"{report['created']}. {report['rows']} passages of ~{report['mean_tokens']:.0f} tokens (STS-B "
        f"sentences joined), GIST's architecture with random weights, {report['precision']}.",
        "",
        "| engine | rows/s once started | vs single-process encode | start-up s | rows/s with start-up "
        "| min cosine to encode |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| single-process `encode` (batch 32) | {single:.2f} | 1.00x | - | - | 1 |",
    ]
    for engine in ("local", "ray"):
        if engine in r:
            e = r[engine]
            lines.append(
                f"| {engine} | {e['rows_per_s']:.2f} | {e['rows_per_s'] / single:.2f}x | "
                f"{e['startup_s']:.1f} | {e['rows_per_s_with_startup']:.2f} | "
                f"{e['min_cosine_to_encode']:.6f} |"
            )
    if "local" in r and "ray" in r:
        lines += [
            "",
            f"Ray once started: {r['ray']['rows_per_s'] / r['local']['rows_per_s']:.2f}x the local engine.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=600, help="passages in the corpus (default: 600)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--tiny", action="store_true", help="GIST's config scaled down (for the tests)")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help="where bulk.{json,md} go"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the model, export and outputs")
    args = parser.parse_args(argv)

    from gist_onnx import Embedder
    from gist_onnx.export import export_model

    model = random_gist(args.work, tiny=args.tiny)
    folder = model.parent / "onnx"
    if not (folder / "manifest.json").is_file():
        log("exporting fp32 + int8")
        export_model(str(model), folder, quantize="int8", force=True)
    corpus, texts = _corpus(args.work / "corpus", args.rows, folder / "tokenizer.json")
    embedder = Embedder(folder, provider="cpu", precision=args.precision)
    lengths = [len(e.ids) for e in embedder.tokenize(texts)]
    log("single-process encode")
    embedder.encode(texts[:32])
    started = time.perf_counter()
    expected = embedder.encode(texts, batch_size=32)
    encode_s = time.perf_counter() - started
    del embedder  # its threads would compete with the engines' workers
    results: dict[str, Any] = {"encode": {"wall_s": encode_s, "rows_per_s": len(texts) / encode_s}}
    scratch = args.work / "outputs"
    for engine in args.engines:
        results[engine] = measure_engine(engine, folder, corpus, scratch, args.precision, expected)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.bulk" + (" --tiny" if args.tiny else ""),
        "machine": machine(),
        "cores": len(os.sched_getaffinity(0)),
        "versions": versions(),
        "precision": args.precision,
        "rows": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bulk.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bulk.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def readme_table(report: dict[str, Any]) -> str:
    """The README's bulk table: rows/s per engine, start-up apart."""
    from benchmarks.report import machine_line

    body = markdown(report).split("\n\n", 2)[2]  # the table and the Ray ratio, without the title
    return (
        f"{machine_line(report)} {report['rows']} passages of ~{report['mean_tokens']:.0f} tokens, "
        f"GIST's architecture, {report['precision']}.\n\n{body}"
    )

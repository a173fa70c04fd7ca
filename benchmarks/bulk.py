"""`python -m benchmarks.bulk`: rows/s of single-process encode, the local engine and Ray Data,
from local files and from S3, and what reading one shard costs where it lies in its file.

One corpus (STS-B sentences joined into passages of ~128 tokens, written as Parquet), GIST's
architecture with random weights. Each engine first embeds a one-row dataset (its start-up:
worker processes or the Ray cluster and actors, each loading the model) and then the corpus into
a fresh folder; its rate once started is rows / (corpus time - one-row time), and start-up is
reported apart. With ``--s3`` the same corpus also goes from and to an S3-compatible server on
loopback (moto), in rounds alternating with the local files. The vectors are checked against
``Embedder.encode``. The read study times the first, middle and last shard of a 2,000,000-row
Parquet file (row groups of 50,000) and of the same rows as JSONL.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
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


def _check(out: str, expected: np.ndarray, options: tuple[tuple[str, str], ...] = ()) -> float:
    """Min cosine between the written vectors and ``Embedder.encode``'s, by row id."""
    import pyarrow.parquet as pq

    from gist_onnx.bulk.storage import listing, resolve

    found = {}
    filesystem, _ = resolve(out, options)
    for entry in listing(out, options):
        if not entry.name.endswith(".parquet"):
            continue
        table = pq.read_table(resolve(entry.uri, options)[1], filesystem=filesystem)
        for row_id, vector in zip(table.column("id").to_pylist(), table.column("embedding").to_pylist()):
            found[int(row_id.rsplit(":", 1)[1])] = vector
    assert len(found) == len(expected), f"{len(found)} rows written, {len(expected)} expected"
    got = np.array([found[i] for i in range(len(expected))], dtype=np.float32)
    return float(((got * expected).sum(axis=1) / np.linalg.norm(got, axis=1)).min())


@dataclass(frozen=True)
class Place:
    """Where a run reads its corpus and writes its shards: a local folder or an S3 prefix."""

    name: str
    corpus: str  # the folder holding corpus.parquet and one-row.parquet
    scratch: str  # where outputs go
    options: tuple[tuple[str, str], ...] = ()


def _run_job(engine: str, model: Path, place: Place, source: str, name: str, precision: str) -> float:
    from gist_onnx.bulk import embed_dataset

    out = f"{place.scratch}/{engine}-{name}"
    if not out.startswith("s3://"):
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    embed_dataset(
        model, f"{place.corpus}/{source}", out, engine=engine, precision=precision,
        rows_per_shard=ROWS_PER_SHARD, storage_options=place.options, show_progress=False,
    )  # fmt: skip
    return time.perf_counter() - started


def measure_engine(
    engine: str, model: Path, places: list[Place], precision: str, expected: np.ndarray, rounds: int
) -> dict[str, Any]:
    """Start-up once, then the corpus from each place in ``rounds`` alternating rounds (so that
    the machine's drift falls on every place alike); rates are medians of the rounds."""
    local = places[0]
    log(f"{engine}: start-up (a one-row dataset)")
    startup = _run_job(engine, model, local, "one-row.parquet", "startup", precision)
    per_job = (
        _run_job(engine, model, local, "one-row.parquet", "per-job", precision)
        if engine == "ray"
        else startup
    )
    walls: dict[str, list[float]] = {place.name: [] for place in places}
    for index in range(rounds):
        for place in places:
            log(f"{engine}: the corpus from {place.name}, round {index + 1}")
            walls[place.name].append(
                _run_job(engine, model, place, "corpus.parquet", f"corpus-{index}", precision)
            )
    rows = len(expected)
    figures: dict[str, Any] = {"startup_s": startup, "per_job_overhead_s": per_job}
    for place in places:
        rates = [rows / max(wall - per_job, 1e-9) for wall in walls[place.name]]
        figures[place.name] = {
            "wall_s": walls[place.name],
            "rows_per_s": float(np.median(rates)),
            "rows_per_s_with_startup": rows / float(np.median(walls[place.name])),
            "min_cosine_to_encode": _check(f"{place.scratch}/{engine}-corpus-0", expected, place.options),
        }
    if len(places) > 1:
        figures["s3_vs_local"] = float(np.median([a / b for a, b in zip(walls["local"], walls["s3"])]))
    return figures


READ_ROWS = 2_000_000
READ_ROW_GROUP = 50_000


def read_study(folder: Path, s3: tuple[tuple[str, str], ...] | None, rows: int = READ_ROWS) -> dict[str, Any]:
    """Seconds to read the first, middle and last 50,000-row shard of one big file (median of 3),
    as Parquet and as JSONL, from local disk (and S3)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from gist_onnx.bulk.shards import plan_shards
    from gist_onnx.bulk.storage import expand

    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"row {i} of a corpus of two million short texts" for i in range(rows)]
    pq.write_table(pa.table({"text": texts}), folder / "big.parquet", row_group_size=READ_ROW_GROUP)
    with (folder / "big.jsonl").open("w") as handle:
        handle.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    places = {"local": (str(folder), ())}
    if s3 is not None:
        from benchmarks.s3 import filesystem

        fs = filesystem(s3)
        fs.create_dir("reads")
        for name in ("big.parquet", "big.jsonl"):
            with fs.open_output_stream(f"reads/{name}") as out:
                out.write((folder / name).read_bytes())
        places["s3"] = ("s3://reads", s3)
    figures: dict[str, Any] = {"rows": rows, "rows_per_shard": READ_ROW_GROUP}
    for place, (base, options) in places.items():
        for suffix in ("parquet", "jsonl"):
            shards = plan_shards(expand([f"{base}/big.{suffix}"], options), READ_ROW_GROUP, "m", options)
            picked = {"first": shards[0], "middle": shards[len(shards) // 2], "last": shards[-1]}
            seconds = {where: _read_seconds(shard, options) for where, shard in picked.items()}
            figures[f"{place}_{suffix}"] = {**seconds, "last_vs_first": seconds["last"] / seconds["first"]}
    return figures


def _read_seconds(shard, options: tuple[tuple[str, str], ...], repeats: int = 3) -> float:
    from gist_onnx.bulk.shards import read_rows

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read_rows(shard, "text", None, options)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def markdown(report: dict[str, Any]) -> str:
    m, r = report["machine"], report["results"]
    single = r["encode"]["rows_per_s"]
    places = report.get("places", ["local"])
    if "places" not in report:  # a report from before S3: each engine's figures are the local ones
        r = {
            name: ({"local": e, "startup_s": e["startup_s"]} if name != "encode" else e)
            for name, e in r.items()
        }
    lines = [
        "# Bulk embedding benchmark",
        "",
        f"`{report['command']}` on {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m['simd'])}); "
        f"{report['created']}. {report['rows']} passages of ~{report['mean_tokens']:.0f} tokens (STS-B "
        f"sentences joined), GIST's architecture with random weights, {report['precision']}."
        + (" S3: moto's server on loopback, corpus and shards both there; rounds alternate with local files."
           if "s3" in places else ""),
        "",
        "| engine | corpus and shards on | rows/s once started | vs single-process encode | start-up s "
        "| rows/s with start-up | min cosine to encode |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| single-process `encode` (batch 32) | local | {single:.2f} | 1.00x | - | - | 1 |",
    ]  # fmt: skip
    for engine in ("local", "ray"):
        if engine not in r:
            continue
        e = r[engine]
        for place in places:
            p = e[place]
            lines.append(
                f"| {engine} | {place} | {p['rows_per_s']:.2f} | {p['rows_per_s'] / single:.2f}x | "
                f"{e['startup_s']:.1f} | {p['rows_per_s_with_startup']:.2f} | "
                f"{p['min_cosine_to_encode']:.6f} |"
            )
    lines.append("")
    if "local" in r and "ray" in r:
        ray_vs_local = r["ray"]["local"]["rows_per_s"] / r["local"]["local"]["rows_per_s"]
        lines.append(f"Ray once started: {ray_vs_local:.2f}x the local engine.")
    for engine in ("local", "ray"):
        if engine in r and "s3_vs_local" in r[engine]:
            ratio = r[engine]["s3_vs_local"]
            lines.append(f"{engine}: S3 {ratio:.2f}x the rows/s of local files (median of paired rounds).")
    reads = report.get("reads")
    if reads:
        lines += [
            "",
            f"Reading one {reads['rows_per_shard']:,}-row shard of a {reads['rows']:,}-row file (Parquet row "
            "groups of 50,000; median of 3 reads):",
            "",
            "| file | first s | middle s | last s | last / first |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, figures in reads.items():
            if isinstance(figures, dict):
                cells = " | ".join(f"{figures[k]:.3f}" for k in ("first", "middle", "last"))
                lines.append(f"| {key.replace('_', ' ')} | {cells} | {figures['last_vs_first']:.2f}x |")
    return "\n".join(lines) + "\n"


def readme_table(report: dict[str, Any]) -> str:
    """The README's bulk table: rows/s per engine and place, start-up apart, and the reads."""
    from benchmarks.report import machine_line

    body = markdown(report).split("\n\n", 2)[2]  # the tables and ratios, without the title
    return (
        f"{machine_line(report)} {report['rows']} passages of ~{report['mean_tokens']:.0f} tokens, "
        f"GIST's architecture, {report['precision']}.\n\n{body}"
    )


def _places(args: argparse.Namespace, corpus: Path, s3: tuple[tuple[str, str], ...] | None) -> list[Place]:
    places = [Place("local", str(corpus.parent), str(args.work / "outputs"))]
    if s3 is not None:
        from benchmarks.s3 import filesystem

        fs = filesystem(s3)
        fs.create_dir("bulk")
        for name in ("corpus.parquet", "one-row.parquet"):
            with fs.open_output_stream(f"bulk/corpus/{name}") as out:
                out.write((corpus.parent / name).read_bytes())
        places.append(Place("s3", "s3://bulk/corpus", "s3://bulk/outputs", s3))
    return places


def _encode(folder: Path, texts: list[str], precision: str) -> tuple[np.ndarray, dict[str, float], list[int]]:
    from gist_onnx import Embedder

    embedder = Embedder(folder, provider="cpu", precision=precision)
    lengths = [len(e.ids) for e in embedder.tokenize(texts)]
    log("single-process encode")
    embedder.encode(texts[:32])
    started = time.perf_counter()
    expected = embedder.encode(texts, batch_size=32)
    seconds = time.perf_counter() - started
    return expected, {"wall_s": seconds, "rows_per_s": len(texts) / seconds}, lengths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=600, help="passages in the corpus (default: 600)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--tiny", action="store_true", help="GIST's config scaled down (for the tests)")
    parser.add_argument("--s3", action="store_true", help="also from and to S3 (moto's server on loopback)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per place (default: 2)")
    parser.add_argument("--read-rows", type=int, default=READ_ROWS, help="rows of the read study's file")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/latest"), help="where bulk.{json,md} go"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the model, export and outputs")
    args = parser.parse_args(argv)

    from gist_onnx.export import export_model

    model = random_gist(args.work, tiny=args.tiny)
    folder = model.parent / "onnx"
    if not (folder / "manifest.json").is_file():
        log("exporting fp32 + int8")
        export_model(str(model), folder, quantize="int8", force=True)
    corpus, texts = _corpus(args.work / "corpus", args.rows, folder / "tokenizer.json")
    expected, encode, lengths = _encode(folder, texts, args.precision)
    with ExitStack() as stack:
        s3 = None
        if args.s3:
            from benchmarks.s3 import local_s3

            s3 = stack.enter_context(local_s3(args.work / "moto.log"))
        places = _places(args, corpus, s3)
        results: dict[str, Any] = {"encode": encode}
        for engine in args.engines:
            results[engine] = measure_engine(engine, folder, places, args.precision, expected, args.rounds)
        log(f"reads: the first, middle and last shard of {args.read_rows:,} rows")
        reads = read_study(args.work / "reads", s3, args.read_rows)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.bulk"
        + (" --tiny" if args.tiny else "")
        + (" --s3" if args.s3 else ""),
        "machine": machine(),
        "cores": len(os.sched_getaffinity(0)),
        "versions": versions(),
        "precision": args.precision,
        "rows": len(texts),
        "mean_tokens": float(np.mean(lengths)),
        "places": [place.name for place in places],
        "results": results,
        "reads": reads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bulk.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "bulk.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

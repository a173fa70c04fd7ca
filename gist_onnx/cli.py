"""`gist-onnx`: export a model, embed texts with it, or describe an exported folder.

Every error a user can cause ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gist_onnx.errors import GistOnnxError
from gist_onnx.manifest import Manifest, read_manifest
from gist_onnx.options import (
    DEFAULT_MODEL,
    INT8_SCALES,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_BATCH_TOKENS,
    MAX_CLIENT_BATCH,
    OPTIMIZE_LEVELS,
    PRECISIONS,
    PROVIDERS,
    QUANTIZE_PRESETS,
)

# Inputs at least this long get a progress bar on stderr.
PROGRESS_THRESHOLD = 256


def _min_cosine(value: str) -> tuple[str, float]:
    precision, _, number = value.partition("=")
    try:
        return precision, float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GRAPH=VALUE such as fp32=0.9999, got {value!r}") from None


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value!r}")
    return number


def _client_batch(value: str) -> int:
    number = _positive_int(value)
    if number > MAX_CLIENT_BATCH:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_CLIENT_BATCH}, got {value!r}")
    return number


def _token_budget(value: str) -> int | str:
    return value if value == "auto" else _positive_int(value)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a sentence-transformers model to a verified ONNX model folder",
        description="Export a sentence-transformers model (hub id or local folder) to ONNX, "
        "optimize and optionally quantize it, verify it against PyTorch, and write a "
        "self-contained model folder. Needs the `export` extra.",
    )
    p.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"hub id or local folder (default: {DEFAULT_MODEL})"
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="folder to write")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument(
        "--optimize", default="none", choices=OPTIMIZE_LEVELS,
        help="offline optimization of the fp32 graph (default: none, ONNX Runtime fuses at session "
        "start, which measured fastest on CPUs; O2: transformer fusions; O3: plus approximate GELU)",
    )  # fmt: skip
    p.add_argument(
        "--quantize", choices=["int8"],
        help="also write an INT8 graph (weights int8 now, activation scales at run time)",
    )  # fmt: skip
    p.add_argument(
        "--int8-scales", default="per-token", choices=INT8_SCALES,
        help="with --quantize: activation scales per token (default: smoothed, every weight GEMM "
        "int8, a text's vector does not depend on its batch mates) or one per batch tensor (ONNX "
        "Runtime's dynamic quantization, Q/K/V kept fp32)",
    )  # fmt: skip
    p.add_argument(
        "--quantize-preset", default="portable", choices=QUANTIZE_PRESETS,
        help="int8 weights for which CPUs (default: portable, 7-bit weights exact on every CPU; "
        "avx512_vnni or arm64: 8-bit weights, exact only on CPUs with VNNI or on ARM; auto: this CPU's)",
    )  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="also write a half-precision graph for GPUs")
    p.add_argument(
        "--openvino-int8", action="store_true",
        help="also write static int8 for --provider openvino (NNCF, scales calibrated at export, the "
        "GEMMs that feed the residual stream kept in float; OpenVINO cannot run the per-token "
        "--quantize graph)",
    )  # fmt: skip
    p.add_argument(
        "--calibration", type=Path, metavar="FILE",
        help="with --openvino-int8: texts like yours, one per line, at least 100, to set its scales "
        "(default: the 465 texts the exporter carries, one-word queries to long passages)",
    )  # fmt: skip
    p.add_argument(
        "--all-tokens", action="store_true",
        help="compute the last layer for every token even with CLS pooling (by default a CLS "
        "model's last layer computes the first token only: the same vectors, less work)",
    )  # fmt: skip
    p.add_argument("--opset", type=int, help="ONNX opset (default: optimum's)")
    p.add_argument(
        "--min-cosine", type=_min_cosine, action="append", default=[], metavar="GRAPH=VALUE",
        help="override a graph's verification threshold, e.g. int8=0.97 (recorded in the manifest)",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument(
        "-v", "--verbose", action="store_true",
        help="show the warnings torch, transformers and optimum print (by default they go to a log file)",
    )  # fmt: skip
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from gist_onnx.export import export_model  # ImportError names the missing extra
    from gist_onnx.export.quiet import third_party_output

    with third_party_output(args.verbose) as captured:
        manifest = export_model(
            args.model, args.output, revision=args.revision, optimization=args.optimize,
            quantize=args.quantize, quantize_preset=args.quantize_preset,
            int8_scales=args.int8_scales, fp16=args.fp16, openvino_int8=args.openvino_int8,
            calibration=args.calibration, all_tokens=args.all_tokens,
            opset=args.opset, force=args.force, min_cosine=dict(args.min_cosine),
        )  # fmt: skip
    for graph, result in manifest.verification["results"].items():
        print(
            f"{graph}: min cosine to sentence-transformers {result['min_cosine']:.6f}, "
            f"max abs diff {result['max_abs_diff']:.2e}",
            file=sys.stderr,
        )
    if captured.summary():
        print(captured.summary(), file=sys.stderr)
    print(args.output)
    return 0


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", required=True, type=Path, help="exported model folder")
    p.add_argument(
        "--provider", default="auto", choices=PROVIDERS,
        help="auto: CUDA where it starts, else the CPU; openvino: ONNX Runtime's OpenVINO plugin on "
        "Intel CPUs, OpenVINO's own runtime on AMD CPUs (pip install 'gist-onnx[openvino]')",
    )  # fmt: skip
    p.add_argument("--precision", default="auto", choices=PRECISIONS)


def _read_texts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            texts.append(json.loads(line)["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GistOnnxError(
                f'{path}:{number}: expected a JSON object with a "text" field ({exc!r})'
            ) from exc
    return texts


def _write_vectors(path: Path, texts: list[str], vectors: np.ndarray) -> None:
    if path.suffix == ".npy":
        np.save(path, vectors)
    elif path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for text, vector in zip(texts, vectors):
                handle.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:
        raise GistOnnxError(f"{path}: the output must end in .npy or .jsonl")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="embed texts; print their cosine-similarity matrix or write the vectors",
        description="Embed TEXT arguments or a file of texts. Without --output, prints the "
        "cosine-similarity matrix of the texts, as the model card's example does.",
    )
    _add_runtime_options(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed")
    p.add_argument(
        "-i", "--input", type=Path, help='file of texts: one per line, or .jsonl with a "text" field'
    )
    p.add_argument("-o", "--output", type=Path, help="write vectors to .npy or .jsonl")
    p.add_argument("-b", "--batch-size", type=_positive_int, default=32)
    p.set_defaults(run=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from gist_onnx.embedder import Embedder

    texts = list(args.texts) + (_read_texts(args.input) if args.input else [])
    if not texts:
        raise GistOnnxError("give texts as arguments or with --input FILE")
    if args.output and args.output.suffix not in (".npy", ".jsonl"):
        raise GistOnnxError(f"{args.output}: the output must end in .npy or .jsonl")
    embedder = Embedder(args.model, provider=args.provider, precision=args.precision)
    vectors = embedder.encode(
        texts, batch_size=args.batch_size, show_progress_bar=len(texts) >= PROGRESS_THRESHOLD
    )
    if args.output:
        _write_vectors(args.output, texts, vectors)
        print(f"wrote {len(texts)} vectors of {embedder.dim} to {args.output}", file=sys.stderr)
        return 0
    np.set_printoptions(precision=4, suppress=True, linewidth=120)
    print(embedder.similarity(vectors, vectors))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="summarize an exported model folder",
        description="Summarize a model folder's manifest and the session it would run on.",
    )
    _add_runtime_options(p)
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(run=_run_info)


def _graph_line(name: str, manifest: Manifest, cpu_note: str | None) -> str:
    graph = manifest.graphs[name]
    result = manifest.verification.get("results", {}).get(name, {})
    parts = [f"{graph.size / 2**20:.1f} MiB", f"optimization {graph.optimization}"]
    if graph.quantization:
        # Folders from before per-token scales existed were quantized per tensor.
        parts.append(f"{graph.quantization.get('activations', 'per-tensor')} scales")
        if name == "int8-openvino":
            parts.append("for --provider openvino")
        else:
            parts.append(f"{graph.weight_bits}-bit weights ({cpu_note or 'exact on this CPU'})")
    if result:
        parts.append(f"min cosine to PyTorch {result['min_cosine']:.6f}")
    return f"graph {name:13}  {graph.file} ({', '.join(parts)})"


def _run_info(args: argparse.Namespace) -> int:
    from gist_onnx.cpu import int8_mismatch
    from gist_onnx.embedder import Embedder

    manifest = read_manifest(args.model)
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    info = Embedder(args.model, provider=args.provider, precision=args.precision).info
    revision = f" @ {manifest.source_revision}" if manifest.source_revision else ""
    print(f"model:        {manifest.source_model}{revision}")
    print(
        f"embedding:    {manifest.embedding_dim} dims, {manifest.pooling} pooling, "
        f"normalize={manifest.normalize}"
    )
    print(f"max tokens:   {manifest.max_seq_length}")
    print(f"inputs:       {', '.join(manifest.inputs)}")
    if manifest.output_tokens == "first":
        print("last layer:   first token only (all CLS pooling reads)")
    for name, graph in manifest.graphs.items():
        mismatch = int8_mismatch(graph.weight_bits) if graph.weight_bits else None
        print(_graph_line(name, manifest, "NOT exact on this CPU: " + mismatch if mismatch else None))
    graph = f" ({info.graph} graph)" if info.graph != info.precision else ""
    print(f"session:      {info.precision}{graph} on {', '.join(info.providers)}")
    budget = f"{info.max_batch_tokens} padded tokens" if info.max_batch_tokens else "no cap"
    print(f"per run:      {budget} (the {info.device} default)")
    if info.batch_invariant:
        print("batch mates:  none change a text's vector, bit for bit")
    else:
        print("batch mates:  may change a text's last bits (not promised for this device and graph)")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve an exported folder over HTTP (OpenAI- and TEI-compatible)",
        description="Serve embeddings over HTTP: POST /v1/embeddings (OpenAI), POST /embed (TEI), "
        "GET /health, /info and /metrics. Requests are micro-batched by one inference worker. "
        "Needs the `serve` extra.",
    )
    _add_runtime_options(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--api-key", default=os.environ.get("GIST_ONNX_API_KEY"),
        help="require 'Authorization: Bearer KEY' on the embedding routes and /info "
        "(default: $GIST_ONNX_API_KEY; none: open)",
    )  # fmt: skip
    _add_serve_limits(p)
    p.add_argument(
        "--auto-truncate", action="store_true",
        help="cut texts longer than the model's max tokens instead of answering 413 (TEI's 'truncate' "
        "overrides it per request)",
    )  # fmt: skip
    p.add_argument("--served-model-name", help="the model name in responses (default: the folder's name)")
    p.add_argument(
        "--shutdown-timeout", type=float, default=30.0,
        help="seconds to finish accepted requests after SIGTERM (default: 30)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=_positive_int, help="ONNX Runtime intra-op threads (default: one per core)"
    )
    p.add_argument(
        "--no-batching", action="store_true", help="one request per run (to measure what batching buys)"
    )
    p.add_argument(
        "--log-level", default="info", choices=LOG_LEVELS, help="(default: info, a line per request)"
    )
    p.add_argument(
        "--log-format", default="text", choices=LOG_FORMATS, help="(default: text; json: one object a line)"
    )
    p.set_defaults(run=_run_serve)


def _add_serve_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-client-batch", type=_client_batch, default=64,
        help=f"texts per request, at most {MAX_CLIENT_BATCH:,} (default: 64; 413 above)",
    )  # fmt: skip
    p.add_argument("--max-queue", type=_positive_int, default=512, help="texts that may wait (429 above)")
    p.add_argument(
        "--max-batch-tokens", type=_token_budget, default="auto",
        help="padded tokens per session run (default: the device's, "
        + ", ".join(f"{n:,} on {device}" for device, n in MAX_BATCH_TOKENS.items()) + ")",
    )  # fmt: skip
    p.add_argument(
        "--cache-mb", type=_non_negative_float, default=64,
        help="the exact vector cache's size in MiB (default: 64, about 20,000 vectors of 768; 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--max-body-bytes", type=_positive_int, default=2 * 2**20, help="request body limit (413 above)"
    )


def _run_serve(args: argparse.Namespace) -> int:
    from gist_onnx.serve import ServeConfig, serve  # ImportError names the missing extra

    read_manifest(args.model)  # a wrong folder fails here, in one line, before the server starts
    config = ServeConfig(
        model_dir=args.model, provider=args.provider, precision=args.precision, api_key=args.api_key,
        max_client_batch=args.max_client_batch, max_queue=args.max_queue,
        max_batch_tokens=args.max_batch_tokens, max_body_bytes=args.max_body_bytes,
        auto_truncate=args.auto_truncate, served_model_name=args.served_model_name,
        batching=not args.no_batching, threads=args.threads, cache_mb=args.cache_mb,
    )  # fmt: skip
    return serve(
        config, host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout,
        log_level=args.log_level, log_format=args.log_format,
    )  # fmt: skip


def _add_embed_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed-dataset",
        help="embed a corpus of Parquet/JSONL files into Parquet shards (resumable; local or Ray)",
        description="Embed the text column of every row of Parquet or JSONL files into one Parquet "
        "file per shard under OUTPUT, with the id column and `embedding`. Inputs and output are "
        "local paths or URIs of any store pyarrow knows (s3://, gs://, abfs://, hdfs://). A killed "
        "job resumes where it stopped when run again; _SUCCESS is written last. Needs the `bulk` "
        "extra (`ray` for --engine ray).",
    )
    _add_runtime_options(p)
    p.add_argument(
        "--input", required=True, nargs="+", help="files, URIs or globs, e.g. 's3://bucket/corpus/*.parquet'"
    )
    p.add_argument("--text-column", default="text", help="the column to embed (default: text)")
    p.add_argument("--id-column", help="a column to keep as the id (default: FILE:ROW)")
    p.add_argument("--output", required=True, help="folder or URI for the shards")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE",
        help="an option of pyarrow's filesystem that a URI cannot carry, e.g. "
        "endpoint_override=127.0.0.1:9000 for an S3-compatible store (repeatable)",
    )  # fmt: skip
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument(
        "--workers", type=_positive_int,
        help="worker processes or actors (default: one per core; on CUDA, one per GPU)",
    )  # fmt: skip
    p.add_argument(
        "--threads-per-worker", type=_positive_int,
        help="ONNX Runtime threads per worker (default: cores / workers, so nothing is oversubscribed)",
    )  # fmt: skip
    p.add_argument(
        "--gpus-per-worker", type=float, default=1.0,
        help="GPUs each Ray actor asks for on CUDA, fractions allowed (default: 1)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--rows-per-shard", type=_positive_int, default=50_000)
    p.add_argument("--ray-address", help="a Ray cluster to join (default: start a local one)")
    p.add_argument("--strict", action="store_true", help="stop at the first null or non-string text")
    p.set_defaults(run=_run_embed_dataset)


def _run_embed_dataset(args: argparse.Namespace) -> int:
    from gist_onnx.bulk import embed_dataset  # ImportError names the missing extra
    from gist_onnx.bulk.storage import parse_options

    result = embed_dataset(
        args.model, args.input, args.output, args.text_column, args.id_column, engine=args.engine,
        workers=args.workers, threads_per_worker=args.threads_per_worker,
        gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size,
        rows_per_shard=args.rows_per_shard, ray_address=args.ray_address, precision=args.precision,
        provider=args.provider, strict=args.strict, storage_options=parse_options(args.storage_option),
    )  # fmt: skip
    print(
        f"{result.written} of {result.rows} rows embedded into {result.shards} shards "
        f"({result.shards_skipped} already done) in {result.seconds:.1f} s on {result.info.device} "
        f"({result.info.precision}): {result.output}",
        file=sys.stderr,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gist_onnx import __version__

    parser = argparse.ArgumentParser(
        prog="gist-onnx", description="GIST-Embedding-v0 on ONNX Runtime: export, embed, inspect."
    )
    parser.add_argument("--version", action="version", version=f"gist-onnx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_export(sub)
    _add_embed(sub)
    _add_info(sub)
    _add_serve(sub)
    _add_embed_dataset(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gist-onnx` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (GistOnnxError, OSError, ImportError, ValueError, TypeError) as exc:
        # The library's errors name the problem and the fix: the message is the whole story.
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a library below us failed (ONNX Runtime, tokenizers): still one line
        print(f"error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    notes = getattr(exc, "__notes__", [])
    return str(exc) + (f" ({'; '.join(notes)})" if notes else "")

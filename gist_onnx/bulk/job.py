"""`embed_dataset`: a corpus of Parquet or JSONL files → one Parquet file of vectors per shard.

The driver plans the shards, skips those already written, hands the rest to an engine, checks
every shard, and writes ``_manifest.json`` and then ``_SUCCESS`` last. A job killed at any point
resumes where it stopped when run again: no row is lost, none is written twice.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from gist_onnx.bulk.engines import WorkSpec, run_local, run_ray
from gist_onnx.bulk.shards import DatasetError, Shard, ShardResult, finished, leftovers, plan_shards
from gist_onnx.embedder import Embedder
from gist_onnx.progress import Progress
from gist_onnx.session import RuntimeInfo

ENGINES = ("local", "ray")
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class DatasetResult:
    """What a job wrote, and what it left out."""

    output: Path
    shards: int
    shards_skipped: int  # already complete from an earlier run
    rows: int
    written: int
    bad: list[tuple[str, str]]  # (row id, why), never written
    seconds: float
    startup_seconds: float  # engine start (Ray's cluster), apart from the work


def expand_inputs(inputs: str | Sequence[str | Path]) -> list[Path]:
    """A glob, or a list of paths and globs, as the sorted files they name."""
    patterns = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    found: list[Path] = []
    for pattern in map(str, patterns):
        matches = sorted(glob.glob(os.path.expanduser(pattern))) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise DatasetError(f"{pattern}: matches no file")
        found += [Path(m) for m in matches]
    return list(dict.fromkeys(found))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def workers_and_threads(workers: int | None, threads: int | None) -> tuple[int, int]:
    """Worker count and ONNX Runtime threads per worker: workers x threads = cores by default."""
    cores = _cores()
    if workers is None and threads is None:
        return cores, 1  # one single-threaded session per core: no intra-op synchronization
    if workers is None:
        return max(1, cores // threads), threads
    return workers, threads or max(1, cores // workers)


def embed_dataset(
    model_dir: str | Path,
    inputs: str | Sequence[str | Path],
    output: str | Path,
    text_column: str = "text",
    id_column: str | None = None,
    *,
    engine: str = "local",
    workers: int | None = None,
    threads_per_worker: int | None = None,
    batch_size: int = 32,
    rows_per_shard: int = 50_000,
    ray_address: str | None = None,
    precision: str = "auto",
    provider: str = "auto",
    strict: bool = False,
    show_progress: bool = True,
) -> DatasetResult:
    """Embed the ``text_column`` of every row of ``inputs`` into Parquet shards under ``output``.

    Each shard file holds the id column (``id_column``, or "id" = "FILE:ROW") and ``embedding``
    (a fixed-size list of float32). Rows whose text is null or not a string are left out and
    returned in ``bad`` (``strict`` raises instead). Run it again after a crash to finish.
    ``provider`` and ``precision`` are resolved once, here, by opening the model as a worker
    would; every worker then runs exactly that device and graph.
    """
    if engine not in ENGINES:
        raise DatasetError(f"engine must be one of {ENGINES}, got {engine!r}")
    started = time.perf_counter()
    model_dir, output = Path(model_dir), Path(output)
    info = resolve_runtime(model_dir, provider, precision)
    shards = plan_shards(expand_inputs(inputs), rows_per_shard, info.graph_sha256)
    _refuse_foreign_shards(output, shards)
    (output / SUCCESS).unlink(missing_ok=True)  # whatever happens next, the old success is stale
    for temporary in leftovers(output):
        temporary.unlink(missing_ok=True)  # a writer that died: its shard is computed again

    todo = [shard for shard in shards if finished(shard, output) is None]
    workers, threads = workers_and_threads(workers, threads_per_worker)
    spec = WorkSpec(
        str(model_dir.resolve()), str(output.resolve()), text_column, id_column, info.precision,
        info.device, threads, batch_size, strict,
    )  # fmt: skip
    startup = _run_engine(todo, spec, engine, min(workers, len(todo)), ray_address, show_progress, started)
    checked = _check_every_shard(shards, output)
    bad = [row for shard in shards for row in checked[shard.id].bad]
    written = sum(result.written for result in checked.values())
    rows = sum(shard.rows for shard in shards)
    document = _job_manifest(info, spec, shards, checked)
    (output / MANIFEST).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    (output / SUCCESS).write_text("", encoding="utf-8")  # last: the job is complete
    _report_bad_rows(bad)
    seconds = time.perf_counter() - started
    return DatasetResult(output, len(shards), len(shards) - len(todo), rows, written, bad, seconds, startup)


def _job_manifest(
    info: RuntimeInfo, spec: WorkSpec, shards: list[Shard], checked: dict[str, ShardResult]
) -> dict:
    """What ``_manifest.json`` says: the model as resolved, the columns, every shard and its rows."""
    return {
        "model": info.source_model,
        "model_dir": spec.model_dir,
        "precision": info.precision,
        "device": info.device,
        "graph_sha256": info.graph_sha256,
        "dim": info.dim,
        "text_column": spec.text_column,
        "id_column": spec.id_column or "id",
        "rows": sum(shard.rows for shard in shards),
        "written": sum(result.written for result in checked.values()),
        "bad_rows": sum(len(result.bad) for result in checked.values()),
        "shards": [{**asdict(s), "file": s.file_name, "written": checked[s.id].written} for s in shards],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _run_engine(
    todo: list[Shard],
    spec: WorkSpec,
    engine: str,
    workers: int,
    ray_address: str | None,
    show_progress: bool,
    started: float,
) -> float:
    """Embed the shards not yet done on the engine; the seconds its start took (Ray's cluster)."""
    if not todo:
        return 0.0
    progress = Progress("embedding", sum(shard.rows for shard in todo), enabled=show_progress, unit="rows")
    startup = [0.0]

    def engine_started() -> None:
        startup[0] = time.perf_counter() - started
        progress.restart()

    if engine == "local":
        run = run_local(todo, spec, workers)
    else:
        run = run_ray(todo, spec, workers, ray_address, engine_started)
    rows = {shard.id: shard.rows for shard in todo}
    for result in run:
        progress.update(rows[result.shard_id])
    progress.close()
    return startup[0]


def _report_bad_rows(bad: list[tuple[str, str]]) -> None:
    if bad:
        shown = ", ".join(f"{row_id} ({why})" for row_id, why in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        print(f"{len(bad)} bad rows left out: {shown}{more}", file=sys.stderr)


def resolve_runtime(model_dir: Path, provider: str, precision: str) -> RuntimeInfo:
    """Open the model once, as a worker will, to learn the device and graph it really gets."""
    # The workers verify the checksums; here only what the session resolves matters.
    return Embedder(model_dir, provider=provider, precision=precision, threads=1, verify_checksums=False).info


def _refuse_foreign_shards(output: Path, shards: list[Shard]) -> None:
    """Shard files of another plan in the output would be read as rows of this one, twice."""
    planned = {shard.file_name for shard in shards}
    foreign = sorted(p.name for p in output.glob("*.parquet") if p.name not in planned)
    if foreign:
        raise DatasetError(
            f"{output} holds {len(foreign)} shard files of another job ({foreign[0]}, ...): another "
            "input, model or --rows-per-shard. Write to a new folder, or delete those files"
        )


def _check_every_shard(shards: list[Shard], output: Path) -> dict[str, ShardResult]:
    """Each shard's result as its file records it; DatasetError names the first one missing."""
    checked = {}
    for shard in shards:
        found = finished(shard, output)
        if found is None:
            raise DatasetError(
                f"{output / shard.file_name} is missing or incomplete; run the job again to finish"
            )
        checked[shard.id] = found
    return checked

"""`embed_dataset`: a corpus of Parquet or JSONL files → one Parquet file of vectors per shard.

The driver resolves the model once (where the workers run), plans the shards, skips those already
written, hands the rest to an engine, checks every shard, and writes ``_manifest.json`` and then
``_SUCCESS`` last. Inputs and output may be local paths or URIs of any store pyarrow knows. A job
killed at any point resumes where it stopped when run again: no row is lost, none is written
twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from gist_onnx.bulk.engines import (
    WorkSpec,
    ray_plan,
    resolve_on_ray,
    resolve_runtime,
    run_local,
    run_ray,
    start_ray,
)
from gist_onnx.bulk.shards import Shard, ShardResult, finished, plan_shards
from gist_onnx.bulk.storage import (
    DatasetError,
    Entry,
    Options,
    check_output,
    delete,
    expand,
    is_temporary,
    join,
    listing,
    write_bytes,
)
from gist_onnx.progress import Progress
from gist_onnx.session import RuntimeInfo

ENGINES = ("local", "ray")
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"


@dataclass(frozen=True)
class DatasetResult:
    """What a job wrote, and what it left out."""

    output: str
    shards: int
    shards_skipped: int  # already complete from an earlier run
    rows: int
    written: int
    bad: list[tuple[str, str]]  # (row id, why), never written
    seconds: float
    info: RuntimeInfo  # the model as the workers run it


def expand_inputs(inputs: str | Sequence[str | Path], options: Options = ()) -> list[Entry]:
    """A glob, or a list of paths, URIs and globs, as the files they name."""
    patterns = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return expand([str(p) for p in patterns], options)


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
    gpus_per_worker: float = 1.0,
    batch_size: int = 32,
    rows_per_shard: int = 50_000,
    ray_address: str | None = None,
    precision: str = "auto",
    provider: str = "auto",
    strict: bool = False,
    storage_options: Options = (),
    show_progress: bool = True,
) -> DatasetResult:
    """Embed the ``text_column`` of every row of ``inputs`` into Parquet shards under ``output``.

    Each shard file holds the id column (``id_column``, or "id" = "FILE:ROW") and ``embedding``
    (a fixed-size list of float32). Rows whose text is null or not a string are left out and
    returned in ``bad`` (``strict`` raises instead). Run it again after a crash to finish.
    ``provider`` and ``precision`` are resolved once, by opening the model where the workers run;
    every worker then runs exactly that device and graph. ``storage_options`` go to pyarrow with
    every URI (an S3 endpoint, say).
    """
    if engine not in ENGINES:
        raise DatasetError(f"engine must be one of {ENGINES}, got {engine!r}")
    started = time.perf_counter()
    output, options = str(output), tuple(storage_options)
    check_output(output, options)  # no such bucket, no access: said before any work
    entries = expand_inputs(inputs, options)
    count, threads = workers_and_threads(workers, threads_per_worker)
    spec = WorkSpec(
        str(Path(model_dir).resolve()), output, options, text_column, id_column, precision, provider,
        threads, batch_size, strict,
    )  # fmt: skip
    run, info, spec = _start_engine(engine, spec, workers, count, gpus_per_worker, ray_address)
    shards = plan_shards(entries, rows_per_shard, info.graph_sha256, options)
    _prepare_output(output, shards, options)
    todo = [shard for shard in shards if finished(shard, output, options) is None]
    if todo:
        _follow(run(todo), todo, show_progress)
    checked = _check_every_shard(shards, output, options)
    document = _job_manifest(info, spec, shards, checked)
    write_bytes(join(output, MANIFEST), (json.dumps(document, indent=2) + "\n").encode(), options)
    write_bytes(join(output, SUCCESS), b"", options)  # last: the job is complete
    bad = [row for shard in shards for row in checked[shard.id].bad]
    _report_bad_rows(bad)
    return DatasetResult(
        output, len(shards), len(shards) - len(todo), document["rows"], document["written"], bad,
        time.perf_counter() - started, info,
    )  # fmt: skip


Runner = Callable[[list[Shard]], Iterator[ShardResult]]


def _start_engine(
    engine: str,
    spec: WorkSpec,
    workers: int | None,
    local_workers: int,
    gpus_per_worker: float,
    ray_address: str | None,
) -> tuple[Runner, RuntimeInfo, WorkSpec]:
    """Start the engine and resolve the model where its workers run; the runner, what was
    resolved, and the spec with that device and precision pinned, so no worker decides again."""
    if engine == "ray":
        plan = ray_plan(spec.provider, workers, spec.threads, gpus_per_worker, start_ray(ray_address))
        info = resolve_on_ray(spec, plan)
    else:
        info = resolve_runtime(spec.model_dir, spec.provider, spec.precision)
    pinned = replace(spec, precision=info.precision, provider=info.device)
    if engine == "ray":
        return (lambda todo: run_ray(todo, pinned, plan)), info, pinned
    return (lambda todo: run_local(todo, pinned, min(local_workers, len(todo)))), info, pinned


def _prepare_output(output: str, shards: list[Shard], options: Options) -> None:
    """Refuse another job's shards; drop the stale success marker and dead writers' leftovers."""
    planned = {shard.file_name for shard in shards}
    present = listing(output, options)
    foreign = sorted(e.name for e in present if e.name.endswith(".parquet") and not e.name.startswith("."))
    foreign = [name for name in foreign if name not in planned]
    if foreign:
        raise DatasetError(
            f"{output} holds {len(foreign)} shard files of another job ({foreign[0]}, ...): another "
            "input, model or --rows-per-shard. Write to a new folder, or delete those files"
        )
    delete(join(output, SUCCESS), options)  # whatever happens next, the old success is stale
    for entry in present:
        if is_temporary(entry.name):
            delete(entry.uri, options)  # a writer that died before its rename: computed again


def _follow(run: Iterator[ShardResult], todo: list[Shard], show_progress: bool) -> None:
    progress = Progress("embedding", sum(shard.rows for shard in todo), enabled=show_progress, unit="rows")
    rows = {shard.id: shard.rows for shard in todo}
    for result in run:
        progress.update(rows[result.shard_id])
    progress.close()


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


def _report_bad_rows(bad: list[tuple[str, str]]) -> None:
    if bad:
        shown = ", ".join(f"{row_id} ({why})" for row_id, why in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        print(f"{len(bad)} bad rows left out: {shown}{more}", file=sys.stderr)


def _check_every_shard(shards: list[Shard], output: str, options: Options) -> dict[str, ShardResult]:
    """Each shard's result as its file records it; DatasetError names the first one missing."""
    checked = {}
    for shard in shards:
        found = finished(shard, output, options)
        if found is None:
            raise DatasetError(
                f"{join(output, shard.file_name)} is missing or incomplete; run the job again to finish"
            )
        checked[shard.id] = found
    return checked

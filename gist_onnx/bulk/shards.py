"""The two plain functions any engine schedules: plan the shards, and embed one shard to one file.

A shard is a row range of one input file. Its id is stable (the input file's identity, the row
range and the model's checksum), so a rerun finds the shards already written. A shard is written
to a temporary name and renamed into place: a ``.parquet`` file that exists is complete, and its
metadata says how many rows it should hold and which rows were bad, so a rerun can check it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gist_onnx.errors import GistOnnxError

FORMATS = (".parquet", ".jsonl")
METADATA_KEY = b"gist_onnx.shard"
READ_BATCH = 4096  # rows read from a Parquet file at a time


class DatasetError(GistOnnxError):
    """An input cannot be read as asked (missing file, unknown format, missing column)."""


@dataclass(frozen=True)
class Shard:
    """Rows ``start``..``stop`` of one input file, and the name of the file they embed into."""

    id: str
    source: str
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def file_name(self) -> str:
        return f"{self.id}.parquet"


@dataclass(frozen=True)
class ShardResult:
    """What embedding a shard wrote: rows written and the bad rows left out (id, why)."""

    shard_id: str
    written: int
    bad: list[tuple[str, str]]


def count_rows(path: Path) -> int:
    """Rows of a Parquet file (from its footer) or a JSONL file (its lines)."""
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def _identity(path: Path) -> str:
    """A file's identity: where it is, how big, when last written. A changed file gets new shards."""
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def plan_shards(inputs: list[Path], rows_per_shard: int, model_checksum: str) -> list[Shard]:
    """Cut every input file into shards of at most ``rows_per_shard`` rows, in input order."""
    if rows_per_shard < 1:
        raise DatasetError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    shards = []
    for path in inputs:
        if path.suffix not in FORMATS:
            raise DatasetError(f"{path}: inputs must be Parquet or JSONL files ({', '.join(FORMATS)})")
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        identity = _identity(path)
        total = count_rows(path)
        for start in range(0, total, rows_per_shard):
            stop = min(total, start + rows_per_shard)
            digest = hashlib.sha256(f"{identity}|{start}|{stop}|{model_checksum}".encode()).hexdigest()[:20]
            shards.append(Shard(f"{path.stem[:40]}-{start:010d}-{digest}", str(path), start, stop))
    return shards


def read_rows(shard: Shard, text_column: str, id_column: str | None) -> tuple[list[object], list[object]]:
    """(texts, ids) of the shard's rows; ids default to "SOURCE:ROW"."""
    path = Path(shard.source)
    if path.suffix == ".parquet":
        texts, ids = _parquet_rows(path, shard, text_column, id_column)
    else:
        texts, ids = _jsonl_rows(path, shard, text_column, id_column)
    if id_column is None:
        ids = [f"{shard.source}:{row}" for row in range(shard.start, shard.stop)]
    return texts, ids


def _parquet_rows(path: Path, shard: Shard, text_column: str, id_column: str | None) -> tuple[list, list]:
    parquet = pq.ParquetFile(path)
    columns = [text_column] + ([id_column] if id_column else [])
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise DatasetError(f"{path}: no column {missing[0]!r} (it has {parquet.schema_arrow.names})")
    texts: list = []
    ids: list = []
    offset = 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH, columns=columns):
        end = offset + batch.num_rows
        if end > shard.start and offset < shard.stop:
            part = batch.slice(max(0, shard.start - offset), min(shard.stop, end) - max(shard.start, offset))
            texts += part.column(text_column).to_pylist()
            ids += part.column(id_column).to_pylist() if id_column else []
        if end >= shard.stop:
            break
        offset = end
    return texts, ids


def _jsonl_rows(path: Path, shard: Shard, text_column: str, id_column: str | None) -> tuple[list, list]:
    texts: list = []
    ids: list = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for row, line in enumerate(handle):
            if row < shard.start:
                continue
            if row >= shard.stop:
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None  # a line that is not JSON is a bad row, like a null text
            record = record if isinstance(record, dict) else {}
            texts.append(record.get(text_column))
            ids.append(record.get(id_column) if id_column else None)
    return texts, ids


def embed_shard(
    shard: Shard,
    embedder: Any,
    out_dir: Path,
    text_column: str,
    id_column: str | None = None,
    batch_size: int = 32,
    strict: bool = False,
) -> ShardResult:
    """Embed one shard into ``out_dir/SHARD_ID.parquet``, atomically; bad rows are left out.

    A bad row is a null or non-string text (or, in JSONL, a line that is not a JSON object);
    with ``strict`` the first one raises DatasetError instead.
    """
    texts, ids = read_rows(shard, text_column, id_column)
    good = [i for i, text in enumerate(texts) if isinstance(text, str)]
    bad = [(str(ids[i]), _why(texts[i])) for i in range(len(texts)) if not isinstance(texts[i], str)]
    if strict and bad:
        raise DatasetError(f"{shard.source}: row {bad[0][0]} has {bad[0][1]} (--strict)")
    vectors = embedder.encode([texts[i] for i in good], batch_size=batch_size)
    id_name = id_column or "id"
    table = pa.table(
        {
            id_name: pa.array([ids[i] for i in good]),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1)), embedder.dim
            ),
        }
    )
    record = {"shard": asdict(shard), "rows": shard.rows, "written": len(good), "bad": bad}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(record).encode()})
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = out_dir / f".{shard.id}.tmp-{os.getpid()}"
    pq.write_table(table, temporary)
    os.replace(temporary, out_dir / shard.file_name)  # atomic: the .parquet name means complete
    return ShardResult(shard.id, len(good), bad)


def _why(value: object) -> str:
    return "a null text" if value is None else f"a {type(value).__name__}, not a string"


def finished(shard: Shard, out_dir: Path) -> ShardResult | None:
    """The result recorded in the shard's file if it exists and holds the right rows; else None."""
    path = out_dir / shard.file_name
    if not path.is_file():
        return None
    try:
        parquet = pq.ParquetFile(path)
        record = json.loads(parquet.schema_arrow.metadata[METADATA_KEY])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None  # unreadable or foreign: it is written again
    bad = [tuple(item) for item in record["bad"]]
    if record["rows"] != shard.rows or parquet.metadata.num_rows + len(bad) != shard.rows:
        return None
    return ShardResult(shard.id, parquet.metadata.num_rows, bad)


def leftovers(out_dir: Path) -> Iterator[Path]:
    """Temporary files of shards whose writer died before renaming them."""
    return out_dir.glob(".*.tmp-*")

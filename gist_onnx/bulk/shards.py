"""The two plain functions any engine schedules: plan the shards, and embed one shard to one file.

A shard is a row range of one input file. Its id is stable (the input file's identity, the row
range and the model's checksum), so a rerun finds the shards already written. Reading a shard
costs what the shard holds, wherever it lies in its file: a Parquet shard reads only the row
groups that overlap it (located from the footer), a JSONL shard only its own bytes (located by
one pass over the file at planning). A shard's file appears whole or not at all
(gist_onnx.bulk.storage), and its metadata says how many rows it should hold and which rows were
bad, so a rerun can check it.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gist_onnx.bulk.storage import DatasetError, Entry, Options, join, open_input, write_table

FORMATS = (".parquet", ".jsonl")
METADATA_KEY = b"gist_onnx.shard"
SCAN_BLOCK = 1 << 24  # bytes read at a time when a JSONL file is scanned for its line offsets


@dataclass(frozen=True)
class Shard:
    """Rows ``start``..``stop`` of one input file (for JSONL, at bytes ``byte_start``..``byte_stop``),
    and the name of the file they embed into."""

    id: str
    source: str
    start: int
    stop: int
    byte_start: int | None = None
    byte_stop: int | None = None

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


@dataclass(frozen=True)
class Rows:
    """A shard's texts and ids, and how many rows were decoded to get them."""

    texts: list[Any]
    ids: list[Any]
    decoded: int  # Parquet: the rows of the row groups read; JSONL: the lines parsed


def _suffix(uri: str) -> str:
    return os.path.splitext(uri.rsplit("/", 1)[-1])[1]


def plan_shards(
    inputs: list[Entry], rows_per_shard: int, model_checksum: str, options: Options = ()
) -> list[Shard]:
    """Cut every input file into shards of at most ``rows_per_shard`` rows, in input order."""
    if rows_per_shard < 1:
        raise DatasetError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    shards = []
    for entry in inputs:
        suffix = _suffix(entry.uri)
        if suffix not in FORMATS:
            raise DatasetError(f"{entry.uri}: inputs must be Parquet or JSONL files ({', '.join(FORMATS)})")
        if suffix == ".parquet":
            ranges = _row_ranges(_parquet_rows(entry, options), rows_per_shard)
        else:
            ranges = _jsonl_ranges(entry, rows_per_shard, options)
        stem = os.path.splitext(entry.name)[0][:40]
        for start, stop, byte_start, byte_stop in ranges:
            key = f"{entry.identity}|{start}|{stop}|{model_checksum}"
            digest = hashlib.sha256(key.encode()).hexdigest()[:20]
            shards.append(
                Shard(f"{stem}-{start:010d}-{digest}", entry.uri, start, stop, byte_start, byte_stop)
            )
    return shards


def _parquet_rows(entry: Entry, options: Options) -> int:
    with open_input(entry.uri, options) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def _row_ranges(total: int, rows_per_shard: int) -> Iterator[tuple[int, int, None, None]]:
    for start in range(0, total, rows_per_shard):
        yield start, min(total, start + rows_per_shard), None, None


def _jsonl_ranges(entry: Entry, rows_per_shard: int, options: Options) -> list[tuple[int, int, int, int]]:
    """One pass over the file: the byte offset where every shard's first line starts."""
    starts, lines, offset, last = [0], 0, 0, b"\n"
    with open_input(entry.uri, options) as handle:
        while block := handle.read(SCAN_BLOCK):
            position = block.find(b"\n")
            while position != -1:
                lines += 1
                if lines % rows_per_shard == 0:
                    starts.append(offset + position + 1)
                position = block.find(b"\n", position + 1)
            offset += len(block)
            last = block[-1:]
    if last != b"\n":  # a last line without its newline is a row too
        lines += 1
    if starts[-1] >= offset:
        starts.pop()  # no line starts at the end of the file
    return [
        (
            k * rows_per_shard,
            min(lines, (k + 1) * rows_per_shard),
            start,
            starts[k + 1] if k + 1 < len(starts) else offset,
        )
        for k, start in enumerate(starts)
    ]


def read_rows(shard: Shard, text_column: str, id_column: str | None, options: Options = ()) -> Rows:
    """The shard's texts and ids (ids default to "SOURCE:ROW"), reading only the shard's part."""
    if _suffix(shard.source) == ".parquet":
        rows = _read_parquet(shard, text_column, id_column, options)
    else:
        rows = _read_jsonl(shard, text_column, id_column, options)
    if id_column is None:
        rows = replace(rows, ids=[f"{shard.source}:{row}" for row in range(shard.start, shard.stop)])
    return rows


def _read_parquet(shard: Shard, text_column: str, id_column: str | None, options: Options) -> Rows:
    with open_input(shard.source, options) as handle:
        parquet = pq.ParquetFile(handle)
        columns = [text_column] + ([id_column] if id_column else [])
        missing = [c for c in columns if c not in parquet.schema_arrow.names]
        if missing:
            raise DatasetError(
                f"{shard.source}: no column {missing[0]!r} (it has {parquet.schema_arrow.names})"
            )
        metadata = parquet.metadata
        # Row offsets of the row groups, from the footer: the groups that overlap the shard.
        offsets = np.cumsum([0] + [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
        first = bisect.bisect_right(offsets, shard.start) - 1
        last = bisect.bisect_left(offsets, shard.stop)
        groups = list(range(first, last))
        table = parquet.read_row_groups(groups, columns=columns)
    part = table.slice(shard.start - int(offsets[first]), shard.rows)
    ids = part.column(id_column).to_pylist() if id_column else []
    return Rows(part.column(text_column).to_pylist(), ids, table.num_rows)


def _read_jsonl(shard: Shard, text_column: str, id_column: str | None, options: Options) -> Rows:
    if shard.byte_start is None or shard.byte_stop is None:
        raise DatasetError(f"{shard.source}: a JSONL shard needs its byte range; plan the job again")
    with open_input(shard.source, options) as handle:
        handle.seek(shard.byte_start)
        data = handle.read(shard.byte_stop - shard.byte_start)
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the shard's last line
    texts, ids = [], []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None  # a line that is not JSON is a bad row, like a null text
        record = record if isinstance(record, dict) else {}
        texts.append(record.get(text_column))
        ids.append(record.get(id_column) if id_column else None)
    if len(texts) != shard.rows:
        raise DatasetError(
            f"{shard.source}: expected {shard.rows} lines from byte {shard.byte_start}, found {len(texts)}: "
            "the file changed since the job was planned; run it again"
        )
    return Rows(texts, ids, len(texts))


def embed_shard(
    shard: Shard,
    embedder: Any,
    output: str,
    text_column: str,
    id_column: str | None = None,
    batch_size: int = 32,
    strict: bool = False,
    options: Options = (),
) -> ShardResult:
    """Embed one shard into ``output/SHARD_ID.parquet``, whole or not at all; bad rows left out.

    A bad row is a null or non-string text (or, in JSONL, a line that is not a JSON object);
    with ``strict`` the first one raises DatasetError instead.
    """
    rows = read_rows(shard, text_column, id_column, options)
    texts, ids = rows.texts, rows.ids
    good = [i for i, text in enumerate(texts) if isinstance(text, str)]
    bad = [(str(ids[i]), _why(texts[i])) for i in range(len(texts)) if not isinstance(texts[i], str)]
    if strict and bad:
        raise DatasetError(f"{shard.source}: row {bad[0][0]} has {bad[0][1]} (--strict)")
    vectors = embedder.encode([texts[i] for i in good], batch_size=batch_size)
    table = pa.table(
        {
            id_column or "id": pa.array([ids[i] for i in good]),
            "embedding": pa.FixedSizeListArray.from_arrays(
                pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1)), embedder.dim
            ),
        }
    )
    record = {
        "shard": asdict(shard),
        "rows": shard.rows,
        "written": len(good),
        "bad": bad,
        "worker": _worker(embedder),
    }
    write_table(
        table.replace_schema_metadata({METADATA_KEY: json.dumps(record).encode()}),
        join(output, shard.file_name),
        options,
    )
    return ShardResult(shard.id, len(good), bad)


def _worker(embedder: Any) -> dict[str, Any]:
    """Where a shard was computed: host, process, device and the GPU it was given, if any."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": embedder.info.device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _why(value: object) -> str:
    return "a null text" if value is None else f"a {type(value).__name__}, not a string"


def shard_record(uri: str, options: Options = ()) -> dict[str, Any] | None:
    """What a shard file's metadata records, with its row count; None if unreadable or foreign."""
    try:
        with open_input(uri, options) as handle:
            parquet = pq.ParquetFile(handle)
            record = json.loads(parquet.schema_arrow.metadata[METADATA_KEY])
            return {**record, "num_rows": parquet.metadata.num_rows}
    except (DatasetError, OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None


def finished(shard: Shard, output: str, options: Options = ()) -> ShardResult | None:
    """The result recorded in the shard's file if it exists and holds the right rows; else None."""
    record = shard_record(join(output, shard.file_name), options)
    if record is None:
        return None
    bad = [tuple(item) for item in record["bad"]]
    if record["rows"] != shard.rows or record["num_rows"] + len(bad) != shard.rows:
        return None
    return ShardResult(shard.id, record["num_rows"], bad)

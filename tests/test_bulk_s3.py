"""Bulk jobs on object storage: a real S3-compatible server (moto's server mode) on loopback,
on the local engine and on Ray: whole jobs, a job killed and rerun, foreign shards, bad URIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the bulk extra is not installed")
pytest.importorskip("moto", reason="the test extra is not installed")
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from gist_onnx import Embedder  # noqa: E402
from gist_onnx.bulk import DatasetError, embed_dataset  # noqa: E402

pytestmark = pytest.mark.slow
Options = tuple[tuple[str, str], ...]
ENGINES = ["local", "ray"]


def _fs(s3: Options) -> pafs.S3FileSystem:
    from benchmarks.s3 import filesystem

    return filesystem(s3)


def _bucket(s3: Options, name: str) -> str:
    _fs(s3).create_dir(name)
    return f"s3://{name}"


def _put_parquet(s3: Options, path: str, rows: list[str], ids: list[str], row_group_size: int) -> None:
    table = pa.table({"text": rows, "doc_id": ids})
    pq.write_table(table, path, filesystem=_fs(s3), row_group_size=row_group_size)


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"row {i} of the corpus talks about " + "topic " * (3 + i % 9) for i in range(start, start + n)]


def _put_corpus(s3: Options, bucket: str) -> dict[str, str]:
    """Two Parquet files and a JSONL file in the bucket; id → text."""
    fs, name = _fs(s3), bucket.removeprefix("s3://")
    texts = {}
    for part in range(2):
        rows = _texts(120, part * 120)
        ids = [f"p{part}-{i}" for i in range(len(rows))]
        _put_parquet(s3, f"{name}/corpus/part-{part}.parquet", rows, ids, row_group_size=32)
        texts.update(zip(ids, rows))
    lines = _texts(50, 1000)
    with fs.open_output_stream(f"{name}/corpus/extra.jsonl") as stream:
        stream.write(
            "".join(json.dumps({"text": t, "doc_id": f"j-{i}"}) + "\n" for i, t in enumerate(lines)).encode()
        )
    texts.update((f"j-{i}", t) for i, t in enumerate(lines))
    return texts


def _read_output(s3: Options, uri: str) -> dict[str, np.ndarray]:
    """Every row of every shard under the URI, by id; fails on an id written twice."""
    fs, prefix = _fs(s3), uri.removeprefix("s3://")
    rows: dict[str, np.ndarray] = {}
    for info in fs.get_file_info(pafs.FileSelector(prefix)):
        if not info.path.endswith(".parquet"):
            continue
        table = pq.read_table(info.path, filesystem=fs)
        for row_id, vector in zip(table.column("doc_id").to_pylist(), table.column("embedding").to_pylist()):
            assert row_id not in rows, f"{row_id} written twice"
            rows[row_id] = np.asarray(vector, dtype=np.float32)
    return rows


def _stamps(s3: Options, uri: str) -> dict[str, tuple[int, int]]:
    fs, prefix = _fs(s3), uri.removeprefix("s3://")
    return {
        i.path: (i.size, i.mtime_ns)
        for i in fs.get_file_info(pafs.FileSelector(prefix, allow_not_found=True))
        if i.path.endswith(".parquet")
    }


def _job(model: Path, s3: Options, inputs: list[str], out: str, engine: str, **extra: object):
    return embed_dataset(
        model, inputs, out, "text", "doc_id", engine=engine, workers=2, rows_per_shard=40,
        storage_options=s3, show_progress=False, **extra,
    )  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_a_whole_job_from_s3_to_s3(s3: Options, tiny_export: Path, engine: str) -> None:
    bucket = _bucket(s3, f"whole-{engine}")
    texts = _put_corpus(s3, bucket)
    out = f"{bucket}/out"
    inputs = [f"{bucket}/corpus/*.parquet", f"{bucket}/corpus/extra.jsonl"]
    result = _job(tiny_export, s3, inputs, out, engine)
    assert (result.rows, result.written, result.shards) == (290, 290, 8)
    fs = _fs(s3)
    assert fs.get_file_info(f"{out.removeprefix('s3://')}/_SUCCESS").is_file
    manifest = json.loads(fs.open_input_file(f"{out.removeprefix('s3://')}/_manifest.json").read())
    assert manifest["written"] == 290 and manifest["device"] == "cpu"
    found = _read_output(s3, out)
    assert found.keys() == texts.keys()
    expected = Embedder(tiny_export).encode(list(texts.values()))
    for row_id, vector in zip(texts, expected):
        np.testing.assert_allclose(found[row_id], vector, atol=1e-5)
    again = _job(tiny_export, s3, inputs, out, engine)  # a rerun finds everything done
    assert again.shards_skipped == 8


@pytest.mark.parametrize("engine", ENGINES)
def test_another_jobs_shards_and_bad_uris_are_refused_before_any_work(
    s3: Options, tiny_export: Path, engine: str, tmp_path: Path
) -> None:
    bucket = _bucket(s3, f"refuse-{engine}")
    _put_corpus(s3, bucket)
    source = [f"{bucket}/corpus/part-0.parquet"]
    foreign = f"{bucket}/out/someone-else-0000000000-abc.parquet"
    pq.write_table(pa.table({"id": ["x"]}), foreign.removeprefix("s3://"), filesystem=_fs(s3))
    with pytest.raises(DatasetError, match="shard files of another job"):
        _job(tiny_export, s3, source, f"{bucket}/out", engine)
    with pytest.raises(DatasetError, match="no-such-bucket"):
        _job(tiny_export, s3, source, "s3://no-such-bucket/out", engine)
    with pytest.raises(DatasetError, match="matches no file"):
        _job(tiny_export, s3, [f"{bucket}/corpus/missing.parquet"], f"{bucket}/fresh", engine)
    with pytest.raises(DatasetError, match="matches no file"):
        _job(tiny_export, s3, ["s3://no-such-bucket/corpus/*.parquet"], f"{bucket}/fresh", engine)
    assert not _stamps(s3, f"{bucket}/fresh")  # nothing was written


def _settled(s3: Options, uri: str, quiet_s: float = 5.0) -> dict[str, tuple[int, int]]:
    """The shard objects once none has appeared for ``quiet_s`` seconds."""
    stamps, since = _stamps(s3, uri), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = _stamps(s3, uri)
        if now != stamps:
            stamps, since = now, time.monotonic()
    return stamps


def _cli(model: Path, s3: Options, inputs: list[str], out: str, engine: str) -> list[str]:
    options = [arg for key, value in s3 for arg in ("--storage-option", f"{key}={value}")]
    return [
        sys.executable, "-m", "gist_onnx", "embed-dataset", "-m", str(model), "--input", *inputs,
        "--output", out, "--id-column", "doc_id", "--workers", "2", "--rows-per-shard", "20",
        "--engine", engine, *options,
    ]  # fmt: skip


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_killed_after_its_first_shard_resumes_exactly_once(
    s3: Options, tiny_export: Path, engine: str
) -> None:
    bucket = _bucket(s3, f"killed-{engine}")
    fs = _fs(s3)
    rows = [f"document {i}: " + "a long passage of words " * 100 for i in range(400)]
    ids = [f"d{i}" for i in range(len(rows))]
    _put_parquet(s3, f"{bucket[5:]}/big/corpus.parquet", rows, ids, row_group_size=20)
    inputs = [f"{bucket}/big/corpus.parquet"]
    clean = f"{bucket}/clean"
    subprocess.run(_cli(tiny_export, s3, inputs, clean, engine), check=True, capture_output=True, timeout=600)
    expected = _read_output(s3, clean)

    out = f"{bucket}/out"
    job = subprocess.Popen(
        _cli(tiny_export, s3, inputs, out, engine), stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not _stamps(s3, out):
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no shard was written in time"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its workers, as a lost machine would
    job.wait()
    kept = _settled(s3, out)  # Ray's workers outlive their driver for a moment
    assert 1 <= len(kept) < 20 and not fs.get_file_info(f"{out[5:]}/_SUCCESS").is_file

    rerun = subprocess.run(
        _cli(tiny_export, s3, inputs, out, engine), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(kept)} already done)" in rerun.stderr
    after = _stamps(s3, out)
    assert {path: after[path] for path in kept} == kept  # the first run's objects are untouched
    found = _read_output(s3, out)
    assert found.keys() == expected.keys() == set(ids)  # every row, exactly once
    for row_id, vector in expected.items():
        np.testing.assert_array_equal(found[row_id], vector)  # as a clean run computed them

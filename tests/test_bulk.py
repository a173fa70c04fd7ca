"""Bulk embedding: shard planning and writing, the local engine, crashes, reruns, and Ray Data."""

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
import pyarrow.parquet as pq  # noqa: E402

from gist_onnx import Embedder  # noqa: E402
from gist_onnx.bulk import DatasetError, embed_dataset, embed_shard, plan_shards  # noqa: E402
from gist_onnx.bulk.shards import finished, read_rows  # noqa: E402
from gist_onnx.bulk.storage import expand  # noqa: E402

TOPICS = ["cooking", "markets", "football", "physics", "gardening", "music", "law", "travel"]


def _texts(n: int, words: int = 6) -> list[str]:
    return [f"row {i} is about {TOPICS[i % 8]} " + "and more words " * (words + i % 5) for i in range(n)]


def _write_parquet(path: Path, texts: list[object], ids: list[object] | None = None) -> Path:
    columns = {"text": pa.array(texts, type=pa.string())}
    if ids is not None:
        columns["doc_id"] = pa.array(ids)
    pq.write_table(pa.table(columns), path, row_group_size=64)
    return path


def _read_output(folder: Path, id_name: str = "id") -> dict[object, np.ndarray]:
    """Every row of every shard file, by id; fails on a duplicated id."""
    rows: dict[object, np.ndarray] = {}
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path)
        for row_id, vector in zip(table.column(id_name).to_pylist(), table.column("embedding").to_pylist()):
            assert row_id not in rows, f"{row_id} written twice"
            rows[row_id] = np.asarray(vector, dtype=np.float32)
    return rows


def _min_cosine(found: dict[object, np.ndarray], expected: dict[object, np.ndarray]) -> float:
    assert found.keys() == expected.keys()
    return min(
        float(found[k] @ expected[k] / np.linalg.norm(found[k]) / np.linalg.norm(expected[k])) for k in found
    )


@pytest.fixture(scope="module")
def embedder(tiny_export: Path) -> Embedder:
    return Embedder(tiny_export, provider="cpu")


def test_plan_covers_every_row_once_with_stable_ids(tmp_path: Path) -> None:
    a = _write_parquet(tmp_path / "a.parquet", _texts(250))
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(30)))
    shards = plan_shards(expand([str(a), str(b)]), 100, "model-sha")
    assert [(s.source, s.start, s.stop) for s in shards] == [
        (str(a), 0, 100), (str(a), 100, 200), (str(a), 200, 250), (str(b), 0, 30),
    ]  # fmt: skip
    assert [s.id for s in plan_shards(expand([str(a), str(b)]), 100, "model-sha")] == [s.id for s in shards]
    assert not {s.id for s in plan_shards(expand([str(a), str(b)]), 100, "other-model")} & {
        s.id for s in shards
    }
    os.utime(a, ns=(0, 12345))  # the input changed: its shards are new ones
    assert plan_shards(expand([str(a)]), 100, "model-sha")[0].id != shards[0].id
    (tmp_path / "c.csv").write_text("text\n")
    with pytest.raises(DatasetError, match="Parquet or JSONL"):
        plan_shards(expand([str(tmp_path / "c.csv")]), 100, "m")


def test_a_shard_embeds_its_rows_and_reports_bad_ones(tmp_path: Path, embedder: Embedder) -> None:
    texts: list[object] = _texts(40)
    texts[3], texts[17] = None, None
    source = _write_parquet(tmp_path / "in.parquet", texts, ids=[f"doc-{i}" for i in range(40)])
    (shard,) = plan_shards(expand([str(source)]), 100, "m")
    result = embed_shard(shard, embedder, str(tmp_path / "out"), "text", "doc_id")
    assert result.written == 38 and result.bad == [("doc-3", "a null text"), ("doc-17", "a null text")]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [shard.file_name]  # no temporary left
    table = pq.read_table(tmp_path / "out" / shard.file_name)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), embedder.dim)
    good = [i for i in range(40) if i not in (3, 17)]
    found = _read_output(tmp_path / "out", "doc_id")
    expected = dict(zip([f"doc-{i}" for i in good], embedder.encode([texts[i] for i in good])))
    assert _min_cosine(found, expected) >= 0.99999
    assert finished(shard, str(tmp_path / "out")) == result
    with pytest.raises(DatasetError, match="--strict"):
        embed_shard(shard, embedder, str(tmp_path / "strict"), "text", "doc_id", strict=True)


def test_the_last_shard_reads_no_more_than_its_own_rows(tmp_path: Path) -> None:
    texts = [f"row {i}" for i in range(10_000)]
    parquet = tmp_path / "many.parquet"
    pq.write_table(pa.table({"text": texts}), parquet, row_group_size=100)
    jsonl = tmp_path / "many.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for source in (parquet, jsonl):
        shards = plan_shards(expand([str(source)]), 250, "m")
        assert len(shards) == 40
        first, last = read_rows(shards[0], "text", None), read_rows(shards[-1], "text", None)
        assert first.texts == texts[:250] and last.texts == texts[-250:]
        # Parquet: the overlapping row groups only (250 rows span 3 groups of 100 at most).
        assert last.decoded <= 300 and first.decoded <= 300, source
    jsonl_shards = plan_shards(expand([str(jsonl)]), 250, "m")
    assert jsonl_shards[-1].byte_stop == jsonl.stat().st_size  # its own bytes, found at planning
    assert sum(s.byte_stop - s.byte_start for s in jsonl_shards) == jsonl.stat().st_size


@pytest.mark.slow  # worker processes
def test_jsonl_rows_bad_lines_and_default_ids(tmp_path: Path, embedder: Embedder) -> None:
    source = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": "first"}), "not json", json.dumps({"text": 7}), json.dumps({"text": "last"})]
    source.write_text("\n".join(lines) + "\n")
    result = embed_dataset(embedder.model_dir, str(source), tmp_path / "out", workers=1, show_progress=False)
    assert (result.rows, result.written) == (4, 2)
    assert result.bad == [(f"{source}:1", "a null text"), (f"{source}:2", "a int, not a string")]
    found = _read_output(tmp_path / "out")
    assert set(found) == {f"{source}:0", f"{source}:3"}


@pytest.mark.slow  # worker processes
def test_local_engine_with_two_workers_and_a_rerun_that_skips(tmp_path: Path, embedder: Embedder) -> None:
    texts = _texts(300)
    for part in range(2):
        _write_parquet(tmp_path / f"part-{part}.parquet", texts[part * 150 : (part + 1) * 150])
    out = tmp_path / "out"
    result = embed_dataset(
        embedder.model_dir,
        str(tmp_path / "part-*.parquet"),
        out,
        workers=2,
        rows_per_shard=40,
        show_progress=False,
    )
    assert (result.shards, result.shards_skipped, result.written) == (8, 0, 300)
    assert (out / "_SUCCESS").is_file() and json.loads((out / "_manifest.json").read_text())["written"] == 300
    found = _read_output(out)
    ids = [f"{tmp_path / f'part-{i // 150}.parquet'}:{i % 150}" for i in range(300)]
    assert _min_cosine(found, dict(zip(ids, embedder.encode(texts)))) >= 0.99999
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = embed_dataset(
        embedder.model_dir, str(tmp_path / "part-*.parquet"), out, workers=2, rows_per_shard=40
    )
    assert (
        again.shards_skipped == 8 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == stamps
    )


def _corpus(tmp_path: Path) -> Path:
    """Enough long texts that a job lasts a few seconds on the tiny model: time to kill it."""
    source = tmp_path / "corpus.parquet"
    _write_parquet(source, [f"document {i}: " + "a long passage of words " * 100 for i in range(600)])
    return source


def _job(model: Path, source: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "gist_onnx", "embed-dataset", "-m", str(model), "--input", str(source),
        "--output", str(out), "--workers", "2", "--rows-per-shard", "30",
    ]  # fmt: skip


def _wait_for_shards(out: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*.parquet"))) < count:
        assert process.poll() is None, "the job ended before it could be interrupted"
        assert time.monotonic() < deadline, "no shard was written in time"
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, tiny_export: Path) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("clean")
    source = _corpus(work)
    subprocess.run(_job(tiny_export, source, work / "out"), check=True, capture_output=True)
    return source, _read_output(work / "out")


@pytest.mark.slow
def test_a_worker_killed_mid_shard_loses_and_duplicates_nothing(
    tmp_path: Path, tiny_export: Path, clean_run: tuple[Path, dict]
) -> None:
    source, expected = clean_run
    out = tmp_path / "out"
    job = subprocess.Popen(_job(tiny_export, source, out), stderr=subprocess.PIPE, text=True)
    _wait_for_shards(out, 1, job)
    workers = [pid for pid in _children(job.pid) if "spawn" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    assert job.wait(300) == 0, job.stderr.read()
    assert (out / "_SUCCESS").is_file()
    assert _min_cosine(_read_output(out), expected) >= 0.99999  # every row exactly once


@pytest.mark.slow
def test_a_killed_driver_resumes_with_only_the_missing_shards(
    tmp_path: Path, tiny_export: Path, clean_run: tuple[Path, dict]
) -> None:
    source, expected = clean_run
    out = tmp_path / "out"
    job = subprocess.Popen(_job(tiny_export, source, out), stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for_shards(out, 3, job)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its workers, as a lost machine would
    job.wait()
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.parquet")}
    assert 3 <= len(kept) < 20 and not (out / "_SUCCESS").exists()

    rerun = subprocess.run(_job(tiny_export, source, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(kept)} already done)" in rerun.stderr
    for name, stamp in kept.items():  # what was complete is not written again
        path = out / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp
    assert not list(out.glob(".*.tmp-*"))
    assert _min_cosine(_read_output(out), expected) >= 0.99999


@pytest.mark.slow  # worker processes
def test_cli_errors_are_one_line(tmp_path: Path, tiny_export: Path) -> None:
    source = _write_parquet(tmp_path / "in.parquet", ["a", None])
    cases = [
        (["--input", str(tmp_path / "none-*.parquet")], "matches no file"),
        (["--input", str(source), "--text-column", "body"], "no column 'body'"),
        (["--input", str(source), "--strict"], "--strict"),
    ]
    for extra, says in cases:
        command = [sys.executable, "-m", "gist_onnx", "embed-dataset", "-m", str(tiny_export)]
        command += ["--output", str(tmp_path / "out"), *extra]
        result = subprocess.run(command, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and says in lines[0], result.stderr


@pytest.mark.slow
def test_ray_engine_writes_what_the_local_engine_does(
    tmp_path: Path, tiny_export: Path, embedder: Embedder
) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    texts: list[object] = _texts(200)
    texts[5] = None
    source = _write_parquet(tmp_path / "in.parquet", texts, ids=list(range(200)))
    result = embed_dataset(
        tiny_export,
        str(source),
        tmp_path / "ray",
        "text",
        "doc_id",
        engine="ray",
        workers=2,
        rows_per_shard=50,
    )
    assert (result.shards, result.written, result.bad) == (4, 199, [("5", "a null text")])
    found = _read_output(tmp_path / "ray", "doc_id")
    good = [i for i in range(200) if i != 5]
    assert _min_cosine(found, dict(zip(good, embedder.encode([texts[i] for i in good])))) >= 0.99999


@pytest.mark.slow  # worker processes
def test_an_output_folder_is_created_and_a_file_is_refused(tmp_path: Path, embedder: Embedder) -> None:
    source = _write_parquet(tmp_path / "in.parquet", _texts(5))
    nested = tmp_path / "not" / "yet" / "there"
    result = embed_dataset(embedder.model_dir, str(source), nested, workers=1, show_progress=False)
    assert result.written == 5 and (nested / "_SUCCESS").is_file()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DatasetError, match="cannot be created"):
        embed_dataset(embedder.model_dir, str(source), tmp_path / "a-file" / "out", workers=1)

"""The bulk job's GPU logic, tested on a CPU: how many workers, what each asks for, which GPU
each gets. Sessions run under a pretend CUDA (tests/fakes/cuda) in real worker processes and on
a real local Ray cluster with logical GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="the bulk extra is not installed")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from gist_onnx.bulk import DatasetError  # noqa: E402
from gist_onnx.bulk.engines import CPUS_PER_GPU_ACTOR, RayPlan, ray_plan  # noqa: E402
from gist_onnx.bulk.shards import shard_record  # noqa: E402
from tests.conftest import fake_cuda_env  # noqa: E402


def test_the_ray_pool_fills_the_gpus_on_cuda() -> None:
    cluster = {"CPU": 16.0, "GPU": 2.0}
    assert ray_plan("cuda", None, 1, 1.0, cluster) == RayPlan(2, CPUS_PER_GPU_ACTOR, 1.0)
    assert ray_plan("cuda", None, 1, 0.5, cluster) == RayPlan(4, CPUS_PER_GPU_ACTOR, 0.5)  # two per GPU
    assert ray_plan("cuda", 3, 1, 0.5, cluster).actors == 3  # --workers says otherwise
    assert ray_plan("auto", None, 1, 1.0, cluster).num_gpus == 1.0  # auto takes the GPUs there are
    cpu = ray_plan("cpu", None, 4, 1.0, cluster)
    assert cpu.num_gpus == 0 and cpu.actors == 4 and cpu.num_cpus < 4  # room left for Ray Data
    assert ray_plan("auto", None, 1, 1.0, {"CPU": 2.0}).num_gpus == 0
    with pytest.raises(DatasetError, match="the Ray cluster has 0 GPUs"):
        ray_plan("cuda", None, 1, 1.0, {"CPU": 2.0})
    with pytest.raises(DatasetError, match="more than 0"):
        ray_plan("cuda", None, 1, 0.0, cluster)


def _corpus(folder: Path) -> Path:
    source = folder / "corpus.parquet"
    texts = [f"document {i}: " + "words about things " * 30 for i in range(160)]
    pq.write_table(pa.table({"text": texts}), source, row_group_size=20)
    return source


def _workers_of(out: Path) -> list[dict]:
    return [shard_record(str(p))["worker"] for p in sorted(out.glob("*.parquet"))]


@pytest.mark.slow  # worker processes
def test_the_local_engine_runs_one_worker_per_visible_gpu(tmp_path: Path, tiny_export: Path) -> None:
    out, source = tmp_path / "out", _corpus(tmp_path)

    def command(output: Path) -> list[str]:
        return [
            sys.executable, "-m", "gist_onnx", "embed-dataset", "-m", str(tiny_export), "--input",
            str(source), "--output", str(output), "--provider", "cuda", "--rows-per-shard", "20",
        ]  # fmt: skip

    job = subprocess.run(command(out), capture_output=True, text=True, env=fake_cuda_env("0,1"), timeout=600)
    assert job.returncode == 0, job.stderr
    assert "on cuda" in job.stderr
    workers = _workers_of(out)
    assert len(workers) == 8 and {w["device"] for w in workers} == {"cuda"}
    gpu_of = {w["pid"]: w["cuda_visible_devices"] for w in workers}
    assert set(gpu_of.values()) <= {"0", "1"} and len(gpu_of) <= 2  # at most one worker per GPU
    assert len(set(gpu_of.values())) == len(gpu_of)  # and each worker a GPU of its own
    assert json.loads((out / "_manifest.json").read_text())["device"] == "cuda"
    none = subprocess.run(command(tmp_path / "none"), capture_output=True, text=True, env=fake_cuda_env(""))
    assert none.returncode == 1 and "no GPU is visible" in none.stderr


@pytest.mark.slow
def test_ray_actors_ask_for_gpus_and_each_gets_its_own(tmp_path: Path, tiny_export: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    from gist_onnx.serve.process import free_port

    port = free_port()
    # A test cluster on loopback: no token to share between the head and the driver.
    env = {**fake_cuda_env(), "RAY_AUTH_MODE": "disabled"}
    # A cluster of its own, with two logical GPUs, stopped with its process group at the end.
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--num-gpus=2", "--include-dashboard=false", f"--temp-dir=/tmp/ray-gist-{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        out = tmp_path / "out"
        command = [
            sys.executable, "-m", "gist_onnx", "embed-dataset", "-m", str(tiny_export), "--input",
            str(_corpus(tmp_path)), "--output", str(out), "--provider", "cuda", "--rows-per-shard", "20",
            "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
        ]  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # the head takes a few seconds to listen
            job = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
            if job.returncode == 0 or time.monotonic() > deadline or "ConnectionError" not in job.stderr:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stderr
        workers = _workers_of(out)
        assert len(workers) == 8 and {w["device"] for w in workers} == {"cuda"}
        gpu_of = {w["pid"]: w["cuda_visible_devices"] for w in workers}
        assert set(gpu_of.values()) <= {"0", "1"}  # Ray gave each actor one of the two GPUs
        assert len(set(gpu_of.values())) == len(gpu_of)
    finally:
        import os
        import signal

        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)

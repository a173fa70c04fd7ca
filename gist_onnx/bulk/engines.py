"""The engines only schedule ``embed_shard``: worker processes here, or an actor pool on Ray.

Both build one Embedder per worker, with ONNX Runtime threads per worker set so that workers x
threads fits the cores, and both are at-least-once: a shard may be computed twice after a crash,
but its file appears whole under a stable name, so it is never held twice. On CUDA each worker
gets a GPU of its own: here one worker per visible GPU, its ``CUDA_VISIBLE_DEVICES`` set to it;
on Ray each actor asks for ``gpus_per_worker`` GPUs, and Ray assigns them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Any

from gist_onnx.bulk.shards import Shard, ShardResult, embed_shard
from gist_onnx.bulk.storage import DatasetError, Options
from gist_onnx.session import RuntimeInfo

# A worker that dies (killed, out of memory) breaks the pool; its shards are retried on a new
# pool this many times before the job gives up.
POOL_RESTARTS = 3
# What a GPU actor reserves of the CPUs: its session computes on the GPU.
CPUS_PER_GPU_ACTOR = 0.5


@dataclass(frozen=True)
class WorkSpec:
    """What every worker needs to embed shards: picklable, sent once per worker."""

    model_dir: str
    output: str
    options: Options
    text_column: str
    id_column: str | None
    precision: str
    provider: str
    threads: int
    batch_size: int
    strict: bool


_worker: tuple[Any, WorkSpec] | None = None  # (Embedder, spec) of this worker process


def _start_worker(spec: WorkSpec, gpus: Any = None) -> None:
    """Build this worker's Embedder; ``gpus``, a queue of GPU ids, gives it one of its own."""
    global _worker
    if gpus is not None:  # before the session exists: CUDA reads it when it starts
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    _worker = (_load(spec), spec)


def _load(spec: WorkSpec) -> Any:
    from gist_onnx import Embedder

    return Embedder(spec.model_dir, provider=spec.provider, precision=spec.precision, threads=spec.threads)


def _embed_in_worker(shard: Shard) -> ShardResult:
    if _worker is None:
        raise RuntimeError("the pool's initializer builds the embedder")
    embedder, spec = _worker
    return embed_shard(
        shard,
        embedder,
        spec.output,
        spec.text_column,
        spec.id_column,
        spec.batch_size,
        spec.strict,
        spec.options,
    )


def visible_gpus() -> list[str]:
    """The GPUs this machine offers: ``CUDA_VISIBLE_DEVICES`` if set, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (
        [line.strip() for line in found.stdout.splitlines() if line.strip()] if found.returncode == 0 else []
    )


def run_local(shards: list[Shard], spec: WorkSpec, workers: int) -> Iterator[ShardResult]:
    """Embed shards on ``workers`` spawned processes, yielding results as shards finish; on CUDA,
    one worker per visible GPU, each with its own."""
    remaining = {shard.id: shard for shard in shards}
    gpus = visible_gpus() if spec.provider == "cuda" else []
    if spec.provider == "cuda":
        if not gpus:
            raise DatasetError("provider cuda: no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")
        workers = min(workers, len(gpus))
    context = multiprocessing.get_context("spawn")  # ONNX Runtime's threads do not survive fork
    for _ in range(POOL_RESTARTS + 1):
        queue = context.Queue()
        for gpu in gpus:
            queue.put(gpu)
        initargs = (spec, queue if gpus else None)
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=initargs
        ) as pool:
            pending = {pool.submit(_embed_in_worker, shard): shard for shard in remaining.values()}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        shard = pending.pop(future)
                        result = future.result()
                        del remaining[shard.id]
                        yield result
            except BrokenProcessPool:
                continue  # a worker died: a new pool takes the shards not yet finished
        if not remaining:
            return
    raise DatasetError(f"workers kept dying; {len(remaining)} shards were not embedded (rerun to resume)")


class _RayShardEmbedder:
    """Ray Data's callable class: the Embedder is built once per actor, in ``__init__``."""

    def __init__(self, spec: dict) -> None:
        _start_worker(WorkSpec(**{**spec, "options": tuple(map(tuple, spec["options"]))}))

    def __call__(self, batch: dict) -> dict:
        fields = ("id", "source", "start", "stop", "byte_start", "byte_stop")
        results = [
            _embed_in_worker(_shard(dict(zip(fields, row)))) for row in zip(*(batch[f] for f in fields))
        ]
        return {
            "shard_id": [r.shard_id for r in results],
            "written": [r.written for r in results],
            "bad": [json.dumps(r.bad) for r in results],
        }


def _shard(row: dict) -> Shard:
    def number(value: Any) -> int | None:
        return None if value is None or value != value else int(value)  # Ray may hand NaN for None

    return Shard(
        str(row["id"]), str(row["source"]), int(row["start"]), int(row["stop"]),
        number(row["byte_start"]), number(row["byte_stop"]),
    )  # fmt: skip


@dataclass(frozen=True)
class RayPlan:
    """How the Ray engine runs: its actors, what each reserves, and where the model resolves."""

    actors: int
    num_cpus: float
    num_gpus: float


def ray_plan(
    provider: str, workers: int | None, threads: int, gpus_per_worker: float, resources: dict[str, float]
) -> RayPlan:
    """The actor pool for a cluster's resources: on CUDA (asked for, or ``auto`` on a cluster with
    GPUs) each actor asks for ``gpus_per_worker`` GPUs and the pool fills the GPUs unless
    ``workers`` says otherwise; on the CPU each actor reserves a little less than its threads (a
    pool that reserves every CPU starves Ray Data's own tasks and hangs)."""
    gpus = resources.get("GPU", 0.0)
    if provider == "cuda" or (provider == "auto" and gpus > 0):
        if gpus_per_worker <= 0:
            raise DatasetError(f"--gpus-per-worker must be more than 0, got {gpus_per_worker}")
        if gpus < gpus_per_worker:
            raise DatasetError(f"the Ray cluster has {gpus:g} GPUs; an actor asks for {gpus_per_worker:g}")
        actors = workers or int(gpus // gpus_per_worker)
        return RayPlan(actors, CPUS_PER_GPU_ACTOR, gpus_per_worker)
    cpus = resources.get("CPU", 1.0)
    actors = workers or max(1, int(cpus // threads))
    return RayPlan(actors, max(0.1, min(threads, cpus / (actors + 1))), 0.0)


def start_ray(address: str | None) -> dict[str, float]:
    """Join (or start) the cluster; its resources."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray engine needs Ray Data: pip install 'gist-onnx[ray]'") from exc

    # A cluster started here serves this machine only: it listens on loopback.
    local = {"_node_ip_address": "127.0.0.1"} if address is None else {}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False, **local)
    return ray.cluster_resources()


def resolve_on_ray(spec: WorkSpec, plan: RayPlan) -> RuntimeInfo:
    """Open the model where the actors will run, with their resources, to learn what it gets."""
    import ray

    task = ray.remote(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)(resolve_runtime)
    return ray.get(task.remote(spec.model_dir, spec.provider, spec.precision))


def resolve_runtime(model_dir: str, provider: str, precision: str) -> RuntimeInfo:
    """Open the model once, as a worker will, to learn the device and graph it really gets."""
    from gist_onnx import Embedder

    # The workers verify the checksums; here only what the session resolves matters.
    return Embedder(model_dir, provider=provider, precision=precision, threads=1, verify_checksums=False).info


def run_ray(shards: list[Shard], spec: WorkSpec, plan: RayPlan) -> Iterator[ShardResult]:
    """Embed shards with Ray Data: ``map_batches`` over an actor pool, one shard per call.

    Ray's own writer is not used: its file names change every run, so a rerun would duplicate
    rows.
    """
    import ray
    from ray.data import ActorPoolStrategy

    dataset = ray.data.from_items([asdict(shard) for shard in shards], override_num_blocks=len(shards))
    results = dataset.map_batches(
        _RayShardEmbedder,
        fn_constructor_kwargs={"spec": asdict(spec)},
        batch_size=1,
        compute=ActorPoolStrategy(size=min(plan.actors, len(shards))),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
    )
    for row in results.iter_rows():
        yield ShardResult(row["shard_id"], int(row["written"]), [tuple(b) for b in json.loads(row["bad"])])

"""The engines only schedule ``embed_shard``: worker processes here, or an actor pool on Ray.

Both build one Embedder per worker, with ONNX Runtime threads per worker set so that workers x
threads fits the cores, and both are at-least-once: a shard may be computed twice after a crash,
but its file is written atomically under a stable name, so it is never held twice.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

from gist_onnx.bulk.shards import DatasetError, Shard, ShardResult, embed_shard

# A worker that dies (killed, out of memory) breaks the pool; its shards are retried on a new
# pool this many times before the job gives up.
POOL_RESTARTS = 3


@dataclass(frozen=True)
class WorkSpec:
    """What every worker needs to embed shards: picklable, sent once per worker."""

    model_dir: str
    out_dir: str
    text_column: str
    id_column: str | None
    precision: str
    provider: str
    threads: int
    batch_size: int
    strict: bool


_worker: tuple[object, WorkSpec] | None = None  # (Embedder, spec) of this worker process


def _start_worker(spec: WorkSpec) -> None:
    global _worker
    from gist_onnx import Embedder

    embedder = Embedder(
        spec.model_dir, provider=spec.provider, precision=spec.precision, threads=spec.threads
    )
    _worker = (embedder, spec)


def _embed_in_worker(shard: Shard) -> ShardResult:
    assert _worker is not None, "the pool's initializer builds the embedder"
    embedder, spec = _worker
    return embed_shard(
        shard, embedder, Path(spec.out_dir), spec.text_column, spec.id_column, spec.batch_size, spec.strict
    )


def run_local(shards: list[Shard], spec: WorkSpec, workers: int) -> Iterator[ShardResult]:
    """Embed shards on ``workers`` spawned processes, yielding results as shards finish."""
    remaining = {shard.id: shard for shard in shards}
    for _ in range(POOL_RESTARTS + 1):
        context = multiprocessing.get_context("spawn")  # ONNX Runtime's threads do not survive fork
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(spec,)
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
        _start_worker(WorkSpec(**spec))

    def __call__(self, batch: dict) -> dict:
        results = [
            _embed_in_worker(Shard(id_, source, int(start), int(stop)))
            for id_, source, start, stop in zip(batch["id"], batch["source"], batch["start"], batch["stop"])
        ]
        return {
            "shard_id": [r.shard_id for r in results],
            "written": [r.written for r in results],
            "bad": [json.dumps(r.bad) for r in results],
        }


def run_ray(
    shards: list[Shard], spec: WorkSpec, workers: int, address: str | None, on_start: Callable[[], None]
) -> Iterator[ShardResult]:
    """Embed shards with Ray Data: ``map_batches`` over an actor pool, one shard per call.

    Ray's own writer is not used: its file names change every run, so a rerun would duplicate
    rows. Each actor reserves a little less than its threads: on a small cluster a pool that
    reserves every CPU starves Ray Data's own tasks and hangs.
    """
    try:
        import ray
        from ray.data import ActorPoolStrategy
    except ImportError as exc:
        raise ImportError("the ray engine needs Ray Data: pip install 'gist-onnx[ray]'") from exc

    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    on_start()
    cluster_cpus = ray.cluster_resources().get("CPU", 1)
    per_actor = max(0.1, min(spec.threads, cluster_cpus / (workers + 1)))
    dataset = ray.data.from_items([asdict(shard) for shard in shards], override_num_blocks=len(shards))
    results = dataset.map_batches(
        _RayShardEmbedder,
        fn_constructor_kwargs={"spec": asdict(spec)},
        batch_size=1,
        compute=ActorPoolStrategy(size=workers),
        num_cpus=per_actor,
    )
    for row in results.iter_rows():
        yield ShardResult(row["shard_id"], int(row["written"]), [tuple(b) for b in json.loads(row["bad"])])

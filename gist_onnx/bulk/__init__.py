"""Bulk embedding of whole corpora: resumable, exactly-once Parquet output, local or on Ray Data.

Needs the `bulk` extra (pyarrow): ``pip install 'gist-onnx[bulk]'``; the Ray engine needs
``gist-onnx[ray]``. ``import gist_onnx`` never imports this package.
"""

from importlib.util import find_spec

if find_spec("pyarrow") is None:
    raise ImportError("bulk embedding reads and writes Parquet with pyarrow: pip install 'gist-onnx[bulk]'")

from gist_onnx.bulk.job import DatasetResult, embed_dataset  # noqa: E402
from gist_onnx.bulk.shards import Shard, ShardResult, embed_shard, plan_shards  # noqa: E402
from gist_onnx.bulk.storage import DatasetError  # noqa: E402

__all__ = [
    "DatasetError",
    "DatasetResult",
    "Shard",
    "ShardResult",
    "embed_dataset",
    "embed_shard",
    "plan_shards",
]

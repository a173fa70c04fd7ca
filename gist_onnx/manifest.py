"""The model folder's manifest: everything the runtime needs to load, and nothing it must guess.

An export writes ``manifest.json`` last, so a folder without one was never finished. The manifest
lists every file the runtime reads with its size and sha256, so a damaged folder fails at load time
with the file's name instead of producing wrong vectors later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gist_onnx.errors import ModelFolderError
from gist_onnx.options import GRAPHS

MANIFEST_NAME = "manifest.json"
# 2: output_tokens. 3: graphs named apart from their precision (int8-openvino). An export writes
# the lowest version that describes its folder, so older runtimes still read what they can run.
FORMAT_VERSION = 3
POOLING_MODES = ("cls", "mean", "max")
OUTPUT_TOKENS = ("all", "first")


@dataclass(frozen=True)
class FileRecord:
    """One file of the folder, with what it must hash to."""

    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class GraphRecord:
    """One ONNX graph of the folder and how it was made."""

    file: str
    precision: str
    size: int
    sha256: str
    optimization: str = "none"
    quantization: dict[str, Any] | None = None

    @property
    def record(self) -> FileRecord:
        return FileRecord(self.file, self.size, self.sha256)

    @property
    def weight_bits(self) -> int | None:
        """Bits of the int8 weights (7 or 8), None for a float graph.

        Folders from before the field was recorded say it through ``reduce_range``.
        """
        if not self.quantization:
            return None
        recorded = self.quantization.get("weight_bits")
        return int(recorded) if recorded else (7 if self.quantization.get("reduce_range") else 8)


@dataclass(frozen=True)
class Manifest:
    """What an export wrote, as the runtime reads it."""

    source_model: str
    source_revision: str | None
    embedding_dim: int
    pooling: str
    normalize: bool
    max_seq_length: int
    vocab_size: int
    inputs: list[str]
    output: str
    tokenizer: FileRecord
    graphs: dict[str, GraphRecord]
    lowercase: bool = False  # sentence-transformers' do_lower_case: lower() before tokenizing
    # "first": the graphs compute the last layer for the first token only (CLS pooling needs no
    # other), and return (batch, 1, dim).
    output_tokens: str = "all"
    tools: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def files(self) -> list[FileRecord]:
        """Every file the runtime may read: the tokenizer and each graph."""
        return [self.tokenizer, *(graph.record for graph in self.graphs.values())]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from parsed JSON; KeyError/TypeError/ValueError on a malformed document."""
        graphs = {name: GraphRecord(**graph) for name, graph in data["graphs"].items()}
        fields = {key: value for key, value in data.items() if key not in ("graphs", "tokenizer")}
        manifest = cls(tokenizer=FileRecord(**data["tokenizer"]), graphs=graphs, **fields)
        manifest._check()
        return manifest

    def _check(self) -> None:
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling {self.pooling!r} is not one of {POOLING_MODES}")
        if self.output_tokens not in OUTPUT_TOKENS:
            raise ValueError(f"output_tokens {self.output_tokens!r} is not one of {OUTPUT_TOKENS}")
        if self.output_tokens == "first" and self.pooling != "cls":
            raise ValueError(f"output_tokens 'first' needs cls pooling, not {self.pooling!r}")
        if not self.graphs:
            raise ValueError("no graphs are listed")
        for name, graph in self.graphs.items():
            if GRAPHS.get(name) != graph.precision:
                raise ValueError(f"graph {name!r} has precision {graph.precision!r}")
        if self.embedding_dim <= 0 or self.max_seq_length <= 0 or self.vocab_size <= 0:
            raise ValueError("embedding_dim, max_seq_length and vocab_size must be positive")
        if "input_ids" not in self.inputs:
            raise ValueError(f"inputs {self.inputs} lack input_ids")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large graphs never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> FileRecord:
    """Describe a file as the manifest will list it (name relative to its folder)."""
    return FileRecord(path.name, path.stat().st_size, sha256_of(path))


def read_manifest(model_dir: Path) -> Manifest:
    """Read and validate ``model_dir/manifest.json``; ModelFolderError names what is wrong."""
    if not model_dir.is_dir():
        raise ModelFolderError(model_dir, "is not a folder; pass a folder written by `gist-onnx export`")
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelFolderError(
            path,
            "is missing: this is not a gist-onnx model folder, or its export never finished; "
            "run `gist-onnx export` again",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(path, f"is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(data, dict):
        raise ModelFolderError(path, "does not hold a JSON object; re-export the model")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise ModelFolderError(path, "has no integer format_version; re-export the model")
    if version > FORMAT_VERSION:
        raise ModelFolderError(
            path,
            f"has format version {version}, newer than the {FORMAT_VERSION} this gist-onnx reads; "
            "upgrade gist-onnx",
        )
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFolderError(path, f"is malformed: {exc!r}; re-export the model") from exc


def check_file(model_dir: Path, record: FileRecord, *, checksum: bool) -> Path:
    """Check one listed file exists with its recorded size (and sha256); return its path."""
    path = model_dir / record.file
    if not path.is_file():
        raise ModelFolderError(path, "is listed in the manifest but missing; re-export the model")
    size = path.stat().st_size
    if size != record.size:
        raise ModelFolderError(
            path,
            f"has {size} bytes, the manifest says {record.size}: truncated or replaced; re-export the model",
        )
    if checksum:
        actual = sha256_of(path)
        if actual != record.sha256:
            raise ModelFolderError(
                path,
                f"sha256 is {actual[:16]}…, the manifest says {record.sha256[:16]}…: "
                "the file is damaged; re-export the model",
            )
    return path

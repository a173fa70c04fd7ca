"""Where a job's files live: local paths, or any URI pyarrow's filesystems know (``s3://``,
``gs://``, ``abfs://``, ``hdfs://``).

Credentials and endpoints come from the standard places (the environment, profiles); what a URI
cannot carry comes as options, passed to pyarrow as the URI's query (``endpoint_override=...``
for an S3-compatible store, say). A written file appears whole or not at all: an object store
makes an object visible only once its upload completes, so shards are written to their final key
in one stream; a file system (local, HDFS) gets a temporary name renamed into place.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from gist_onnx.errors import GistOnnxError

# pyarrow's type names of the stores where an object appears only once its upload is complete.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
Options = tuple[tuple[str, str], ...]
TEMPORARY_MARK = ".tmp-"  # in the name a file system writer uses until its file is complete


class DatasetError(GistOnnxError):
    """An input or output cannot be used as asked (missing file, unknown format, missing column)."""


@dataclass(frozen=True)
class Entry:
    """A file as its store reports it."""

    uri: str  # a local path, or scheme://bucket/key
    size: int
    mtime_ns: int

    @property
    def identity(self) -> str:
        """What makes a file the same file: where it is, how big, when it was last written."""
        return f"{self.uri}|{self.size}|{self.mtime_ns}"

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


def is_uri(location: str) -> bool:
    return "://" in location


def parse_options(pairs: Sequence[str]) -> Options:
    """``KEY=VALUE`` strings (``--storage-option``) as options; DatasetError on one without ``=``."""
    options = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DatasetError(f"a storage option is KEY=VALUE, got {pair!r}")
        options.append((key, value))
    return tuple(options)


@lru_cache(maxsize=64)
def _filesystem(root: str, options: Options) -> pafs.FileSystem:
    query = ("&" if "?" in root else "?") + urlencode(options) if options else ""
    return pafs.FileSystem.from_uri(root + query)[0]


def resolve(location: str, options: Options = ()) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it; one filesystem per store and options, per process."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    scheme, rest = location.split("://", 1)
    authority, _, key = rest.partition("/")
    try:
        filesystem = _filesystem(f"{scheme}://{authority}", options)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DatasetError(f"{location}: {_first_line(exc)}") from exc
    return filesystem, _path(scheme, authority, key.rstrip("/"))


def _path(scheme: str, authority: str, key: str) -> str:
    # pyarrow's paths: "bucket/key" on S3 and GCS, "container/key" on Azure, "/key" on HDFS.
    if scheme in ("abfs", "abfss"):
        return f"{authority.split('@', 1)[0]}/{key}"
    if scheme in ("hdfs", "viewfs"):
        return f"/{key}"
    return f"{authority}/{key}" if key else authority


def uri_of(location: str, path: str) -> str:
    """The URI of ``path`` on the store of ``location`` (a local path stays a path)."""
    if not is_uri(location):
        return path
    scheme, rest = location.split("://", 1)
    authority = rest.split("/", 1)[0]
    if scheme in ("abfs", "abfss"):
        return f"{scheme}://{authority}/{path.split('/', 1)[1] if '/' in path else ''}"
    if scheme in ("hdfs", "viewfs"):
        return f"{scheme}://{authority}{path}"
    return f"{scheme}://{path}"


def join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name


def expand(patterns: Sequence[str], options: Options = ()) -> list[Entry]:
    """Files and globs, local or remote, as the files they name (each once, in order)."""
    found: dict[str, Entry] = {}
    for pattern in patterns:
        matches = _matches(pattern, options)
        if not matches:
            raise DatasetError(f"{pattern}: matches no file")
        found.update((entry.uri, entry) for entry in matches)
    return list(found.values())


def _matches(pattern: str, options: Options) -> list[Entry]:
    filesystem, path = resolve(pattern, options)
    if not glob.has_magic(path):
        return [entry] if (entry := _stat(filesystem, pattern, path)) else []
    base = path[: len(path) - len(path.lstrip("/"))] + "/".join(
        part for part in _fixed_prefix(path.lstrip("/").split("/"))
    )
    try:
        infos = filesystem.get_file_info(
            pafs.FileSelector(base, recursive="**" in path, allow_not_found=True)
        )
    except OSError as exc:
        raise DatasetError(f"{pattern}: cannot be listed: {_first_line(exc)}") from exc
    return sorted(
        (_entry(pattern, info) for info in infos if info.is_file and fnmatch.fnmatchcase(info.path, path)),
        key=lambda entry: entry.uri,
    )


def _fixed_prefix(parts: list[str]) -> Iterator[str]:
    for part in parts:
        if glob.has_magic(part):
            return
        yield part


def _stat(filesystem: pafs.FileSystem, location: str, path: str) -> Entry | None:
    try:
        info = filesystem.get_file_info(path)
    except OSError as exc:
        raise DatasetError(f"{location}: cannot be read: {_first_line(exc)}") from exc
    return _entry(location, info) if info.is_file else None


def _entry(location: str, info: pafs.FileInfo) -> Entry:
    mtime = info.mtime_ns if info.mtime_ns is not None else 0
    return Entry(uri_of(location, info.path), info.size or 0, mtime)


def check_output(location: str, options: Options = ()) -> None:
    """DatasetError, before any work, if the output cannot be used (no such bucket, no access); a
    local folder is created."""
    filesystem, path = resolve(location, options)
    if not is_uri(location):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"{location}: cannot be created: {exc}") from exc
        return
    root = path.split("/", 1)[0] if filesystem.type_name in OBJECT_STORES else "/"
    try:
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise DatasetError(f"{location}: {root} does not exist")
        filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise DatasetError(f"{location}: cannot be listed: {_first_line(exc)}") from exc


def listing(location: str, options: Options = ()) -> list[Entry]:
    """The files directly in a folder (none if it does not exist)."""
    filesystem, path = resolve(location, options)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [_entry(location, info) for info in infos if info.is_file]


def open_input(uri: str, options: Options = ()) -> pa.NativeFile:
    """A file to read with seeks: on an object store, each read is a ranged GET."""
    filesystem, path = resolve(uri, options)
    try:
        return filesystem.open_input_file(path)
    except OSError as exc:
        raise DatasetError(f"{uri}: cannot be read: {_first_line(exc)}") from exc


def is_temporary(name: str) -> bool:
    """Whether a file name is one a writer uses until its file is complete (left by a dead one)."""
    return name.startswith(".") and TEMPORARY_MARK in name


def _write_whole(uri: str, options: Options, write: Callable[[pafs.FileSystem, str], None]) -> None:
    """Run ``write(filesystem, path)`` so that ``uri`` appears whole or not at all."""
    filesystem, path = resolve(uri, options)
    if filesystem.type_name in OBJECT_STORES:
        write(filesystem, path)  # visible once the upload completes
        return
    folder, name = path.rsplit("/", 1)
    filesystem.create_dir(folder, recursive=True)
    temporary = f"{folder}/.{name}{TEMPORARY_MARK}{os.getpid()}"
    write(filesystem, temporary)
    filesystem.move(temporary, path)  # atomic on a file system: the name means complete


def write_table(table: pa.Table, uri: str, options: Options = ()) -> None:
    """Write a Parquet file that appears whole or not at all."""
    _write_whole(uri, options, lambda filesystem, path: pq.write_table(table, path, filesystem=filesystem))


def write_bytes(uri: str, data: bytes, options: Options = ()) -> None:
    """A small file (a manifest, a marker), whole or not at all."""

    def write(filesystem: pafs.FileSystem, path: str) -> None:
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)

    _write_whole(uri, options, write)


def delete(uri: str, options: Options = ()) -> None:
    """Remove a file if it exists."""
    filesystem, path = resolve(uri, options)
    try:
        filesystem.delete_file(path)
    except FileNotFoundError:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

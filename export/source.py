"""Find the model to export: a local folder, or a hub id (downloaded, or from the local cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gist_onnx.errors import ExportError


class ModelUnavailableError(ExportError):
    """The model is neither a local folder nor reachable on (or cached from) the hub."""


@dataclass(frozen=True)
class Source:
    """A model resolved to a local folder, with where it came from."""

    name: str
    revision: str | None
    folder: Path


def resolve_source(model: str, revision: str | None = None) -> Source:
    """A local folder is used as it is; anything else is a hub id fetched (or found cached)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelUnavailableError(f"{path} is a file; pass the model's folder")
        return Source(name=str(path.resolve()), revision=None, folder=path.resolve())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelUnavailableError(f"{model} does not exist: no such folder")

    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model, revision=revision)
    except Exception as exc:  # offline, unknown repo, gated, bad revision: all end the same way
        raise ModelUnavailableError(
            f"Could not get the model {model!r}"
            + (f" at revision {revision!r}" if revision else "")
            + " from the Hugging Face hub, and it is not in the local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}). "
            "This machine may be offline or the hub may not know that id. Download the model "
            "where the hub is reachable (for example `huggingface-cli download "
            f"{model} --local-dir ./{model.rsplit('/', 1)[-1]}`), copy the folder here, and pass "
            "its path instead of the id: `gist-onnx export ./path/to/model -o OUT`."
        ) from exc
    resolved = Path(folder).name  # snapshot folders are named by commit hash
    return Source(name=model, revision=resolved, folder=Path(folder))

"""Typed errors: each says what was expected, what was found, and what to do."""

from __future__ import annotations

from pathlib import Path


class GistOnnxError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelFolderError(GistOnnxError):
    """A model folder is missing, incomplete, damaged or from an unknown format."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ProviderError(GistOnnxError):
    """The requested ONNX Runtime execution provider cannot be used."""


class ExportError(GistOnnxError):
    """An export cannot start or did not produce a valid folder; nothing was written."""

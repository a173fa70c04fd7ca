"""Export sentence-transformers models to gist-onnx model folders (needs the `export` extra)."""

from importlib.util import find_spec

_missing = [
    name for name in ("torch", "transformers", "optimum", "sentence_transformers") if find_spec(name) is None
]
if _missing:
    raise ImportError(
        f"exporting needs {', '.join(_missing)}, which are not installed: "
        "pip install 'gist-onnx[export]' (and torch first; see the README)"
    )

from gist_onnx.errors import ExportError  # noqa: E402
from gist_onnx.export.pipeline import export_model  # noqa: E402
from gist_onnx.options import DEFAULT_MODEL  # noqa: E402

__all__ = ["DEFAULT_MODEL", "ExportError", "export_model"]

"""An HTTP embedding server: OpenAI- and TEI-compatible, micro-batching, safe under overload.

Needs the `serve` extra: ``pip install 'gist-onnx[serve]'``. ``import gist_onnx`` never imports
this package.
"""

from importlib.util import find_spec

_missing = [
    name for name in ("starlette", "uvicorn", "orjson", "prometheus_client") if find_spec(name) is None
]
if _missing:
    raise ImportError(
        f"serving needs {', '.join(_missing)}, which are not installed: pip install 'gist-onnx[serve]'"
    )

from gist_onnx.serve.app import EmbeddingService, ServeConfig, create_app  # noqa: E402
from gist_onnx.serve.server import serve  # noqa: E402

__all__ = ["EmbeddingService", "ServeConfig", "create_app", "serve"]

"""gist-onnx: GIST-Embedding-v0 (and other BERT sentence-transformers) on ONNX Runtime, without torch."""

from gist_onnx.cache import VectorCache
from gist_onnx.embedder import Embedder
from gist_onnx.errors import GistOnnxError, ModelFolderError, ProviderError
from gist_onnx.session import RuntimeInfo

__version__ = "0.1.0"
__all__ = [
    "Embedder",
    "GistOnnxError",
    "ModelFolderError",
    "ProviderError",
    "RuntimeInfo",
    "VectorCache",
    "__version__",
]

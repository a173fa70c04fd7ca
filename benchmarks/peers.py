"""The best peers a user could switch to on this CPU, beside PyTorch fp32 and sentence-transformers.

- **PyTorch bf16**: sentence-transformers with ``model_kwargs={"dtype": torch.bfloat16}``, only
  where the CPU multiplies bf16 natively (AMX, AVX512_BF16); elsewhere it is emulated, slowly.
- **OpenVINO**: its runtime on sentence-transformers' own ONNX export (a standard optimum graph,
  every token computed to the last layer), default hints: bf16 inference where the CPU has native
  bf16 (AMX or AVX512_BF16), f32 elsewhere.
  sentence-transformers' ``backend="openvino"`` would be the natural way, but it needs
  optimum-intel, which pins optimum 2.3 and another torch: it cannot install beside optimum-onnx's
  optimum ~2.1. Its runtime on the same graph is what that backend runs.
- **OpenVINO int8**: NNCF's static int8 (``nncf.quantize``, transformer preset, 300 calibration
  sentences), what ``export_static_quantized_openvino_model`` does through optimum-intel.
- **fastembed**: its ONNX Runtime pipeline on the same standard graph, loaded from the local file.

Each loader returns the same call as every variant, ``encode(texts, batch_size)``; a peer whose
package is missing, or that this CPU cannot run well, is skipped with the reason in the report.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import Encode
from gist_onnx.manifest import Manifest
from gist_onnx.openvino import native_bf16

CALIBRATION_SENTENCES = 300  # as sentence-transformers' static OpenVINO export defaults to


def missing(*modules: str) -> str | None:
    """Why a peer cannot run here: the first module that is not installed, or None."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'gist-onnx[bench]')"
    return None


def pytorch_bf16_skip() -> str | None:
    if not native_bf16():
        return "this CPU has no native bf16 (AMX or AVX512_BF16): PyTorch would emulate it"
    return None


def load_pytorch_bf16(model_dir: Path) -> Encode:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"dtype": torch.bfloat16})
    return lambda texts, batch_size: model.encode(
        texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)


class Pipeline:
    """Tokenize, run one graph, pool and normalize: what a user writes around another runtime.

    The tokens, pooling and normalization are gist-onnx's own (``TextTokenizer`` and the
    manifest of the model's gist-onnx folder), so the peers differ from us only in the engine.
    Texts are sorted by length before batching, as sentence-transformers' encode does, so padding
    costs the peer no more than it costs us.
    """

    def __init__(self, folder: Path, infer: Callable[[dict[str, np.ndarray]], np.ndarray] | None) -> None:
        from gist_onnx.manifest import read_manifest
        from gist_onnx.tokenize import TextTokenizer

        self.manifest = read_manifest(folder)
        self.tokenizer = TextTokenizer(folder / self.manifest.tokenizer.file, self.manifest.max_seq_length)
        self.infer = infer

    def feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.manifest.lowercase:
            texts = [text.lower() for text in texts]
        return self.tokenizer.pad(self.tokenizer.encode(texts), self.manifest.inputs)

    def __call__(self, texts: list[str], batch_size: int) -> np.ndarray:
        from gist_onnx.pooling import normalize, pool

        assert self.infer is not None, "a pipeline built to make feeds only"
        order = np.argsort([-len(t) for t in texts], kind="stable")
        parts = []
        for start in range(0, len(texts), batch_size):
            feeds = self.feeds([texts[i] for i in order[start : start + batch_size]])
            vectors = pool(self.infer(feeds), feeds["attention_mask"], self.manifest.pooling)
            parts.append((normalize(vectors) if self.manifest.normalize else vectors).astype(np.float32))
        out = np.empty((len(texts), parts[0].shape[1]), np.float32)
        out[order] = np.concatenate(parts)
        return out


def openvino_precision() -> str:
    """The inference precision OpenVINO's CPU plugin picks by default on this CPU: bf16 or f32."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def load_openvino(graph: Path, folder: Path, config: dict[str, str] | None = None) -> Encode:
    """OpenVINO's runtime on ``graph`` (ONNX or IR) of the model in gist-onnx ``folder``, its CPU
    plugin's default precision, LATENCY hint (one request at a time, all cores: what optimum-intel
    sets for a single model); ``config`` adds or overrides CPU plugin properties."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(graph), "CPU", {"PERFORMANCE_HINT": "LATENCY", **(config or {})})
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.inputs]

    def infer(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return request.infer({name: feeds[name] for name in names})[compiled.outputs[0]]

    return Pipeline(folder, infer)


def load_onnxruntime(graph: Path, folder: Path) -> Encode:
    """ONNX Runtime's CPU provider on ``graph`` of the model in gist-onnx ``folder``, defaults."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return Pipeline(folder, lambda feeds: session.run(None, {n: feeds[n] for n in names})[0])


def quantize_openvino_int8(graph: Path, folder: Path, sentences: list[str], out: Path) -> Path:
    """NNCF's static int8 of ``graph`` (the model in gist-onnx ``folder``; transformer preset),
    calibrated on ``sentences`` one at a time; written as OpenVINO IR under ``out`` (model.xml),
    written last so a half-made one is never taken for a made one."""
    import nncf
    import openvino as ov

    xml = out / "model.xml"
    if xml.is_file():
        return xml
    out.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(folder, infer=None)
    model = ov.Core().read_model(str(graph))
    names = [port.get_any_name() for port in model.inputs]
    calibration = [
        {name: value for name, value in pipeline.feeds([s]).items() if name in names}
        for s in sentences[:CALIBRATION_SENTENCES]
    ]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration),
    )
    partial = out / "partial.xml"
    ov.save_model(quantized, str(partial))
    partial.with_suffix(".bin").rename(xml.with_suffix(".bin"))
    partial.rename(xml)
    return xml


def load_fastembed(st_onnx_dir: Path, manifest: Manifest) -> Encode:
    """fastembed on sentence-transformers' ONNX export, registered as a custom local model with
    the model's own pooling, normalization and length.

    fastembed truncates at the stricter of tokenizer_config.json's ``model_max_length`` and
    ``max_length``: 128 for MiniLM's tokenizer (also our random GIST's), where sentence-transformers
    truncates at 256 (512 for GIST). Its long-text vectors would then differ (min cosine 0.60 to
    PyTorch's on MiniLM) and its speed would count half the work, so it truncates where the model
    does.
    """
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"local/{st_onnx_dir.parent.name}"
    if not any(m["model"] == name for m in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(
            name,
            pooling={"cls": PoolingType.CLS, "mean": PoolingType.MEAN}[manifest.pooling],
            normalization=manifest.normalize,
            sources=ModelSource(hf=name),
            dim=manifest.embedding_dim,
            model_file="onnx/model.onnx",
        )
    model = TextEmbedding(name, specific_model_path=str(st_onnx_dir))
    model.model.tokenizer.enable_truncation(manifest.max_seq_length)

    def encode(texts: list[str], batch_size: int) -> np.ndarray:
        vectors: Iterator[np.ndarray] = model.embed(texts, batch_size=batch_size)
        return np.stack(list(vectors)).astype(np.float32, copy=False)

    return encode

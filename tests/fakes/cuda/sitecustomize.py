"""A pretend CUDA for the GPU path's logic, tested on a CPU (never imported by the product).

Where ``GIST_ONNX_FAKE_CUDA=1`` and this folder is on ``PYTHONPATH``, every Python process that
starts (spawned workers, Ray's workers) sees onnxruntime offer CUDA; a session asked for CUDA
says it runs there and computes on the CPU, and I/O binding to "cuda" binds to the CPU. So
which device is asked for, how workers get their GPUs and what is resolved are exercised for
real, with the arithmetic on the CPU.
"""

import os

if os.environ.get("GIST_ONNX_FAKE_CUDA") == "1":
    import onnxruntime as ort

    _CUDA = "CUDAExecutionProvider"
    _available = ort.get_available_providers
    _from_numpy = ort.OrtValue.ortvalue_from_numpy
    _Session = ort.InferenceSession

    class _Binding:
        def __init__(self, binding):
            self.binding = binding

        def bind_ortvalue_input(self, name, value):
            self.binding.bind_ortvalue_input(name, value)

        def bind_output(self, name, device_type="cpu", device_id=0):
            self.binding.bind_output(name, "cpu", 0)

        def copy_outputs_to_cpu(self):
            return self.binding.copy_outputs_to_cpu()

    class _FakeCudaSession(_Session):
        def __init__(self, path, sess_options=None, providers=None, **kwargs):
            self._asked = list(providers or [])
            on_cpu = [p for p in self._asked if p != _CUDA] or None
            super().__init__(path, sess_options=sess_options, providers=on_cpu, **kwargs)

        def get_providers(self):
            return self._asked if self._asked[:1] == [_CUDA] else super().get_providers()

        def io_binding(self):
            return _Binding(super().io_binding())

        def run_with_iobinding(self, binding, run_options=None):
            return super().run_with_iobinding(binding.binding, run_options)

    ort.get_available_providers = lambda: [_CUDA, *(p for p in _available() if p != _CUDA)]
    ort.OrtValue.ortvalue_from_numpy = staticmethod(
        lambda array, device_type="cpu", device_id=0: _from_numpy(array)
    )
    ort.InferenceSession = _FakeCudaSession

"""Inference backends: the one place a detector's network runs.

A *runner* is a callable ``runner(*inputs) -> tuple[np.ndarray, ...]`` taking float32
NCHW numpy arrays and returning numpy arrays, so a detector's pre- and post-processing
stay the same whatever executes the network:

* ``TorchRunner`` (``backend="torch"``): the PyTorch module, on CPU or CUDA (float16 optional);
* ``OrtRunner`` (``backend="onnxruntime"``): an ONNX graph exported from the module
  (``facesieve.export``) run by a tuned ONNX Runtime session;
* ``OvRunner`` (``backend="openvino"``): the same graph compiled by OpenVINO (CPU).

Runners are safe to call from several threads at once (no state changes per call).
"""
from __future__ import annotations

import os

BACKENDS = ("torch", "onnxruntime", "openvino")
"""Names accepted by ``facesieve.load(..., backend=...)``, besides "auto" (``resolve_backend``)."""


FASTEST_CPU_BACKEND = {"retinaface-mnet025": "onnxruntime", "retinaface-r50": "onnxruntime", "mtcnn": "openvino"}
"""Per model, the backend measured fastest on CPU for image calls (docs/performance.md);
``load(..., backend="auto")`` picks it. (The video job's own "auto" uses OpenVINO for both
detectors: beside its decoding threads, ONNX Runtime's spinning threads cost more than they
save, measured +7% CPU per clip.)"""


def resolve_backend(backend: str, model: str, device: str = "cpu", cpu_choice: str | None = None) -> str:
    """``backend``, or for "auto": torch off the CPU (CUDA), else the model's fastest CPU
    backend (``FASTEST_CPU_BACKEND``, or ``cpu_choice`` when given) when its package is
    installed, else torch."""
    if backend != "auto":
        return check_backend(backend)
    if str(device) != "cpu":
        return "torch"
    fastest = cpu_choice or FASTEST_CPU_BACKEND.get(model, "torch")
    if fastest != "torch":
        import importlib.util

        if importlib.util.find_spec(fastest) is None:
            return "torch"
    return fastest


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return name


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def __getattr__(name: str):
    # runners import torch / onnxruntime lazily: `import facesieve.backends` stays cheap
    if name == "TorchRunner":
        from facesieve.backends.torch_runner import TorchRunner

        return TorchRunner
    if name in ("OrtRunner", "OrtOptions"):
        from facesieve.backends import ort_runner

        return getattr(ort_runner, name)
    if name in ("OvRunner", "OvOptions"):
        from facesieve.backends import openvino_runner

        return getattr(openvino_runner, name)
    raise AttributeError(name)


__all__ = [
    "BACKENDS", "FASTEST_CPU_BACKEND", "check_backend", "resolve_backend", "available_cores",
    "TorchRunner", "OrtRunner", "OrtOptions", "OvRunner", "OvOptions",
]

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

from facesieve.backends.cores import available_cores

BACKENDS = ("torch", "onnxruntime", "openvino")
"""Names accepted by ``facesieve.load(..., backend=...)``, besides "auto" (``resolve_backend``)."""


FASTEST_CPU_BACKEND = {"retinaface-mnet025": "onnxruntime", "retinaface-r50": "onnxruntime", "mtcnn": "openvino"}
"""Per model, the backend measured fastest on CPU for image calls (docs/performance.md);
``load(..., backend="auto")`` picks it. (The video job's own "auto" uses OpenVINO for both
detectors: beside its decoding threads, ONNX Runtime's spinning threads cost more than they
save, measured +7% CPU per clip.)"""

CPU_PREFERENCE = {
    "retinaface-mnet025": ("onnxruntime", "openvino", "torch"),
    "retinaface-r50": ("onnxruntime", "openvino", "torch"),
    "mtcnn": ("openvino", "torch"),
}
"""Per model, the CPU backends from fastest to slowest (docs/performance.md; every backend
gives the same faces): "auto" takes the first one installed. MTCNN on onnxruntime is slower
than on torch, so auto never picks it."""


def backend_installed(name: str) -> bool:
    """Whether ``name``'s packages are installed (torch always is; graph backends also need onnx)."""
    from facesieve.optional import BACKEND_EXTRAS, missing_modules

    return name not in BACKEND_EXTRAS or not missing_modules(BACKEND_EXTRAS[name])


def require_backend(name: str) -> str:
    """``name`` if it is a known backend whose packages are installed.

    Raises ValueError for an unknown name, ``facesieve.MissingDependencyError`` (an ImportError)
    naming the extra to install otherwise, e.g. ``backend="openvino" needs: pip install
    "facesieve[openvino]"``.
    """
    from facesieve.optional import BACKEND_EXTRAS, require_extra

    check_backend(name)
    if name in BACKEND_EXTRAS:
        require_extra(BACKEND_EXTRAS[name], f'backend="{name}"')
    return name


def resolve_backend(backend: str, model: str, device: str = "cpu", cpu_choice: str | None = None) -> str:
    """The backend to run: ``backend`` itself (checked: ``require_backend``), or for "auto":
    torch off the CPU (CUDA), else the model's fastest installed CPU backend
    (``cpu_choice`` first when given, then ``CPU_PREFERENCE[model]``), torch when no graph
    backend is installed. Auto never raises for a missing package."""
    if backend != "auto":
        return require_backend(backend)
    if str(device) != "cpu":
        return "torch"
    order = ((cpu_choice,) if cpu_choice else ()) + CPU_PREFERENCE.get(model, ("torch",))
    return next(b for b in (*order, "torch") if backend_installed(b))


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise ValueError listing them."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return name


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
    "BACKENDS", "CPU_PREFERENCE", "FASTEST_CPU_BACKEND", "backend_installed", "check_backend", "require_backend",
    "resolve_backend", "available_cores",
    "TorchRunner", "OrtRunner", "OrtOptions", "OvRunner", "OvOptions",
]

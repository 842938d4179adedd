"""Optional dependencies: what each extra brings, and one clear error when one is missing.

facesieve's core (``load`` + ``detect`` on the torch backend) needs only torch, numpy,
opencv-python-headless, pillow, tqdm and platformdirs. Everything else is an extra::

    pip install "facesieve[onnx]"      # backend="onnxruntime" (onnx, onnxruntime)
    pip install "facesieve[openvino]"  # backend="openvino" (openvino, onnx)
    pip install "facesieve[video]"     # facesieve video / extract_video (av)
    pip install "facesieve[eval]"      # WIDER FACE evaluation (scipy, matplotlib)
    pip install "facesieve[train]"     # training, auto-labelling (scipy, matplotlib)
    pip install "facesieve[parquet]"   # video manifests as parquet (pyarrow)
    pip install "facesieve[ray]"       # the Ray engine
    pip install "facesieve[all]"

A feature used without its extra raises ``MissingDependencyError`` (an ImportError) whose
message is one line naming what to install, e.g.
``backend="openvino" needs: pip install "facesieve[openvino]"``.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx", "onnxruntime"),
    "openvino": ("openvino", "onnx"),
    "video": ("av",),
    "eval": ("scipy", "matplotlib"),
    "train": ("scipy", "matplotlib"),
    "parquet": ("pyarrow",),
    "ray": ("ray",),
}
"""Extra name -> the modules it provides (import names)."""

BACKEND_EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
"""Graph backend -> the extra it needs (both export the network with onnx first)."""


class MissingDependencyError(ImportError):
    """An optional dependency of the feature in use is not installed.

    ``str(error)`` is one line saying what to install; ``extra`` is the facesieve extra
    (None when the packages are not a facesieve extra), ``name`` the missing module.
    """

    def __init__(self, message: str, name: str | None = None, extra: str | None = None) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(extra: str | None, pip: str | None = None) -> str:
    return f'pip install "facesieve[{extra}]"' if extra else f"pip install {pip}"


def require(module: str, feature: str, extra: str | None, pip: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``; raise MissingDependencyError naming the extra if absent.

    feature: what the user asked for, as they wrote it (e.g. 'backend="openvino"',
        "facesieve video"). extra: the facesieve extra that installs it, or None with
        ``pip`` naming the packages.
    Only a missing ``module`` (or one of its own missing dependencies) becomes
    MissingDependencyError; other import failures propagate unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        if missing.split(".")[0] != module.split(".")[0] and installed(module):
            raise  # the module is there but broken: not a missing extra
        raise MissingDependencyError(f"{feature} needs: {install_hint(extra, pip)}", name=module, extra=extra) from None


def require_extra(extra: str, feature: str) -> None:
    """Raise MissingDependencyError unless every module of ``extra`` is installed."""
    for module in EXTRAS[extra]:
        if not installed(module):
            raise MissingDependencyError(f"{feature} needs: {install_hint(extra)}", name=module, extra=extra)


def missing_modules(extra: str) -> list[str]:
    """Modules of ``extra`` that are not installed."""
    return [m for m in EXTRAS[extra] if not installed(m)]

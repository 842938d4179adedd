"""Generic ONNX export: torch module -> checked ONNX bytes, written atomically, cached by weights.

Graphs are exported with the TorchScript-based exporter (``dynamo=False``): it needs no
extra packages, handles our dynamic batch / height / width axes, and produces plain
opset-17 graphs that ONNX Runtime optimises fully.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from facesieve.io.atomic import atomic_write_bytes
from facesieve.weights.cache import cache_dir

EXPORTER_VERSION = 2
"""Bump whenever an exported graph changes (wrappers, names, opset): part of every cache key."""

OPSET = 17


def module_digest(module: nn.Module) -> str:
    """sha256 of a module's weights: every state-dict entry's name, dtype, shape and bytes."""
    h = hashlib.sha256(type(module).__name__.encode())
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def export_onnx(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int = OPSET,
) -> bytes:
    """Export ``module`` (eval mode, CPU, float32) and return the checked ONNX model bytes.

    example_inputs: one float32 tensor per graph input (their sizes only seed the trace;
    axes named in dynamic_axes stay symbolic). Needs onnx (the ``[onnx]`` / ``[openvino]``
    extras; MissingDependencyError otherwise).
    """
    from facesieve.optional import require

    onnx = require("onnx", "exporting to ONNX (backends onnxruntime / openvino, facesieve export)", "onnx")

    module = module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation / tracer notes
        torch.onnx.export(
            module,
            tuple(example_inputs),
            buf,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    data = buf.getvalue()
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    model.producer_name = "facesieve"
    model.doc_string = f"facesieve export v{EXPORTER_VERSION} (torch {torch.__version__})"
    return model.SerializeToString()


def cached_graph(tag: str, module: nn.Module, build: Callable[[], bytes]) -> Path:
    """Path of the graph cached for ``module``'s weights under ``tag``; built on first use.

    Key: tag + weights digest + exporter version + opset + torch major.minor, so new
    weights, a changed exporter or another torch never reuse a stale graph. The file
    lies beside the converted weights (``cache_dir()/converted``) and is written
    atomically: concurrent first calls each write a complete file and one wins.
    """
    torch_mm = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    key = f"{tag}-{module_digest(module)[:16]}-x{EXPORTER_VERSION}-op{OPSET}-t{torch_mm}"
    path = cache_dir() / "converted" / f"{key}.onnx"
    if not path.exists():
        atomic_write_bytes(path, build())
    return path


def write_graph(data: bytes, path: str | os.PathLike) -> Path:
    """Write model bytes to ``path`` atomically (parent folders created)."""
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def max_abs_diff(a: Sequence[np.ndarray | None], b: Sequence[np.ndarray | None]) -> float:
    """Largest |a - b| over paired outputs (None pairs skipped); shapes must match."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if x is None and y is None:
            continue
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ValueError(f"output shapes differ: {x.shape} vs {y.shape}")
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return worst

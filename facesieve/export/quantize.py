"""Static int8 quantisation of an exported RetinaFace graph (ONNX Runtime, QDQ format).

Weights int8 per output channel, activations uint8 with ranges calibrated (min/max) on a
few real images run through the detector's own preprocessing at their original size.
Measured here (docs/performance.md): no speed-up on an AVX2 CPU without VNNI and an AP
loss above the 0.5-point budget, so facesieve does not offer it as a backend; the export
command keeps it as an opt-in for CPUs with int8 dot-product instructions.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np


def quantize_retinaface(
    graph: bytes, detector, calibration_images: Iterable[np.ndarray], per_channel: bool = True
) -> bytes:
    """int8 QDQ graph from an NCHW float RetinaFace graph (``export_retinaface(..., "nchw")``).

    detector: the ``RetinaFaceDetector`` whose preprocessing feeds the calibration;
    calibration_images: RGB uint8 (H, W, 3) arrays (a handful suffice).
    """
    from facesieve.optional import require

    require("onnxruntime", "int8 quantization", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = []
    for im in calibration_images:
        buf = np.zeros((1, im.shape[0], im.shape[1], 3), np.float32)
        detector._fill(buf[0], im, 1.0)
        feeds.append({"input": np.ascontiguousarray(buf.transpose(0, 3, 1, 2))})
    if not feeds:
        raise ValueError("quantisation needs at least one calibration image")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="facesieve-quant-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(graph)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )
        return out.read_bytes()


def calibration_images(folder: str | os.PathLike, count: int = 8) -> list[np.ndarray]:
    """The first ``count`` images (sorted paths, recursive) of a folder as RGB arrays."""
    from facesieve.io.images import load_image

    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts)[:count]
    if not paths:
        raise FileNotFoundError(f"no images under {folder}")
    return [load_image(p) for p in paths]

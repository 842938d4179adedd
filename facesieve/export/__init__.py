"""Export detectors' networks to ONNX (``facesieve export``), graph caching and int8 quantisation."""
from __future__ import annotations

from facesieve.export.onnx import EXPORTER_VERSION, OPSET, cached_graph, export_onnx, max_abs_diff, module_digest

__all__ = ["EXPORTER_VERSION", "OPSET", "cached_graph", "export_onnx", "max_abs_diff", "module_digest"]

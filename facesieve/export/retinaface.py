"""RetinaFace -> ONNX: one graph with dynamic batch, height and width.

Graph: ``input`` float32 (N, 3, H, W) (mean-subtracted, the weights' channel order) ->
``loc`` (N, A, 4), ``conf`` (N, A, 2) softmax probabilities [background, face],
``landmarks`` (N, A, 10): exactly what ``RetinaFaceDetector.forward`` returns for an
unpadded batch, with A = 2 * sum over strides 8/16/32 of ceil(H/s) * ceil(W/s).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from facesieve.export.onnx import cached_graph, export_onnx

INPUT_NAMES = ("input",)
OUTPUT_NAMES = ("loc", "conf", "landmarks")
DYNAMIC_AXES = {
    "input": {0: "batch", 2: "height", 3: "width"},
    "loc": {0: "batch", 1: "anchors"},
    "conf": {0: "batch", 1: "anchors"},
    "landmarks": {0: "batch", 1: "anchors"},
}


class RetinaFaceGraph(nn.Module):
    """The network plus the softmax the detector applies: the function the graph computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, landmarks = self.model(x)
        return loc, torch.softmax(conf, dim=-1), landmarks


def export_retinaface(model: nn.Module, example_size: tuple[int, int] = (320, 256)) -> bytes:
    """ONNX bytes of a RetinaFace network (float32, CPU copy; the model itself is untouched)."""
    graph = RetinaFaceGraph(_cpu_float_copy(model)).eval()
    example = torch.zeros(1, 3, *example_size)
    return export_onnx(graph, [example], INPUT_NAMES, OUTPUT_NAMES, DYNAMIC_AXES)


def retinaface_graph_path(model: nn.Module, tag: str = "retinaface") -> Path:
    """Cached graph for these weights (exported on first use, see ``cached_graph``)."""
    return cached_graph(tag, model, lambda: export_retinaface(model))


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    import copy

    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cpu" and p.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)

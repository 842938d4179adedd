"""RetinaFace -> ONNX: one graph with dynamic batch, height and width.

Graph: ``input`` float32 (N, 3, H, W) (mean-subtracted, the weights' channel order;
(N, H, W, 3) with ``layout="nhwc"``, the detector's own buffer layout) ->
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
_OUTPUT_AXES = {name: {0: "batch", 1: "anchors"} for name in OUTPUT_NAMES}
DYNAMIC_AXES = {
    "nchw": {"input": {0: "batch", 2: "height", 3: "width"}, **_OUTPUT_AXES},
    "nhwc": {"input": {0: "batch", 1: "height", 2: "width"}, **_OUTPUT_AXES},
}


class RetinaFaceGraph(nn.Module):
    """The network plus the softmax the detector applies: the function the graph computes."""

    def __init__(self, model: nn.Module, layout: str = "nchw") -> None:
        super().__init__()
        if layout not in DYNAMIC_AXES:
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        self.model = model
        self.layout = layout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.layout == "nhwc":
            # ONNX Runtime folds this transpose into its input reorder: no extra pass
            x = x.permute(0, 3, 1, 2)
        loc, conf, landmarks = self.model(x)
        return loc, torch.softmax(conf, dim=-1), landmarks


def export_retinaface(model: nn.Module, layout: str = "nchw", example_size: tuple[int, int] = (256, 320)) -> bytes:
    """ONNX bytes of a RetinaFace network (float32, CPU copy; the model itself is untouched)."""
    graph = RetinaFaceGraph(_cpu_float_copy(model), layout).eval()
    h, w = example_size
    example = torch.zeros(1, 3, h, w) if layout == "nchw" else torch.zeros(1, h, w, 3)
    return export_onnx(graph, [example], INPUT_NAMES, OUTPUT_NAMES, DYNAMIC_AXES[layout])


def retinaface_graph_path(model: nn.Module, layout: str = "nchw", tag: str = "retinaface") -> Path:
    """Cached graph for these weights and layout (exported on first use, see ``cached_graph``)."""
    return cached_graph(f"{tag}-{layout}", model, lambda: export_retinaface(model, layout))


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    import copy

    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cpu" and p.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)

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
    """The network plus the softmax the detector applies: the function the graph computes.

    merged_heads: one output ``head`` (N, A, 16) = [loc 4, conf logits 2, landmarks 10]
    per anchor from one 1x1 conv per level (the three heads' weights stacked), instead
    of three heads, three outputs and a softmax: fewer ops and copies for the runner,
    which splits it (``facesieve.backends.retinaface``). Same numbers up to float rounding.
    """

    def __init__(self, model: nn.Module, layout: str = "nchw", merged_heads: bool = False) -> None:
        super().__init__()
        if layout not in DYNAMIC_AXES:
            raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
        self.model = model
        self.layout = layout
        self.heads = _merged_heads(model) if merged_heads else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if self.heads is None:
            loc, conf, landmarks = self.model(x)
            return loc, torch.softmax(conf, dim=-1), landmarks
        m = self.model
        features = [ssh(p) for ssh, p in zip(m.ssh, m.fpn(m.body(x)))]
        return (torch.cat([h(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, HEAD_WIDTH)
                           for h, f in zip(self.heads, features)], dim=1),)


HEAD_WIDTH = 16
"""Columns of the merged head output: loc (0:4), conf logits (4:6), landmarks (6:16)."""


def _merged_heads(model: nn.Module) -> nn.ModuleList:
    """Per level, one 1x1 conv whose output channels are, per anchor, [loc 4, logits 2, landmarks 10]."""
    heads = nn.ModuleList()
    for box, cls, lm in zip(model.bbox_head, model.class_head, model.landmark_head):
        n_anchors = box.out_channels // 4
        parts = ((box, 4), (cls, 2), (lm, 10))
        conv = nn.Conv2d(box.in_channels, HEAD_WIDTH * n_anchors, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([h.weight[a * k:(a + 1) * k] for a in range(n_anchors) for h, k in parts]))
            conv.bias.copy_(torch.cat([h.bias[a * k:(a + 1) * k] for a in range(n_anchors) for h, k in parts]))
        heads.append(conv.to(box.weight.device, box.weight.dtype))
    return heads


def export_retinaface(model: nn.Module, layout: str = "nchw", merged_heads: bool = False,
                      example_size: tuple[int, int] = (256, 320)) -> bytes:
    """ONNX bytes of a RetinaFace network (float32, CPU copy; the model itself is untouched)."""
    graph = RetinaFaceGraph(_cpu_float_copy(model), layout, merged_heads).eval()
    h, w = example_size
    example = torch.zeros(1, 3, h, w) if layout == "nchw" else torch.zeros(1, h, w, 3)
    axes = dict(DYNAMIC_AXES[layout])
    outputs = OUTPUT_NAMES
    if merged_heads:
        outputs = ("head",)
        axes = {"input": axes["input"], "head": {0: "batch", 1: "anchors"}}
    return export_onnx(graph, [example], INPUT_NAMES, outputs, axes)


def retinaface_graph_path(model: nn.Module, layout: str = "nchw", merged_heads: bool = False,
                          tag: str = "retinaface") -> Path:
    """Cached graph for these weights and options (exported on first use, see ``cached_graph``)."""
    key = f"{tag}-{layout}{'-merged' if merged_heads else ''}"
    return cached_graph(key, model, lambda: export_retinaface(model, layout, merged_heads))


def _cpu_float_copy(model: nn.Module) -> nn.Module:
    import copy

    p = next(model.parameters(), None)
    if p is not None and p.device.type == "cpu" and p.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)

"""MTCNN -> ONNX: three graphs, one per cascade stage, computing what ``MTCNNRunner`` returns.

* ``pnet``: ``input`` (N, 3, H, W) and ``edge`` (N, 1, H - 2, W - 2) (zeros for plain
  images; see ``PNet.forward``) -> ``prob`` (N, H', W') face probability, ``box``
  (N, 4, H', W') regression; batch, height and width dynamic.
* ``rnet``: ``input`` (N, 3, 24, 24) -> ``prob`` (N,), ``box`` (N, 4); batch dynamic.
* ``onet``: ``input`` (N, 3, 48, 48) -> ``prob`` (N,), ``box`` (N, 4), ``landmarks`` (N, 10).

Inputs are RGB, ``(pixel - 127.5) / 128``; ``prob`` is softmax(score)[:, 1].
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from facesieve.export.onnx import cached_graph, export_onnx
from facesieve.nets.mtcnn import MTCNNNets, face_probability

from facesieve.nets.constants import MTCNN_STAGES as STAGES


class PNetGraph(nn.Module):
    def __init__(self, pnet: nn.Module) -> None:
        super().__init__()
        self.pnet = pnet

    def forward(self, x: torch.Tensor, edge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.pnet(x, edge)
        return face_probability(out.score), out.box


class RNetGraph(nn.Module):
    def __init__(self, rnet: nn.Module) -> None:
        super().__init__()
        self.rnet = rnet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.rnet(x)
        return face_probability(out.score), out.box


class ONetGraph(nn.Module):
    def __init__(self, onet: nn.Module) -> None:
        super().__init__()
        self.onet = onet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.onet(x, landmarks=True)
        return face_probability(out.score), out.box, out.landmarks


def stage_graph(nets: MTCNNNets, stage: str) -> nn.Module:
    """The module a stage's graph computes (float32, CPU, eval)."""
    nets = nets.eval()
    if stage == "pnet":
        return PNetGraph(nets.pnet)
    if stage == "rnet":
        return RNetGraph(nets.rnet)
    if stage == "onet":
        return ONetGraph(nets.onet)
    raise ValueError(f"unknown MTCNN stage {stage!r}; stages: {', '.join(STAGES)}")


def export_mtcnn_stage(nets: MTCNNNets, stage: str) -> bytes:
    """ONNX bytes of one stage (from a float32, CPU, NCHW-contiguous copy of the nets: with
    channels-last weights the modules take layout-specific shortcuts that tracing would freeze
    to one input size)."""
    nets = copy.deepcopy(nets).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    graph = stage_graph(nets, stage)
    if stage == "pnet":
        h, w = 40, 52
        return export_onnx(
            graph, [torch.zeros(1, 3, h, w), torch.zeros(1, 1, h - 2, w - 2)], ("input", "edge"), ("prob", "box"),
            {"input": {0: "batch", 2: "height", 3: "width"}, "edge": {0: "batch", 2: "height2", 3: "width2"},
             "prob": {0: "batch", 1: "out_height", 2: "out_width"}, "box": {0: "batch", 2: "out_height", 3: "out_width"}},
        )
    size = 24 if stage == "rnet" else 48
    outputs = ("prob", "box") if stage == "rnet" else ("prob", "box", "landmarks")
    return export_onnx(
        graph, [torch.zeros(2, 3, size, size)], ("input",), outputs,
        {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
    )


def mtcnn_graph_paths(nets: MTCNNNets, tag: str = "mtcnn") -> dict[str, Path]:
    """Cached graphs of the three stages for these weights (exported on first use)."""
    return {
        stage: cached_graph(f"{tag}-{stage}", getattr(nets, stage), lambda s=stage: export_mtcnn_stage(nets, s))
        for stage in STAGES
    }

"""RetinaFace (Deng et al. 2019) as pure torch modules, in biubug6/Pytorch_Retinaface's layout.

Backbone (strides 8/16/32) -> 3-level FPN -> SSH context module per level ->
per-level 1x1 heads with 2 anchors per cell. Outputs are concatenated level-major,
then row-major cells, then the 2 anchors of a cell (biubug6's PriorBox order, the
order of ``facesieve.ops.anchors.AnchorGenerator``).

Our parameter names differ from biubug6's only where theirs are irregular
(``fpn.output1`` -> ``fpn.lateral.0``, ``ssh1.conv7X7_2`` -> ``ssh.0.conv7x7_2``,
``ClassHead.0.conv1x1`` -> ``class_head.0``); ``facesieve.weights.retinaface`` maps them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facesieve.nets.backbones import MobileNetV1, ResNet50, conv_bn

NUM_ANCHORS = 2
"""Anchors per feature-map cell (the two min_sizes of a level)."""


@dataclass(frozen=True)
class RetinaFaceSpec:
    """Architecture of one RetinaFace variant.

    fpn_channels: channels of the FPN, SSH and head inputs.
    negative_slope: leaky-ReLU slope in FPN and SSH (biubug6: 0.1 when fpn_channels <= 64, else 0 = ReLU).
    """

    backbone: str
    fpn_channels: int
    negative_slope: float


SPECS: dict[str, RetinaFaceSpec] = {
    "mobilenet0.25": RetinaFaceSpec("mobilenet0.25", 64, 0.1),
    "resnet50": RetinaFaceSpec("resnet50", 256, 0.0),
}


class FPN(nn.Module):
    """Lateral 1x1 conv-BN-act per level, top-down nearest upsampling + add, 3x3 merge on levels 1-2.

    forward: 3 maps (strides 8, 16, 32) -> 3 maps with ``out_channels`` channels, same sizes.
    """

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int, negative_slope: float) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(c, out_channels, 1, negative_slope=negative_slope) for c in in_channels)
        self.merge = nn.ModuleList(
            conv_bn(out_channels, out_channels, 3, negative_slope=negative_slope) for _ in range(2)
        )

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p3, p4, p5 = (lateral(f) for lateral, f in zip(self.lateral, features))
        p4 = self.merge[1](p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge[0](p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields from stacked 3x3 convs.

    forward: (B, C, h, w) -> (B, out_channels, h, w); out = ReLU(cat[3x3 (C/2), 5x5 (C/4), 7x7 (C/4)]).
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH out_channels must be a multiple of 4, got {out_channels}")
        quarter = out_channels // 4
        self.conv3x3 = conv_bn(in_channels, out_channels // 2, negative_slope=None)
        self.conv5x5_1 = conv_bn(in_channels, quarter, negative_slope=negative_slope)
        self.conv5x5_2 = conv_bn(quarter, quarter, negative_slope=None)
        self.conv7x7_2 = conv_bn(quarter, quarter, negative_slope=negative_slope)
        self.conv7x7_3 = conv_bn(quarter, quarter, negative_slope=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.conv5x5_1(x)
        out = torch.cat([self.conv3x3(x), self.conv5x5_2(shared), self.conv7x7_3(self.conv7x7_2(shared))], dim=1)
        return F.relu(out, inplace=True)


class RetinaFace(nn.Module):
    """RetinaFace detector network.

    backbone: "mobilenet0.25" or "resnet50".
    forward: (B, 3, H, W) float input (mean-subtracted, channel order of the weights)
    -> loc (B, A, 4) box offsets, conf (B, A, 2) logits [background, face],
    landmarks (B, A, 10) offsets, with A = 2 * sum over strides 8/16/32 of
    ceil(H/s) * ceil(W/s). Offsets are relative to anchors (see ``facesieve.ops.box_coder``).
    """

    def __init__(self, backbone: str = "mobilenet0.25") -> None:
        super().__init__()
        try:
            spec = SPECS[backbone]
        except KeyError:
            raise ValueError(f"unknown RetinaFace backbone {backbone!r}; known: {', '.join(SPECS)}") from None
        self.spec = spec
        self.body: MobileNetV1 | ResNet50 = MobileNetV1() if backbone == "mobilenet0.25" else ResNet50()
        c = spec.fpn_channels
        self.fpn = FPN(self.body.out_channels, c, spec.negative_slope)
        self.ssh = nn.ModuleList(SSH(c, c, spec.negative_slope) for _ in range(3))
        self.class_head = nn.ModuleList(nn.Conv2d(c, NUM_ANCHORS * 2, 1) for _ in range(3))
        self.bbox_head = nn.ModuleList(nn.Conv2d(c, NUM_ANCHORS * 4, 1) for _ in range(3))
        self.landmark_head = nn.ModuleList(nn.Conv2d(c, NUM_ANCHORS * 10, 1) for _ in range(3))

    @staticmethod
    def _flatten(maps: list[torch.Tensor], width: int) -> torch.Tensor:
        # (B, anchors*width, h, w) per level -> (B, sum(h*w*anchors), width): level, row, col, anchor
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = [ssh(p) for ssh, p in zip(self.ssh, self.fpn(self.body(x)))]
        loc = self._flatten([head(f) for head, f in zip(self.bbox_head, features)], 4)
        conf = self._flatten([head(f) for head, f in zip(self.class_head, features)], 2)
        landmarks = self._flatten([head(f) for head, f in zip(self.landmark_head, features)], 10)
        return loc, conf, landmarks

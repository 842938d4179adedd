"""MTCNN networks (Zhang et al., 2016): P-Net, R-Net and O-Net as pure ``torch.nn`` modules.

Input of every net: float32 (N, 3, H, W), RGB, ``(pixel - 127.5) / 128``.
Every net has three heads, as in the paper:

* ``score``: face / non-face logits (2 channels; softmax channel 1 is the face probability),
* ``box``: box regression (dx1, dy1, dx2, dy2), offsets of the window corners in units of
  the window's width / height,
* ``landmarks``: 5 points as (x1..x5, y1..y5), relative to the window (0..1).

The released weights have the landmark head on O-Net only; P-Net's and R-Net's landmark
heads exist for training and stay at their initial values when original weights are loaded
(``forward(..., landmarks=False)``, the default for those two, does not compute them).
The flatten before the fully connected layers is the plain NCHW ``flatten``: converters
reorder the original (Caffe, transposed-image) FC weights to it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from facesieve.nets.constants import MTCNN_STAGES  # noqa: F401  (the stage names: pnet, rnet, onet)

IMAGE_MEAN = 127.5
IMAGE_SCALE = 1.0 / 128.0
"""Normalisation of RGB 0..255 pixels: ``x = (pixel - IMAGE_MEAN) * IMAGE_SCALE``."""


class MTCNNOutput(NamedTuple):
    """Raw head outputs. P-Net: maps (N, C, H', W'); R-Net / O-Net: (N, C)."""

    score: torch.Tensor
    box: torch.Tensor
    landmarks: torch.Tensor | None


def face_probability(score: torch.Tensor) -> torch.Tensor:
    """Face probability from 2-channel logits (channel dim 1): softmax(score)[:, 1]."""
    return torch.softmax(score, dim=1)[:, 1]


def prelu(module: nn.PReLU, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``. For channels-last maps with fewer than 16 channels (P-Net's first
    layer: 10) it runs on a (pixels / k, k * C) view with the weights tiled k times, which
    PyTorch's CPU kernel vectorises (same values, ~3x faster than on the 4-D map)."""
    c = x.shape[1] if x.dim() == 4 else 0
    if 0 < c < 16 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        k = 16 // c + (16 % c > 0)
        if (x.numel() // c) % k == 0:
            n, _, h, w = x.shape
            y = F.prelu(x.permute(0, 2, 3, 1).reshape(-1, k * c), module.weight.repeat(k))
            return y.view(n, h, w, c).permute(0, 3, 1, 2)
    return module(x)


def max_pool(module: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``. A 2x2 / stride 2 pooling of a channels-last map with even height and
    width (no partial windows) runs as two elementwise maxima of strided views, several
    times faster than PyTorch's pooling kernel for few channels (P-Net's 10)."""
    if (module.kernel_size in (2, (2, 2)) and module.stride in (2, (2, 2)) and x.dim() == 4
            and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()):
        rows = torch.maximum(x[:, :, 0::2], x[:, :, 1::2])
        out = torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])
        return out.contiguous(memory_format=torch.channels_last)
    return module(x)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, output stride 2.

    (N, 3, H, W) -> maps of size H' = ceil((H - 2) / 2) - 4 (same for W); output cell
    (i, j) looks at the input window rows 2i .. 2i + 11, cols 2j .. 2j + 11.
    """

    input_size = 12
    stride = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.score = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)
        self.landmarks = nn.Conv2d(32, 10, 1)

    def forward(
        self, x: torch.Tensor, edge: torch.Tensor | None = None, landmarks: bool = False
    ) -> MTCNNOutput:
        """x: (N, 3, H, W). edge: optional additive (N or 1, 1, H - 2, W - 2) map added after
        the first PReLU: 0 where the conv1 window lies inside an image, a large negative
        value elsewhere. With it, several images packed into one tensor (even offsets) give
        the same outputs as separate runs, including ceil-mode pooling at odd-sized edges.
        """
        x = prelu(self.prelu1, self.conv1(x))
        if edge is not None:
            x = x + edge if x.requires_grad else x.add_(edge)
        x = max_pool(self.pool1, x)
        x = prelu(self.prelu2, self.conv2(x))
        x = prelu(self.prelu3, self.conv3(x))
        return MTCNNOutput(self.score(x), self.box(x), self.landmarks(x) if landmarks else None)


class RNet(nn.Module):
    """Refine net on 24x24 crops: (N, 3, 24, 24) -> score (N, 2), box (N, 4), landmarks (N, 10)."""

    input_size = 24

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.fc = nn.Linear(64 * 3 * 3, 128)
        self.prelu4 = nn.PReLU(128)
        self.score = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)
        self.landmarks = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor, landmarks: bool = False) -> MTCNNOutput:
        x = self.pool1(prelu(self.prelu1, self.conv1(x)))
        x = self.pool2(prelu(self.prelu2, self.conv2(x)))
        x = prelu(self.prelu3, self.conv3(x))
        x = prelu(self.prelu4, self.fc(torch.flatten(x, 1)))
        return MTCNNOutput(self.score(x), self.box(x), self.landmarks(x) if landmarks else None)


class ONet(nn.Module):
    """Output net on 48x48 crops: (N, 3, 48, 48) -> score (N, 2), box (N, 4), landmarks (N, 10)."""

    input_size = 48

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.fc = nn.Linear(128 * 3 * 3, 256)
        self.prelu5 = nn.PReLU(256)
        self.score = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor, landmarks: bool = True) -> MTCNNOutput:
        x = self.pool1(prelu(self.prelu1, self.conv1(x)))
        x = self.pool2(prelu(self.prelu2, self.conv2(x)))
        x = self.pool3(prelu(self.prelu3, self.conv3(x)))
        x = prelu(self.prelu4, self.conv4(x))
        x = prelu(self.prelu5, self.fc(torch.flatten(x, 1)))
        return MTCNNOutput(self.score(x), self.box(x), self.landmarks(x) if landmarks else None)


class MTCNNNets(nn.Module):
    """The three cascade stages in one module (one state dict: ``pnet.*``, ``rnet.*``, ``onet.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()

"""Backbones and conv blocks for RetinaFace, and padded-batch masking (BN folding: ``nets.batchnorm``).

Module and parameter names follow the published architectures so checkpoints map
by key: MobileNetV1-0.25 as in biubug6/Pytorch_Retinaface (``stage1.0.0.weight``),
ResNet-50 as in torchvision (``layer1.0.conv1.weight``). Every backbone returns the
feature maps at strides 8, 16 and 32 of the NCHW input.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from facesieve.nets.batchnorm import fold_batchnorm, has_batchnorm  # noqa: F401  (their former home)


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    negative_slope: float | None = 0.0,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> LeakyReLU(negative_slope).

    negative_slope None leaves the activation out; 0.0 is a plain ReLU. Children are
    named 0 (conv), 1 (bn), 2 (activation).
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if negative_slope is not None:
        layers.append(nn.LeakyReLU(negative_slope, inplace=True))
    return nn.Sequential(*layers)


def conv_dw(in_channels: int, out_channels: int, stride: int, negative_slope: float = 0.1) -> nn.Sequential:
    """Depthwise-separable block: 3x3 depthwise conv-BN-act, then 1x1 conv-BN-act (children 0..5)."""
    return nn.Sequential(
        *conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, negative_slope=negative_slope),
        *conv_bn(in_channels, out_channels, 1, 1, negative_slope=negative_slope),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 at width 0.25 with leaky ReLU 0.1, RetinaFace's light backbone.

    forward: (B, 3, H, W) -> strides 8, 16, 32 maps with 64, 128, 256 channels,
    of sizes ceil(H/s) x ceil(W/s).
    """

    out_channels: tuple[int, int, int] = (64, 128, 256)

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 3, 2, negative_slope=0.1),
            conv_dw(8, 16, 1),
            conv_dw(16, 32, 2),
            conv_dw(32, 32, 1),
            conv_dw(32, 64, 2),
            conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return c3, c4, c5


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision parameter names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        # registration order = data flow, so fold_batchnorm pairs each conv with its bn
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 trunk without the classifier (torchvision names: conv1, bn1, layer1..layer4).

    forward: (B, 3, H, W) -> layer2, layer3, layer4 maps (strides 8, 16, 32; 512, 1024,
    2048 channels; sizes ceil(H/s) x ceil(W/s)).
    """

    out_channels: tuple[int, int, int] = (512, 1024, 2048)

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = 64
        layers = []
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(in_channels, width, stride)]
            in_channels = width * Bottleneck.expansion
            layer += [Bottleneck(in_channels, width) for _ in range(n - 1)]
            layers.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


@contextmanager
def zero_padding_region(
    model: nn.Module, image_sizes: Sequence[tuple[int, int]], padded_size: tuple[int, int]
) -> Iterator[None]:
    """Run ``model`` on a bottom/right zero-padded batch as if each image were alone.

    image_sizes: (height, width) in input pixels of each image in the batch, in order;
    padded_size: (height, width) of the batch tensor. Inside the block, the input of
    every Conv2d / MaxPool2d with a kernel larger than 1 is multiplied by a mask that
    zeroes each image's padding, i.e. everything outside its own ceil(h/s) x ceil(w/s)
    region at that map's stride s (maps must come from stride-1/2 'same' layers, so
    a map of size ceil(H/2^k) has stride 2^k). Zeros equal the zero padding the conv
    would apply to the lone image; max-pools here follow ReLUs, so 0 acts as -inf.
    Nearest 2x upsampling (FPN) reads only valid cells for valid outputs.
    """
    heights = torch.tensor([h for h, _ in image_sizes])
    widths = torch.tensor([w for _, w in image_sizes])
    masks: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def valid_extent(map_size: int, padded: int, sizes: torch.Tensor) -> torch.Tensor:
        for k in range(64):
            stride = 2**k
            if math.ceil(padded / stride) == map_size:
                return torch.div(sizes + stride - 1, stride, rounding_mode="floor")
            if math.ceil(padded / stride) < map_size:
                break
        raise ValueError(f"feature map of size {map_size} does not come from an input of size {padded}")

    owner = threading.get_ident()  # hooks are per module, not per thread: act for this thread only

    def mask_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if threading.get_ident() != owner:
            return None  # another thread's forward of the same model (maybe in its own block)
        x = args[0]
        h, w = x.shape[-2:]
        key = (h, w, x.device, x.dtype)
        if key not in masks:
            vh = valid_extent(h, padded_size[0], heights)
            vw = valid_extent(w, padded_size[1], widths)
            rows = torch.arange(h)[None, :] < vh[:, None]
            cols = torch.arange(w)[None, :] < vw[:, None]
            masks[key] = (rows[:, None, :, None] & cols[:, None, None, :]).to(device=x.device, dtype=x.dtype)
        return (x * masks[key],) + tuple(args[1:])

    handles = []
    for m in model.modules():
        kernel = getattr(m, "kernel_size", None)
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
            if max(k) > 1:
                handles.append(m.register_forward_pre_hook(mask_input))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

"""torchvision-compatible ``nms`` / ``batched_nms`` for the benchmark's facenet-pytorch run.

Semantics follow torchvision: boxes xyxy float (N, 4); a box is dropped when its IoU (no +1
offset) with a higher-scoring kept box is > iou_threshold; returns kept indices (int64)
sorted by decreasing score. It calls facesieve's greedy NMS (``facesieve.ops.nms``, which
has a fast path without a per-box loop), so the reference is not slowed down by a slow NMS
(torchvision's is compiled C++).
"""
from __future__ import annotations

import torch

from facesieve.ops import batched_nms as _facesieve_batched_nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    keep = _facesieve_batched_nms(boxes.detach().cpu().numpy(), scores.detach().cpu().numpy(), None, float(iou_threshold))
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS independently per value of ``idxs`` (boxes of different ids never suppress each other)."""
    keep = _facesieve_batched_nms(
        boxes.detach().cpu().numpy(), scores.detach().cpu().numpy(), idxs.detach().cpu().numpy(),
        float(iou_threshold),
    )
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)

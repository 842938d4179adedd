"""Anchor-to-face matching for single-stage detectors (RetinaFace/SSD style).

Every anchor is assigned the face it overlaps most; it is a positive when that IoU
reaches ``iou_threshold``. In addition each face is forced onto its single best anchor
(even below the threshold) so that no face that any anchor reaches goes unmatched;
faces whose best IoU is below ``force_min_iou`` are too small for the anchor set and
are left unmatched (reference behaviour: 0.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MatchResult:
    """matched_gt: (A,) long, index of the face each anchor regresses to (valid everywhere
    when the image has faces, 0 otherwise); positive: (A,) bool; iou: (A,) float, the IoU
    with the matched face (2.0 for anchors forced onto their face)."""

    matched_gt: torch.Tensor
    positive: torch.Tensor
    iou: torch.Tensor


def box_iou_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M) (continuous coordinates)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)


def match_anchors(
    anchors_xyxy: torch.Tensor,
    gt_xyxy: torch.Tensor,
    iou_threshold: float = 0.35,
    force_min_iou: float = 0.2,
) -> MatchResult:
    """Match (A, 4) anchors to (G, 4) faces, both xyxy in the same units.

    When two faces share the same best anchor, the later face wins it (reference order).
    """
    a = anchors_xyxy.shape[0]
    device = anchors_xyxy.device
    if gt_xyxy.numel() == 0:
        zeros = torch.zeros(a, dtype=torch.long, device=device)
        return MatchResult(zeros, torch.zeros(a, dtype=torch.bool, device=device),
                           torch.zeros(a, device=device))
    iou = box_iou_torch(gt_xyxy.float(), anchors_xyxy.float())  # (G, A)
    best_anchor_iou, best_anchor = iou.max(dim=1)  # per face
    best_gt_iou, best_gt = iou.max(dim=0)  # per anchor
    forced = torch.nonzero(best_anchor_iou >= force_min_iou).flatten()
    for g in forced.tolist():  # G is small; a loop keeps the "later face wins" order explicit
        j = best_anchor[g]
        best_gt[j] = g
        best_gt_iou[j] = 2.0
    positive = best_gt_iou >= iou_threshold
    return MatchResult(best_gt, positive, best_gt_iou)

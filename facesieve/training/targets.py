"""RetinaFace training targets: anchors matched to faces (``training.matcher``), the matched
boxes and landmarks encoded as the regression offsets the network predicts (``BoxCoder``).

Boxes and landmarks arrive normalised to [0, 1] of the square training input (the
``RetinaFaceTrainSet`` item layout) and are scaled to pixels of that input here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from facesieve.ops.box_coder import BoxCoder
from facesieve.training.matcher import match_anchors


@dataclass
class Targets:
    """Per-anchor training targets of a batch: loc (B, A, 4), landmarks (B, A, 10) encoded
    offsets; positive / landmark_positive (B, A) bool."""

    loc: torch.Tensor
    landmarks: torch.Tensor
    positive: torch.Tensor
    landmark_positive: torch.Tensor


class TargetBuilder:
    """Match anchors to faces and encode the matched boxes / landmarks.

    anchors: (A, 4) (cx, cy, w, h) pixels of the square training input of side ``image_size``
    (AnchorGenerator order, the network's output order).
    """

    def __init__(self, anchors: np.ndarray, image_size: int, coder: BoxCoder = BoxCoder(),
                 iou_threshold: float = 0.35, device: torch.device | str = "cpu") -> None:
        a = torch.tensor(np.array(anchors, dtype=np.float32), device=device)
        self.anchors = a
        self.anchors_xyxy = torch.cat([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], dim=1)
        self.image_size = float(image_size)
        self.coder = coder
        self.iou_threshold = iou_threshold

    def __call__(self, targets: Sequence[dict[str, torch.Tensor]]) -> Targets:
        """Targets of a batch of B images, one dict each: "boxes" (N, 4) xyxy and "landmarks"
        (N, 10) (x0, y0, ..., x4, y4), both in [0, 1] of ``image_size``, "has_landmarks" (N,)
        bool. An image without faces gets all-zero targets and no positives."""
        n_anchor = self.anchors.shape[0]
        dev = self.anchors.device
        locs, lms, pos, lm_pos = [], [], [], []
        for t in targets:
            boxes = t["boxes"].to(dev).float() * self.image_size
            if boxes.shape[0] == 0:
                locs.append(torch.zeros(n_anchor, 4, device=dev))
                lms.append(torch.zeros(n_anchor, 10, device=dev))
                pos.append(torch.zeros(n_anchor, dtype=torch.bool, device=dev))
                lm_pos.append(torch.zeros(n_anchor, dtype=torch.bool, device=dev))
                continue
            m = match_anchors(self.anchors_xyxy, boxes, self.iou_threshold)
            matched = boxes[m.matched_gt]
            # guard log(0) for degenerate boxes (only positives' targets are used)
            matched = torch.cat([matched[:, :2], torch.maximum(matched[:, 2:], matched[:, :2] + 1e-3)], dim=1)
            locs.append(self.coder.encode_boxes(matched, self.anchors))
            lm = t["landmarks"].to(dev).float()[m.matched_gt] * self.image_size
            lms.append(self.coder.encode_landmarks(lm, self.anchors))
            pos.append(m.positive)
            lm_pos.append(m.positive & t["has_landmarks"].to(dev)[m.matched_gt])
        return Targets(torch.stack(locs), torch.stack(lms), torch.stack(pos), torch.stack(lm_pos))

"""SSD/RetinaFace box and landmark coding relative to (cx, cy, w, h) anchors.

Boxes are xyxy, landmarks (x0, y0, ..., x4, y4); both in the anchors' units
(pixels with ``AnchorGenerator``). With variances (v0, v1):

    box:      t_xy = (centre - anchor_xy) / (v0 * anchor_wh),  t_wh = log(size / anchor_wh) / v1
    landmark: t_k  = (point_k - anchor_xy) / (v0 * anchor_wh)

Decoding (inference) is numpy, encoding (training targets) is torch; each pair is an
exact inverse up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BoxCoder:
    """variances: (centre/landmark scale, size scale), (0.1, 0.2) in RetinaFace."""

    variances: tuple[float, float] = (0.1, 0.2)

    def decode_boxes(self, loc: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """(..., 4) offsets + (..., 4) cx,cy,w,h anchors -> (..., 4) xyxy boxes."""
        loc = np.asarray(loc)
        anchors = np.asarray(anchors)
        dtype = np.result_type(loc, anchors, np.float32)
        wh = anchors[..., 2:].astype(dtype)
        centre = anchors[..., :2] + loc[..., :2] * self.variances[0] * wh
        size = wh * np.exp(loc[..., 2:] * self.variances[1])
        return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)

    def decode_landmarks(self, pred: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """(..., 10) offsets + (..., 4) anchors -> (..., 10) points (x0, y0, ..., x4, y4)."""
        pred = np.asarray(pred)
        anchors = np.asarray(anchors)
        dtype = np.result_type(pred, anchors, np.float32)
        shape = pred.shape[:-1]
        pts = pred.reshape(*shape, 5, 2).astype(dtype, copy=False)
        out = anchors[..., None, :2] + pts * self.variances[0] * anchors[..., None, 2:]
        return out.reshape(*shape, 10)

    def encode_boxes(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(N, 4) xyxy boxes + (N, 4) matched anchors -> (N, 4) regression targets."""
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        size = boxes[..., 2:] - boxes[..., :2]
        t_xy = (centre - anchors[..., :2]) / (self.variances[0] * anchors[..., 2:])
        t_wh = torch.log(size / anchors[..., 2:]) / self.variances[1]
        return torch.cat([t_xy, t_wh], dim=-1)

    def encode_landmarks(self, landmarks: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """(N, 10) or (N, 5, 2) points + (N, 4) matched anchors -> (N, 10) regression targets."""
        pts = landmarks.reshape(*anchors.shape[:-1], 5, 2)
        t = (pts - anchors[..., None, :2]) / (self.variances[0] * anchors[..., None, 2:])
        return t.reshape(*anchors.shape[:-1], 10)

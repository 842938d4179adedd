"""Box geometry and non-maximum suppression on numpy arrays.

All boxes are xyxy in pixels, shape (N, 4). ``offset`` is added to widths and
heights: 0 for continuous coordinates, 1 for the legacy "inclusive pixel"
convention some reference implementations use (biubug6's py_cpu_nms, Caffe MTCNN).
"""
from __future__ import annotations

import numpy as np


def box_area(boxes: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """(N, 4) xyxy -> (N,) areas."""
    b = np.asarray(boxes)
    return (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)


def box_iou(a: np.ndarray, b: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt + offset, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, offset)[:, None] + box_area(b, offset)[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    mode: str = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """Greedy NMS. Returns indices of kept boxes, highest score first.

    mode: "union" (IoU) or "min" (intersection over the smaller box, as MTCNN's last stage).
    A box is suppressed when its overlap with a kept box is > iou_threshold.
    Each iteration is vectorised over the remaining boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if rest.size == 0:
            break
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + offset)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + offset)
        inter = w * h
        if mode == "min":
            denom = np.minimum(areas[i], areas[rest])
        else:
            denom = areas[i] + areas[rest] - inter
        overlap = inter / np.maximum(denom, np.finfo(np.float64).tiny)
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    iou_threshold: float,
    mode: str = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """NMS run independently per group id (e.g. image index) in one pass.

    Boxes of different groups are shifted apart so they never overlap. Returns
    kept indices sorted by descending score.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    groups = np.asarray(groups).reshape(-1)
    span = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0 + abs(offset)
    shifted = boxes + (groups.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, mode=mode, offset=offset)

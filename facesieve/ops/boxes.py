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
    order = np.argsort(-scores, kind="stable")
    if mode == "union" and boxes.shape[0] > SPARSE_NMS_MIN_BOXES and 0.0 < iou_threshold < 1.0:
        keep = _greedy_sparse(boxes[order], float(iou_threshold), offset)
        if keep is not None:
            return order[keep]
    return order[_greedy_loop(boxes[order], iou_threshold, mode, offset)]


SPARSE_NMS_MIN_BOXES = 64
"""Above this many boxes, IoU NMS goes through ``_greedy_sparse`` (same result, no per-box loop)."""

_SPARSE_NMS_MAX_PAIRS = 4_000_000
"""Candidate-pair budget of ``_greedy_sparse``; beyond it (boxes piled on one spot) the loop runs."""


def _greedy_loop(boxes: np.ndarray, iou_threshold: float, mode: str, offset: float) -> np.ndarray:
    """Greedy NMS of score-sorted (N, 4) boxes, one kept box per iteration; kept positions, ascending."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    order = np.arange(boxes.shape[0])
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


def _greedy_sparse(boxes: np.ndarray, iou_threshold: float, offset: float) -> np.ndarray | None:
    """Greedy IoU NMS of score-sorted (N, 4) boxes without a per-box Python loop.

    Returns the kept positions (ascending), identical to ``_greedy_loop``, or None when
    the shortcut does not apply (non-finite or empty boxes, too many candidate pairs).

    1. Candidate pairs. IoU is at most the 1-D IoU of the x intervals (and of the y
       intervals), so IoU > t needs both > t. In x that bounds the centre distance by
       wi (1 - t) / (1 + t) from the wider box i of the pair; in y, with the height ratio
       in (t, 1/t), by hi (1 - t) / (2 t) from either box. Boxes are bucketed in
       horizontal stripes and sorted by (stripe, cx); one searchsorted per (box, stripe in
       its y reach) lists the boxes in its x reach.
    2. The exact IoU test of the loop (same arithmetic, so the same decisions) keeps the
       edges "i suppresses j if i is kept" (i before j in score order).
    3. Resolution in rounds: j is suppressed once a kept i points at it, kept once every
       i pointing at it is suppressed. The first undecided box is decided in every round,
       and the rounds take as many steps as the longest chain of overlaps (a few).
    """
    x1, y1, x2, y2 = boxes.T
    w = x2 - x1 + offset
    h = y2 - y1 + offset
    if not (np.isfinite(boxes).all() and (w > 0).all() and (h > 0).all()):
        return None
    n = boxes.shape[0]
    t = iou_threshold
    cx = (x1 + x2) * 0.5
    cy = (y1 + y2) * 0.5
    # reaches, widened a little so float rounding never drops a pair (the IoU test decides)
    rx = w * ((1.0 - t) / (1.0 + t)) * (1.0 + 1e-6) + 1e-6
    ry = h * ((1.0 - t) / (2.0 * t)) * (1.0 + 1e-6) + 1e-6
    y0 = float(cy.min())
    stripe = max(float(np.median(ry)) * 2.0, float(cy.max() - y0) / 4096.0, 1e-6)
    sid = np.floor((cy - y0) / stripe).astype(np.int64)
    last = int(sid.max())
    rx_max = float(rx.max())
    span = float(cx.max() - cx.min()) + 2.0 * rx_max + 1.0  # one stripe's key range
    local = cx - float(cx.min()) + rx_max  # in [rx_max, span - rx_max - 1]
    key = sid * span + local
    by_key = np.argsort(key, kind="stable")
    sorted_key = key[by_key]
    eps = 1e-9 * max(1.0, float(sorted_key[-1]))
    s_lo = np.clip(np.floor((cy - ry - y0) / stripe).astype(np.int64), 0, last)
    s_hi = np.clip(np.floor((cy + ry - y0) / stripe).astype(np.int64), 0, last)
    nq = s_hi - s_lo + 1
    nq_total = int(nq.sum())
    q_box = np.repeat(np.arange(n), nq)
    q_stripe = np.repeat(s_lo - (np.cumsum(nq) - nq), nq) + np.arange(nq_total)
    centre = q_stripe * span + local[q_box]
    q_reach = rx[q_box] + eps
    lo = np.searchsorted(sorted_key, centre - q_reach, "left")
    hi = np.searchsorted(sorted_key, centre + q_reach, "right")
    counts = hi - lo
    total = int(counts.sum())
    if total > _SPARSE_NMS_MAX_PAIRS:
        return None
    src = np.repeat(q_box, counts)
    starts = np.cumsum(counts) - counts
    dst = by_key[np.repeat(lo - starts, counts) + np.arange(total)]
    # each unordered pair once, from its wider box (the one whose reach covers the pair)
    one = (w[src] > w[dst]) | ((w[src] == w[dst]) & (src < dst))
    a, b = src[one], dst[one]
    i, j = np.minimum(a, b), np.maximum(a, b)
    iw = np.maximum(0.0, np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j]) + offset)
    ih = np.maximum(0.0, np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j]) + offset)
    inter = iw * ih
    areas = w * h
    overlap = inter / np.maximum(areas[i] + areas[j] - inter, np.finfo(np.float64).tiny)
    edge = overlap > t
    i, j = i[edge], j[edge]
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, -1 suppressed
    pointed = np.zeros(n, bool)
    pointed[j] = True
    state[~pointed] = 1
    while True:
        undecided = state == 0
        if not undecided.any():
            break
        src_state = state[i]
        killed = np.zeros(n, bool)
        killed[j[src_state == 1]] = True
        waiting = np.zeros(n, bool)
        waiting[j[src_state == 0]] = True
        state[undecided & killed] = -1
        state[undecided & ~killed & ~waiting] = 1
    return np.flatnonzero(state == 1)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | None,
    iou_threshold: float,
    mode: str = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """NMS run independently per group id (e.g. image index or pyramid level).

    boxes: (N, 4) xyxy px; scores: (N,); groups: (N,) ints, or None for one group.
    Boxes of different groups never suppress each other. Runs ``nms`` group by group (a
    Python loop over groups, not boxes), which keeps its fast path whatever the spread of
    box sizes and positions across groups. Returns kept indices sorted by descending
    score, ties in input order.
    """
    scores = np.asarray(scores).reshape(-1)
    if groups is None or scores.size == 0:
        return nms(boxes, scores, iou_threshold, mode=mode, offset=offset)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    groups = np.asarray(groups).reshape(-1)
    order = np.argsort(groups, kind="stable")
    parts = np.split(order, np.flatnonzero(np.diff(groups[order])) + 1)
    keep = np.sort(np.concatenate(
        [idx[nms(boxes[idx], scores[idx], iou_threshold, mode=mode, offset=offset)] for idx in parts]
    ))
    return keep[np.argsort(-scores[keep], kind="stable")]


# ----------------------------------------------------------------------------- squaring, calibration, crop windows


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> squares with side max(w, h) (w = x2 - x1), same centre, in the dtype of
    ``boxes`` (float32 in the MTCNN cascade; the half-sizes are float32 0.5 products)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out = np.empty_like(boxes)
    out[:, 0] = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    out[:, 1] = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress_boxes(boxes: np.ndarray, reg: np.ndarray, inclusive: bool) -> np.ndarray:
    """Apply (dx1, dy1, dx2, dy2) offsets in units of the box size; size = x2 - x1, plus 1
    when ``inclusive`` (the reference uses +1 after R-Net and O-Net, not after P-Net)."""
    one = np.float32(1.0 if inclusive else 0.0)
    w = boxes[:, 2] - boxes[:, 0] + one
    h = boxes[:, 3] - boxes[:, 1] + one
    wh = np.stack([w, h, w, h], axis=1)
    return boxes + reg * wh


def crop_windows(boxes: np.ndarray, width: np.ndarray | int, height: np.ndarray | int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference cropping: truncate to ints, clip to [1, size] (1-based inclusive), crop
    0-based rows [y1 - 1, y2) and cols [x1 - 1, x2). Returns (y0, y1, x0, x1, ok) with
    ok marking non-empty crops."""
    b = np.trunc(boxes).astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], width)
    y1 = np.minimum(b[:, 3], height)
    ok = (x1 > x0) & (y1 > y0)
    return y0, y1, x0, x1, ok

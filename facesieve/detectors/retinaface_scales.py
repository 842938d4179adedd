"""RetinaFace's scale and tiling plan (pure geometry, no network): the base scale
(``scale_for``), the passes an image is run at (``pass_factors``), the tiles of a pass too
big for one network call (``plan_tiles``) and merging the faces of several passes
(``merge_passes``). The policy is described in ``facesieve.detectors.retinaface``; all sizes
are in pixels."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from facesieve.ops.boxes import box_area, nms

MULTISCALE_SHORT_SIDE = 640
"""With ``multiscale``: coarser passes (each half the previous scale) are added until the
image's short side is at most this many pixels at the coarsest pass. On
``photos_large_faces`` faces up to ~700 px are found whole at the original scale and larger
ones (780-1440 px) come back as 1-10 partial boxes of 480-700 px; at a short side of 640
every one is found whole."""

PASS_MAX_FACE = 362.0
"""Largest face (box side, pixels at the pass's scale) a pass keeps unless it is the coarsest:
sqrt(256 * 512), the middle of the network's largest anchor level (partial faces of a
too-large face measured >= 480 px; a face above this is left to the next pass, where it is
half as large, in the middle of the anchors' range)."""

PASS_OVERLAP = 1.25
"""A pass other than the base one keeps faces above PASS_MAX_FACE / 2 / PASS_OVERLAP px at its
scale: sizes near the boundary are found by both passes and merged by NMS."""

TILE_MARGIN = 320
"""Context (pixels at the pass's scale, a multiple of 32) around a tile's core: more than half
the network's receptive field (~510 px at stride 32), so every anchor of the core sees exactly
what it sees in the whole image."""

CONTAINED_FRACTION = 0.5
"""A finer pass's face with more than this fraction of its area inside a larger face of a
coarser pass that scores higher is a part of that face, and dropped. (Without the score
condition, low-score coarse boxes, as WIDER FACE's 0.02 threshold keeps, swallowed real small
faces in crowds.)"""


def scale_for(height: int, width: int, target_size: int | None, max_size: int | None) -> float:
    """Resize factor (output pixels per input pixel) for a height x width image: the short
    side becomes target_size, unless the long side would then exceed max_size (then the long
    side becomes max_size); None: no such constraint; 1.0 when both are None. The rule of
    biubug6's test_widerface.py, shared by both detectors."""
    short, long = min(height, width), max(height, width)
    factor = 1.0 if target_size is None else float(target_size) / short
    if max_size is not None and np.round(factor * long) > max_size:
        factor = float(max_size) / long
    return factor


def pass_factors(height: int, width: int, base: float, multiscale: bool = True) -> list[float]:
    """Scales (pass pixels per original pixel) a height x width image is run at, finest
    first: ``base`` (the detector's ``scale_factor``), then with ``multiscale`` halves of it
    until the short side is <= MULTISCALE_SHORT_SIDE px (see the module doc)."""
    factors = [base]
    if multiscale:
        short = min(height, width)
        while short * factors[-1] > MULTISCALE_SHORT_SIDE:
            factors.append(factors[-1] / 2)
    return factors


def plan_tiles(height: int, width: int, max_batch_pixels: int
               ) -> list[tuple[int, int, int, int, tuple[int, int, int, int] | None]]:
    """Cut a height x width pass into tiles of at most max_batch_pixels pixels.

    Returns (y0, y1, x0, x1, core) per tile: the tile's rows and columns, and the core
    (y0, y1, x0, x1) whose anchors it answers for; the cores partition the pass, start at
    multiples of 32 (so every tile has the whole image's anchor grid and stride phase),
    and each tile adds TILE_MARGIN px of context around its core (less at the image's
    border, which is the whole image's border too). So every anchor's output equals the
    untiled one up to float rounding; candidates of all tiles are merged by one NMS.
    One tile (core None) when the pass fits. The grid minimises the tiles' total area.
    """
    if height * width <= max_batch_pixels:
        return [(0, height, 0, width, None)]
    m, budget = TILE_MARGIN, max_batch_pixels

    def cores(n: int, size: int) -> int:  # core length for n cores over size px
        return 32 * math.ceil(math.ceil(size / n) / 32)

    best: tuple[int, int, int] | None = None
    for ny in range(1, math.ceil(height / 32) + 1):
        ch = cores(ny, height)
        th = min(height, ch + 2 * m)
        if th * min(width, 32 + 2 * m) > budget:
            continue
        for nx in range(1, math.ceil(width / 32) + 1):
            cw = cores(nx, width)
            if th * min(width, cw + 2 * m) <= budget:
                total = ny * nx * th * min(width, cw + 2 * m)
                if best is None or total < best[0]:
                    best = (total, ny, nx)
                break
        if best is not None and ny * (32 + 2 * m) * min(width, 2 * m + 32) > best[0]:
            break
    assert best is not None  # max_batch_pixels >= (2 * TILE_MARGIN + 64) ** 2
    _, ny, nx = best
    ch, cw = cores(ny, height), cores(nx, width)
    out = []
    for cy0 in range(0, height, ch):
        cy1 = min(height, cy0 + ch)
        for cx0 in range(0, width, cw):
            cx1 = min(width, cx0 + cw)
            out.append((max(0, cy0 - m), min(height, cy1 + m), max(0, cx0 - m), min(width, cx1 + m),
                        (cy0, cy1, cx0, cx1)))
    return out


def merge_passes(
    passes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    factors: Sequence[float],
    nms_threshold: float,
    nms_offset: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the faces of several passes (finest first, each (boxes (N, 4) original px,
    scores (N,), landmarks (N, 10)) after its own NMS) run at ``factors``.

    Each pass keeps its size range (box side in its own pixels <= PASS_MAX_FACE unless it
    is the coarsest, > PASS_MAX_FACE / 2 / PASS_OVERLAP unless it is the finest); a face
    with more than CONTAINED_FRACTION of its area inside a larger, higher-scoring face
    of a coarser pass is dropped; then one NMS over all of them (faces found by two passes;
    ``nms_offset``: the box convention of ``ops.boxes.nms``).
    """
    last = len(passes) - 1
    kept = []
    for level, ((boxes, scores, points), f) in enumerate(zip(passes, factors)):
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * f
        ok = np.ones(len(scores), bool)
        if level < last:
            ok &= side <= PASS_MAX_FACE
        if level > 0:
            ok &= side > PASS_MAX_FACE / 2 / PASS_OVERLAP
        kept.append((boxes[ok], scores[ok], points[ok]))
    for level in range(last):
        boxes, scores = kept[level][0], kept[level][1]
        coarser = np.concatenate([kept[k][0] for k in range(level + 1, last + 1)])
        coarser_scores = np.concatenate([kept[k][1] for k in range(level + 1, last + 1)])
        if not len(boxes) or not len(coarser):
            continue
        lo = np.maximum(boxes[:, None, :2], coarser[None, :, :2])
        hi = np.minimum(boxes[:, None, 2:], coarser[None, :, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
        area = box_area(boxes)[:, None]
        part = ((inter > CONTAINED_FRACTION * area) & (box_area(coarser)[None, :] > area)
                & (coarser_scores[None, :] > scores[:, None]))
        ok = ~part.any(axis=1)
        kept[level] = tuple(a[ok] for a in kept[level])
    boxes, scores, points = (np.concatenate(a) for a in zip(*kept))
    order = nms(boxes, scores, nms_threshold, offset=nms_offset)
    return boxes[order], scores[order], points[order]

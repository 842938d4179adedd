"""The image pyramid of the MTCNN cascade: level scales and sizes, P-Net's output size,
and packing levels (cut into row bands when too big) onto canvases for few P-Net calls."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

EDGE_VALUE = -1.0e4
"""Added to P-Net's first activations outside the packed levels; far below any real value
(|conv1| <= sum|w| + |b| < 10 on inputs in [-1, 1]), so max-pooling never picks it."""

PNET_CELL = 12
PNET_STRIDE = 2


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales 12 / min_face_size * factor**k while min(height, width) * scale >= 12
    (the reference's running products, so level sizes match it exactly)."""
    scale = PNET_CELL / float(min_face_size)
    min_side = min(height, width) * scale
    scales = []
    while min_side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Pyramid level (h, w) in pixels for ``scale``."""
    return int(height * scale + 1), int(width * scale + 1)


def pnet_output_size(n: int) -> int:
    """P-Net output cells along a side of n >= 12 input pixels: ceil((n - 2) / 2) - 4."""
    return (n - 1) // 2 - 4


@dataclass(frozen=True)
class Piece:
    """A band of rows of one pyramid level, placed on a P-Net canvas.

    image / level: indices; row0: first level row of the band (even); rows x cols: band
    size in pixels; canvas, y, x: placement (y, x even); out_row0: first P-Net output row
    of the level that this band yields, out_rows: how many.
    """

    image: int
    level: int
    row0: int
    rows: int
    cols: int
    canvas: int
    y: int
    x: int
    out_row0: int
    out_rows: int


def split_rows(height: int, width: int, max_pixels: int) -> list[tuple[int, int, int, int]]:
    """Split a level of (height, width) px into row bands of <= max_pixels (when possible)
    whose P-Net outputs together are exactly those of the whole level.

    Bands overlap by 10 rows (P-Net's 12-row window minus its stride) and inner bands have
    an even height. Returns (row0, rows, out_row0, out_rows) per band.
    """
    total_out = pnet_output_size(height)
    band = max(PNET_CELL + 2, (max_pixels // max(width, 1)) // 2 * 2)
    if height <= band:
        return [(0, height, 0, total_out)]
    out: list[tuple[int, int, int, int]] = []
    row0, out_row0 = 0, 0
    while True:
        rows = min(band, height - row0)
        if row0 + rows >= height:
            out.append((row0, height - row0, out_row0, total_out - out_row0))
            return out
        n_out = (rows - PNET_CELL) // PNET_STRIDE + 1
        out.append((row0, rows, out_row0, n_out))
        out_row0 += n_out
        row0 += n_out * PNET_STRIDE


def pack_pieces(sizes: Sequence[tuple[int, int]], width: int, max_height: int
                ) -> list[tuple[int, int, int]]:
    """Skyline packing of (rows, cols) rectangles, each rounded up to even sizes, into
    canvases ``width`` wide and at most ``max_height`` tall (a rectangle that alone is
    bigger gets its own canvas). Returns (canvas, y, x) per rectangle, y and x even."""
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][0], -sizes[i][1]))
    result: list[tuple[int, int, int]] = [(0, 0, 0)] * len(sizes)
    canvas = 0
    skyline: list[list[int]] = [[0, width, 0]]  # segments [x, w, top]
    used = False
    for i in order:
        h = sizes[i][0] + (sizes[i][0] & 1)
        w = sizes[i][1] + (sizes[i][1] & 1)
        best: tuple[int, int, int] | None = None  # (top, x, segment index)
        for s, (sx, _, _) in enumerate(skyline):
            if sx + w > width and best is not None:
                break
            top, covered, j = 0, 0, s
            while covered < w and j < len(skyline):
                top = max(top, skyline[j][2])
                covered = skyline[j][0] + skyline[j][1] - sx
                j += 1
            if best is None or top < best[0]:
                best = (top, sx, s)
        assert best is not None
        top, x, _ = best
        if used and top + h > max_height:
            canvas += 1
            skyline = [[0, max(width, w), 0]]
            top, x = 0, 0
        result[i] = (canvas, top, x)
        used = True
        # Raise the skyline over [x, x + w) to top + h.
        new: list[list[int]] = []
        for sx, sw, st in skyline:
            end = sx + sw
            if end <= x or sx >= x + w:
                new.append([sx, sw, st])
                continue
            if sx < x:
                new.append([sx, x - sx, st])
            if end > x + w:
                new.append([x + w, end - (x + w), st])
        new.append([x, w, top + h])
        new.sort()
        merged: list[list[int]] = []
        for seg in new:
            if merged and merged[-1][2] == seg[2] and merged[-1][0] + merged[-1][1] == seg[0]:
                merged[-1][1] += seg[1]
            else:
                merged.append(seg)
        skyline = merged
    return result

"""Anchor (prior box) generation for single-shot detectors such as RetinaFace.

Anchors are (A, 4) float32 arrays of (cx, cy, w, h) in input-image PIXELS (not
normalised), ordered level-major, then row-major cells, then the level's sizes:
biubug6/Pytorch_Retinaface's PriorBox order (its normalised anchors times W, H).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class AnchorGenerator:
    """Square anchors centred on every feature-map cell.

    min_sizes: per level, the anchor side lengths in pixels (one anchor per size and cell).
    steps: per level, the stride in pixels; a level has ceil(H/step) x ceil(W/step) cells,
        cell (i, j) centred at ((j + 0.5) * step, (i + 0.5) * step).
    """

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)

    def __post_init__(self) -> None:
        if len(self.min_sizes) != len(self.steps):
            raise ValueError("min_sizes and steps need one entry per level")

    def grid_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(rows, cols) of each level for an input of height x width pixels."""
        return [(math.ceil(height / s), math.ceil(width / s)) for s in self.steps]

    def num_anchors(self, height: int, width: int) -> int:
        return sum(r * c * len(m) for (r, c), m in zip(self.grid_sizes(height, width), self.min_sizes))

    def __call__(self, height: int, width: int) -> np.ndarray:
        """(A, 4) read-only float32 (cx, cy, w, h) pixel anchors for a height x width input (cached)."""
        return _anchors(tuple(tuple(int(v) for v in m) for m in self.min_sizes), tuple(self.steps),
                        int(height), int(width))

    def valid_mask(self, padded_height: int, padded_width: int, height: int, width: int) -> np.ndarray:
        """(A,) bool over the anchors of a padded_height x padded_width input: True where the
        anchor's cell also exists for a height x width image placed at the top-left."""
        parts = []
        for (rows, cols), (vr, vc), sizes in zip(
            self.grid_sizes(padded_height, padded_width), self.grid_sizes(height, width), self.min_sizes
        ):
            cell = (np.arange(rows) < vr)[:, None] & (np.arange(cols) < vc)[None, :]
            parts.append(np.repeat(cell.reshape(-1), len(sizes)))
        return np.concatenate(parts)


@lru_cache(maxsize=16)
def _anchors(min_sizes: tuple[tuple[int, ...], ...], steps: tuple[int, ...], height: int, width: int) -> np.ndarray:
    levels = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        k = len(sizes)
        a = np.empty((rows, cols, k, 4), np.float32)
        a[..., 0] = ((np.arange(cols, dtype=np.float32) + 0.5) * step)[None, :, None]
        a[..., 1] = ((np.arange(rows, dtype=np.float32) + 0.5) * step)[:, None, None]
        a[..., 2] = np.asarray(sizes, np.float32)
        a[..., 3] = np.asarray(sizes, np.float32)
        levels.append(a.reshape(-1, 4))
    out = np.concatenate(levels) if levels else np.zeros((0, 4), np.float32)
    out.flags.writeable = False
    return out

"""Face crops: margin crops around a box, and 5-point aligned crops (ArcFace template).

All images are RGB uint8 (H, W, 3); coordinates are (x, y) pixels of that image.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from facesieve.types import Face

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (smaller x)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth left
        [70.7299, 92.2041],  # mouth right
    ],
    dtype=np.float64,
)
"""Standard 5-point positions for a 112x112 aligned face (InsightFace/ArcFace), LANDMARK_NAMES order."""

ARCFACE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    src, dst: (K, 2) point sets, K >= 2. Returns the 2x3 float64 matrix M with
    ``dst ~= src @ M[:, :2].T + M[:, 2]`` (Umeyama 1991; reflections excluded).
    Raises ValueError when src is degenerate (all points equal) or not finite.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need two equal (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum(1).mean()
    if var_s < 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide)")
    cov = d0.T @ s0 / src.shape[0]
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (K, 2) points."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ np.asarray(m)[:, :2].T + np.asarray(m)[:, 2]


def _warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """warpAffine with an area pre-shrink when the transform minifies more than 2x (no aliasing)."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        w, h = size
        inv = cv2.invertAffineTransform(m)
        corners = transform_points(inv, np.array([[0, 0], [w, 0], [0, h], [w, h]], float))
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        H, W = image.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = 2.0 * scale  # after the shrink the warp scales by about 0.5
            region = image[y0:y1, x0:x1]
            small = cv2.resize(region, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            fx = small.shape[1] / region.shape[1]
            fy = small.shape[0] / region.shape[0]
            # x = x_small / f + x0  ->  M' = M composed with that map
            m2 = np.empty((2, 3))
            m2[:, 0] = m[:, 0] / fx
            m2[:, 1] = m[:, 1] / fy
            m2[:, 2] = m[:, 2] + m[:, :2] @ np.array([x0, y0], float)
            return cv2.warpAffine(small, m2, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = ARCFACE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Aligned (size, size, 3) crop: the 5 landmarks mapped onto the ArcFace template.

    landmarks: (5, 2) in LANDMARK_NAMES order, image pixels. The template is scaled by
    size / 112. Returns (crop, M) with M the 2x3 image -> crop matrix. Pixels outside the
    image are black.
    """
    dst = ARCFACE_TEMPLATE * (float(size) / ARCFACE_SIZE)
    m = similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), dst)
    return _warp(image, m, (int(size), int(size))), m


def box_crop(
    image: np.ndarray,
    box: Sequence[float],
    margin: float = 0.2,
    size: int | None = 224,
    square: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop around an xyxy box, widened by ``margin`` x its width/height on every side.

    square: grow the shorter side to the longer one (about the box centre) first.
    size: output side in pixels (the long side when not square); None keeps native pixels.
    Returns (crop, M) with M the 2x3 image -> crop matrix; pixels outside the image are black.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if square:
        w = h = max(w, h)
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    if size is None:
        out_w, out_h = max(1, round(w)), max(1, round(h))
    elif w >= h:
        out_w, out_h = int(size), max(1, round(size * h / w))
    else:
        out_w, out_h = max(1, round(size * w / h)), int(size)
    sx, sy = out_w / w, out_h / h
    m = np.array([[sx, 0.0, -(cx - w / 2) * sx], [0.0, sy, -(cy - h / 2) * sy]])
    return _warp(image, m, (out_w, out_h)), m


def select_faces(faces: Sequence[Face], keep: str = "all") -> list[Face]:
    """'all' (highest score first), 'largest' (box area) or 'best' (highest score): one face."""
    if keep == "all":
        return sorted(faces, key=lambda f: -f.score)
    if not faces:
        return []
    if keep == "largest":
        return [max(faces, key=lambda f: f.area)]
    if keep == "best":
        return [max(faces, key=lambda f: f.score)]
    raise ValueError(f"keep must be 'all', 'largest' or 'best', got {keep!r}")

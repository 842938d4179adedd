"""Drawing detections (boxes, scores, 5 landmarks) on RGB images, and JPEG encoding."""
from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from facesieve.types import LANDMARK_NAMES, Face

BOX_COLOR = (0, 255, 0)
"""RGB colour of face boxes."""

LANDMARK_COLORS: dict[str, tuple[int, int, int]] = {
    "left_eye": (255, 40, 40),  # red
    "right_eye": (40, 120, 255),  # blue
    "nose": (255, 230, 0),  # yellow
    "mouth_left": (255, 0, 255),  # magenta
    "mouth_right": (0, 230, 230),  # cyan
}
"""RGB colour of each landmark, keyed by LANDMARK_NAMES."""


def line_thickness(height: int, width: int) -> int:
    """Box line width in pixels for an image of this size: ~2 px at 512x512, ~32 px at 12000x9000."""
    return max(1, int(round(math.sqrt(height * width) / 320)))


def draw_faces(image: np.ndarray, faces: Sequence[Face], show_scores: bool = True) -> np.ndarray:
    """Return a copy of ``image`` (RGB uint8, H x W x 3) with the faces drawn on it.

    Boxes are green, with the score (2 decimals) on a filled label above the box (inside it
    when the box touches the top edge); landmarks are filled dots, one colour per point
    (LANDMARK_COLORS). Line width scales with the image size (``line_thickness``) but never
    exceeds ~1/12 of the face's smaller side, so small faces stay visible.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    canvas = np.ascontiguousarray(image).copy()
    h, w = canvas.shape[:2]
    base = line_thickness(h, w)
    for face in faces:
        box = np.asarray(face.box, dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, [0, 0, 0, 0], [w - 1, h - 1, w - 1, h - 1]))
        side = max(1, min(x2 - x1, y2 - y1))
        t = max(1, min(base, side // 12))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, t, cv2.LINE_AA if t > 1 else cv2.LINE_8)
        if face.landmarks is not None:
            lms = np.asarray(face.landmarks, dtype=np.float64).reshape(-1, 2)
            r = max(1, int(round(1.5 * t)))
            for name, (lx, ly) in zip(LANDMARK_NAMES, lms):
                if np.isfinite(lx) and np.isfinite(ly):
                    cv2.circle(canvas, (int(round(lx)), int(round(ly))), r, LANDMARK_COLORS[name], -1, cv2.LINE_AA)
        if show_scores:
            _draw_label(canvas, f"{float(face.score):.2f}", x1, y1, t)
    return canvas


def _draw_label(canvas: np.ndarray, text: str, x: int, y: int, thickness: int) -> None:
    """Filled box-coloured label with black text, anchored at the box's top-left corner."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = 0.4 * thickness + 0.1
    ft = max(1, thickness // 2)
    (tw, th), baseline = cv2.getTextSize(text, font, scale, ft)
    pad = max(1, thickness)
    top = y - th - baseline - 2 * pad
    if top < 0:  # no room above the box: put the label just inside it
        top = y
    bottom = top + th + baseline + 2 * pad
    cv2.rectangle(canvas, (x, top), (x + tw + 2 * pad, bottom), BOX_COLOR, -1)
    cv2.putText(canvas, text, (x + pad, bottom - pad - baseline), font, scale, (0, 0, 0), ft, cv2.LINE_AA)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB uint8 (H, W, 3) image as JPEG bytes (converted to BGR for OpenCV)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {image.shape[1]}x{image.shape[0]} image")
    return buf.tobytes()

"""Result types shared by every detector."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of the 5 landmarks; left/right as seen in the image (left_eye has the smaller x)."""


@dataclass
class Face:
    """One detected face, in original image pixels.

    box: (x1, y1, x2, y2) floats, xyxy, original-image pixels.
    score: detector confidence in [0, 1].
    landmarks: (5, 2) float32 array of (x, y) in the order of LANDMARK_NAMES,
        or None if the detector gives none.
    detector: name of the model that produced the face (e.g. "retinaface-mnet025").
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None
    detector: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: box as [x1, y1, x2, y2], landmarks as [[x, y] * 5]."""
        d: dict[str, Any] = {
            "box": [round(float(v), 3) for v in self.box],
            "score": round(float(self.score), 6),
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 3), round(float(y), 3)] for x, y in np.asarray(self.landmarks)],
        }
        if self.detector:
            d["detector"] = self.detector
        if self.extra:
            d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Face":
        lm = d.get("landmarks")
        return cls(
            box=tuple(float(v) for v in d["box"]),  # type: ignore[arg-type]
            score=float(d["score"]),
            landmarks=None if lm is None else np.asarray(lm, dtype=np.float32).reshape(5, 2),
            detector=d.get("detector", ""),
        )


def faces_from_arrays(
    boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray | None, detector: str = ""
) -> list[Face]:
    """Build Faces from (N,4) xyxy boxes, (N,) scores and (N,5,2) or (N,10) landmarks."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    # Python floats via tolist() and landmark rows as views of one private copy: several times
    # faster than per-element conversion when a low threshold yields hundreds of faces
    lms = [None] * len(boxes) if landmarks is None else list(np.array(landmarks, dtype=np.float32).reshape(-1, 5, 2))
    return [
        Face(box=tuple(b), score=s, landmarks=lm, detector=detector)  # type: ignore[arg-type]
        for b, s, lm in zip(boxes.tolist(), scores.tolist(), lms)
    ]

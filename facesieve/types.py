"""Result types shared by every detector."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Order of the 5 landmarks; left/right as seen in the image (left_eye has the smaller x)."""

CORE_KEYS = ("box", "score", "landmarks", "detector")
"""Keys ``Face.to_dict`` writes for the fields; every other key of the dict is ``extra``."""


@dataclass(eq=False)
class Face:
    """One detected face, in original image pixels.

    box: (x1, y1, x2, y2) floats, xyxy, original-image pixels (continuous coordinates:
        the image spans [0, width] x [0, height]).
    score: detector confidence in [0, 1].
    landmarks: (5, 2) float32 array of (x, y) in the order of LANDMARK_NAMES,
        or None if the detector gives none.
    detector: name of the model that produced the face (e.g. "retinaface-mnet025").
    extra: further JSON-ready values (written beside the fields by ``to_dict``).

    Box convention: a detector returns the face it estimates, also where the face is cut
    by the image border, so a box (and landmarks) may reach outside the image (e.g.
    y1 = -9.8). This is the reference implementations' output, which the WIDER FACE
    evaluation scores and the reference-equality tests compare exactly. For the visible
    part use ``face.clipped(width, height)`` (box and landmarks clamped to the image),
    ``face.crop(image)`` (the pixels of the clipped box, never an empty or wrapped crop
    when the box overlaps the image), or load the detector with ``clip_boxes=True``
    (``facesieve.load(..., clip_boxes=True)``; ``facesieve detect --clip-boxes``).

    Faces compare with ``==`` (all fields; landmarks by value), and
    ``Face.from_dict(face.to_dict()) == face``.
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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Face):
            return NotImplemented
        if tuple(float(v) for v in self.box) != tuple(float(v) for v in other.box):
            return False
        if float(self.score) != float(other.score) or self.detector != other.detector:
            return False
        a, b = self.landmarks, other.landmarks
        if (a is None) != (b is None) or (a is not None and not np.array_equal(np.asarray(a), np.asarray(b))):
            return False
        return _values_equal(self.extra, other.extra)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def clipped(self, width: int, height: int) -> "Face":
        """A copy with box and landmarks clamped to the image [0, width] x [0, height] (pixels).

        The box then covers only the visible part of the face; a landmark outside the image
        (e.g. an eye cut off) lands on the border. score, detector and extra are kept.
        """
        w, h = float(width), float(height)
        x1, y1, x2, y2 = (float(v) for v in self.box)
        box = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
        lm = None
        if self.landmarks is not None:
            lm = np.asarray(self.landmarks, dtype=np.float32).copy()
            np.clip(lm[:, 0], 0.0, w, out=lm[:, 0])
            np.clip(lm[:, 1], 0.0, h, out=lm[:, 1])
        return Face(box=box, score=self.score, landmarks=lm, detector=self.detector, extra=dict(self.extra))

    def crop(self, image: Any) -> Any:
        """The pixels of the box in ``image`` (the image the face was found in), clipped to the
        image and widened to whole pixels (floor x1/y1, ceil x2/y2): for an (H, W, ...) array
        the view ``image[y1:y2, x1:x2]``; for a PIL image ``image.crop(...)`` (a PIL image).
        Empty only if the box lies outside the image."""
        if hasattr(image, "crop") and hasattr(image, "size") and not hasattr(image, "shape"):  # PIL.Image
            w, h = image.size
            x1, y1, x2, y2 = self.clipped(w, h).box
            return image.crop((int(math.floor(x1)), int(math.floor(y1)), int(math.ceil(x2)), int(math.ceil(y2))))
        h, w = image.shape[:2]
        x1, y1, x2, y2 = self.clipped(w, h).box
        return image[int(math.floor(y1)) : int(math.ceil(y2)), int(math.floor(x1)) : int(math.ceil(x2))]

    def to_dict(self, decimals: int | None = None) -> dict[str, Any]:
        """JSON-ready dict: box as [x1, y1, x2, y2], score, landmarks as [[x, y] * 5] (or None),
        detector (when set), and the ``extra`` items beside them.

        decimals: None (default) keeps every value exactly, so that
            ``Face.from_dict(face.to_dict()) == face`` (landmarks are written as the shortest
            decimals that read back as the same float32); an int rounds box and landmarks to
            that many decimals and the score to ``decimals + 3`` (what ``facesieve detect``
            writes: 3, i.e. 0.001 px).
        Raises ValueError when an ``extra`` key is one of CORE_KEYS.
        """
        if decimals is None:
            box = [float(v) for v in self.box]
            score = float(self.score)
            lms = None
            if self.landmarks is not None:
                lm = np.asarray(self.landmarks)
                if lm.dtype == np.float32:  # shortest text that reads back as the same float32
                    lms = [[float(str(x)), float(str(y))] for x, y in lm.reshape(-1, 2)]
                else:
                    lms = np.asarray(lm, dtype=np.float64).reshape(-1, 2).tolist()
        else:
            box = [round(float(v), decimals) for v in self.box]
            score = round(float(self.score), decimals + 3)
            lms = None if self.landmarks is None else [
                [round(float(x), decimals), round(float(y), decimals)] for x, y in np.asarray(self.landmarks)
            ]
        d: dict[str, Any] = {"box": box, "score": score, "landmarks": lms}
        if self.detector:
            d["detector"] = self.detector
        if self.extra:
            clash = [k for k in self.extra if k in CORE_KEYS]
            if clash:
                raise ValueError(f"Face.extra key(s) {clash} clash with the face's own fields {CORE_KEYS}")
            d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Face":
        """Inverse of ``to_dict``: keys other than CORE_KEYS go to ``extra``.

        d: {"box": [x1, y1, x2, y2] image pixels, "score": 0..1, optional "landmarks":
        5 [x, y] pairs in LANDMARK_NAMES order (pixels) or null, optional "detector", ...}
        -- e.g. a line of ``facesieve detect``'s faces.jsonl or a video manifest row.
        Returns a Face with a float box tuple and (5, 2) float32 landmarks (or None).
        Raises KeyError without "box" / "score", ValueError for a box that is not 4
        numbers or landmarks that are not 5 (x, y) pairs."""
        box = tuple(float(v) for v in d["box"])
        if len(box) != 4:
            raise ValueError(f"a face box needs 4 numbers (x1, y1, x2, y2), got {d['box']!r}")
        lm = d.get("landmarks")
        return cls(
            box=box,  # type: ignore[arg-type]
            score=float(d["score"]),
            landmarks=None if lm is None else np.asarray(lm, dtype=np.float32).reshape(5, 2),
            detector=d.get("detector", "") or "",
            extra={k: v for k, v in d.items() if k not in CORE_KEYS},
        )


def _values_equal(a: Any, b: Any) -> bool:
    """== that also compares numpy arrays (inside dicts / lists) by value."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


class FaceArrays(NamedTuple):
    """Faces of one image as arrays (see ``faces_to_arrays``)."""

    boxes: np.ndarray
    """(N, 4) float32 xyxy, original-image pixels."""
    scores: np.ndarray
    """(N,) float32."""
    landmarks: np.ndarray
    """(N, 5, 2) float32 (x, y) in LANDMARK_NAMES order; NaN for a face without landmarks."""


def faces_to_arrays(faces: Iterable[Face]) -> FaceArrays:
    """Stack a list of Faces into arrays: boxes (N, 4), scores (N,), landmarks (N, 5, 2),
    all float32 (N = 0 gives (0, 4), (0,), (0, 5, 2)). Unpacks as a tuple:
    ``boxes, scores, landmarks = faces_to_arrays(faces)``."""
    faces = list(faces)
    n = len(faces)
    boxes = np.array([f.box for f in faces], dtype=np.float32).reshape(n, 4)
    scores = np.array([f.score for f in faces], dtype=np.float32).reshape(n)
    landmarks = np.full((n, 5, 2), np.nan, dtype=np.float32)
    for i, f in enumerate(faces):
        if f.landmarks is not None:
            landmarks[i] = np.asarray(f.landmarks, dtype=np.float32).reshape(5, 2)
    return FaceArrays(boxes, scores, landmarks)


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

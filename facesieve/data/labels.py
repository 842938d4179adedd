"""Face box/landmark annotations and the label files training reads and writes.

Formats:

* RetinaFace ``label.txt`` (the file biubug6/insightface RetinaFace train on)::

      # 0--Parade/0_Parade_marchingband_1_849.jpg
      449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 ... 538.357 431.491 0.0 0.82

  A ``#`` line names an image (relative to ``images/`` beside the label file; extra
  tokens after the path, e.g. width and height, are ignored). Each following line is one
  face: ``x y w h`` (top-left corner and size, pixels), then 5 landmarks as ``x y v``
  (v = visibility flag as written by the annotators) and a score. A face without
  landmarks has ``-1`` in all 16 landmark/score fields. Lines with only ``x y w h`` are
  accepted (boxes only), as are ``x y w h`` + 10 landmark coordinates.
* JSON Lines (our own): one image per line, paths relative to the file's folder::

      {"image": "a/b.jpg", "faces": [{"box": [x1, y1, x2, y2], "landmarks": [[x, y], ...5] | null}]}

  Boxes are xyxy in pixels like ``Face.to_dict``; ``"ignore": true`` marks a face
  that is dropped when loading for training.
* WIDER FACE ``wider_face_*_bbx_gt.txt``: read through ``facesieve.data.widerface``.

Every face keeps its landmarks only when they exist; faces without landmarks train
boxes and scores only.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facesieve.io.atomic import atomic_open

MISSING = -1.0
"""Value written for the landmark fields of a face without landmarks (label.txt)."""


@dataclass
class ImageLabels:
    """Ground truth of one image, in original-image pixels.

    path: image path relative to the dataset's image root (posix separators), or absolute.
    boxes: (N, 4) float32 xyxy.
    landmarks: (N, 5, 2) float32 (x, y) in LANDMARK_NAMES order; -1 where a face has none.
    has_landmarks: (N,) bool.
    visibility: (N, 5) float32 per-landmark flag from label.txt (-1 where absent).
    scores: (N,) float32 per-face score column of label.txt (-1 where absent).
    """

    path: str
    boxes: np.ndarray
    landmarks: np.ndarray = field(default=None)  # type: ignore[assignment]
    has_landmarks: np.ndarray = field(default=None)  # type: ignore[assignment]
    visibility: np.ndarray = field(default=None)  # type: ignore[assignment]
    scores: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = self.boxes.shape[0]
        if self.landmarks is None:
            self.landmarks = np.full((n, 5, 2), MISSING, np.float32)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(n, 5, 2)
        if self.has_landmarks is None:
            self.has_landmarks = ~np.all(self.landmarks == MISSING, axis=(1, 2))
        self.has_landmarks = np.asarray(self.has_landmarks, dtype=bool).reshape(n)
        self.landmarks[~self.has_landmarks] = MISSING
        if self.visibility is None:
            self.visibility = np.where(self.has_landmarks[:, None], 0.0, MISSING).repeat(5, 1)
        self.visibility = np.asarray(self.visibility, dtype=np.float32).reshape(n, 5)
        if self.scores is None:
            self.scores = np.full(n, MISSING, np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def subset(self, keep: np.ndarray) -> "ImageLabels":
        """The faces selected by a bool mask or index array."""
        return ImageLabels(
            self.path, self.boxes[keep], self.landmarks[keep], self.has_landmarks[keep],
            self.visibility[keep], self.scores[keep],
        )


@dataclass
class BoxDataset:
    """Images with face annotations. ``root / item.path`` is the image file."""

    root: Path
    items: list[ImageLabels]
    source: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def image_path(self, index: int) -> Path:
        return self.root / self.items[index].path

    @property
    def num_faces(self) -> int:
        return sum(len(it) for it in self.items)

    @property
    def num_landmark_faces(self) -> int:
        return sum(int(it.has_landmarks.sum()) for it in self.items)


class LabelFormatError(ValueError):
    """A label file could not be parsed; the message names file and line."""


# --------------------------------------------------------------------------- label.txt


def read_label_txt(path: str | os.PathLike) -> list[ImageLabels]:
    """Parse a RetinaFace label.txt into ImageLabels (boxes xyxy = x, y, x+w, y+h)."""
    path = Path(path)
    items: list[ImageLabels] = []
    cur_path: str | None = None
    rows: list[list[float]] = []

    def flush() -> None:
        if cur_path is not None:
            items.append(_labels_from_rows(cur_path, rows))

    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                flush()
                parts = line[1:].split()
                if not parts:
                    raise LabelFormatError(f"{path}:{lineno}: '#' line without an image path")
                cur_path, rows = parts[0], []
                continue
            if cur_path is None:
                raise LabelFormatError(f"{path}:{lineno}: face line before any '# image' line")
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                raise LabelFormatError(f"{path}:{lineno}: non-numeric value in {line!r}") from None
            if len(vals) not in (4, 14, 19, 20):
                raise LabelFormatError(
                    f"{path}:{lineno}: expected 4, 14, 19 or 20 numbers per face, got {len(vals)}"
                )
            rows.append(vals)
    flush()
    return items


def _labels_from_rows(image: str, rows: list[list[float]]) -> ImageLabels:
    n = len(rows)
    boxes = np.zeros((n, 4), np.float32)
    lms = np.full((n, 5, 2), MISSING, np.float32)
    vis = np.full((n, 5), MISSING, np.float32)
    scores = np.full(n, MISSING, np.float32)
    for i, v in enumerate(rows):
        x, y, w, h = v[:4]
        boxes[i] = (x, y, x + w, y + h)
        if len(v) == 14:
            lms[i] = np.asarray(v[4:14], np.float32).reshape(5, 2)
            vis[i] = 0.0
        elif len(v) >= 19:
            trip = np.asarray(v[4:19], np.float32).reshape(5, 3)
            lms[i], vis[i] = trip[:, :2], trip[:, 2]
            if len(v) == 20:
                scores[i] = v[19]
    has = ~np.all(lms == MISSING, axis=(1, 2))
    return ImageLabels(image, boxes, lms, has, vis, scores)


def format_label_txt(items: Iterable[ImageLabels]) -> str:
    """label.txt text: every face with 20 numbers (landmark/score fields -1 where absent)."""
    out: list[str] = []
    for it in items:
        out.append(f"# {it.path}")
        for i in range(len(it)):
            x1, y1, x2, y2 = (float(v) for v in it.boxes[i])
            vals = [x1, y1, x2 - x1, y2 - y1]
            if it.has_landmarks[i]:
                for (lx, ly), v in zip(it.landmarks[i], it.visibility[i]):
                    vals += [float(lx), float(ly), float(v) if v >= 0 else 0.0]
                vals.append(float(it.scores[i]))
            else:
                vals += [MISSING] * 16
            out.append(" ".join(_num(v) for v in vals))
    return "\n".join(out) + "\n"


def write_label_txt(path: str | os.PathLike, items: Iterable[ImageLabels]) -> None:
    """Write items as a RetinaFace label.txt, atomically (temp file + rename)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_label_txt(items))


def _num(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"cannot write non-finite value {v} to a label file")
    r = round(v, 3)
    return str(int(r)) if r == int(r) else f"{r:.3f}".rstrip("0")


# --------------------------------------------------------------------------- JSON Lines


def read_jsonl(path: str | os.PathLike, drop_ignored: bool = True) -> list[ImageLabels]:
    """Parse our JSON Lines format (one image per line; see module docstring)."""
    path = Path(path)
    items: list[ImageLabels] = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                image = str(rec["image"])
                faces = [fc for fc in rec.get("faces", []) if not (drop_ignored and fc.get("ignore"))]
                boxes = np.asarray([fc["box"] for fc in faces], np.float32).reshape(-1, 4)
                lms = np.full((len(faces), 5, 2), MISSING, np.float32)
                for i, fc in enumerate(faces):
                    if fc.get("landmarks") is not None:
                        lms[i] = np.asarray(fc["landmarks"], np.float32).reshape(5, 2)
                has = np.asarray([fc.get("landmarks") is not None for fc in faces], bool)
                scores = np.asarray([float(fc.get("score", MISSING)) for fc in faces], np.float32)
            except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
                raise LabelFormatError(f"{path}:{lineno}: {type(e).__name__}: {e}") from None
            items.append(ImageLabels(image, boxes, lms, has, scores=scores))
    return items


def format_jsonl(items: Iterable[ImageLabels]) -> str:
    lines = []
    for it in items:
        faces = []
        for i in range(len(it)):
            fc: dict = {"box": [round(float(v), 3) for v in it.boxes[i]]}
            fc["landmarks"] = (
                [[round(float(x), 3), round(float(y), 3)] for x, y in it.landmarks[i]]
                if it.has_landmarks[i] else None
            )
            if it.scores[i] >= 0:
                fc["score"] = round(float(it.scores[i]), 6)
            faces.append(fc)
        lines.append(json.dumps({"image": it.path, "faces": faces}))
    return "\n".join(lines) + "\n"


def write_jsonl(path: str | os.PathLike, items: Iterable[ImageLabels]) -> None:
    """Write items as JSON Lines, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(format_jsonl(items))


# --------------------------------------------------------------------------- loading


def filter_faces(items: Sequence[ImageLabels], min_size: float = 1.0) -> list[ImageLabels]:
    """Drop degenerate faces (width or height < min_size pixels); keep images with none left."""
    out = []
    for it in items:
        w = it.boxes[:, 2] - it.boxes[:, 0]
        h = it.boxes[:, 3] - it.boxes[:, 1]
        out.append(it.subset((w >= min_size) & (h >= min_size)))
    return out


def load_box_dataset(
    path: str | os.PathLike, images: str | os.PathLike | None = None, keep_invalid: bool = False
) -> BoxDataset:
    """Load a face dataset from a label file or a folder holding one.

    path: a ``label.txt`` (RetinaFace), a ``*.jsonl`` (ours), a ``wider_face_*_bbx_gt.txt``
        (official WIDER FACE; faces flagged invalid are dropped unless keep_invalid), or a
        folder containing one of them (searched in that order).
    images: image root; default ``images/`` beside the label file when it exists (label.txt,
        WIDER), else the label file's folder.
    """
    p = Path(path)
    if p.is_dir():
        p = _find_label_file(p)
    name = p.name
    if p.suffix == ".jsonl":
        items = read_jsonl(p)
    elif name.endswith("_bbx_gt.txt"):
        items = read_wider_gt_labels(p, keep_invalid=keep_invalid)
    else:
        items = read_label_txt(p)
    if images is not None:
        root = Path(images)
    elif (p.parent / "images").is_dir() and p.suffix != ".jsonl":
        root = p.parent / "images"
    else:
        root = p.parent
    return BoxDataset(root=root, items=filter_faces(items), source=str(p))


def _find_label_file(folder: Path) -> Path:
    for pattern in ("label.txt", "*.jsonl", "wider_face_*_bbx_gt.txt"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    raise FileNotFoundError(
        f"{folder}: no label.txt, *.jsonl or wider_face_*_bbx_gt.txt found in the folder"
    )


def read_wider_gt_labels(path: str | os.PathLike, keep_invalid: bool = False) -> list[ImageLabels]:
    """Official WIDER FACE gt text -> ImageLabels (boxes only; invalid faces dropped by default).

    WIDER boxes ``[x, y, w, h]`` become xyxy ``[x, y, x + w, y + h]``.
    """
    from facesieve.data.widerface import read_bbx_gt

    out = []
    for ann in read_bbx_gt(path):
        b = np.asarray(ann.boxes, np.float32).reshape(-1, 4)
        xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
        keep = np.ones(len(b), bool) if keep_invalid else ~ann.invalid
        out.append(ImageLabels(ann.path, xyxy[keep]))
    return out

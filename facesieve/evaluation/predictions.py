"""WIDER FACE prediction files: ``<pred_dir>/<event>/<image_stem>.txt``.

Standard layout of one file::

    <image_stem>
    <count>
    x y w h score        (one line per detection; xywh in original pixels)

Writers are atomic and lossless (floats written with ``repr``). The reader accepts the common
variants: a name line with a path or ``.jpg`` suffix, a missing name or count line, comma
separators, extra columns after the score (e.g. landmarks), blank lines, CRLF, a count that
disagrees with the number of box lines (the box lines win).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from facesieve.data.widerface import WiderFaceDataError, image_key
from facesieve.io import atomic_write_text
from facesieve.types import Face

_SPLIT = re.compile(r"[\s,;]+")


def faces_to_array(faces: Sequence[Face]) -> np.ndarray:
    """Faces (xyxy boxes) -> (N, 5) float64 ``[x, y, w, h, score]``."""
    if not faces:
        return np.zeros((0, 5), dtype=np.float64)
    a = np.array([[*f.box, f.score] for f in faces], dtype=np.float64)
    a[:, 2:4] -= a[:, 0:2]
    return a


def as_pred_array(a: np.ndarray | Sequence, key: str = "") -> np.ndarray:
    """(N, >=5) array-like -> (N, 5) float64 ``[x, y, w, h, score]`` (extra columns dropped)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 5:
        raise ValueError(f"predictions for {key or 'an image'}: expected (N, 5) [x, y, w, h, score], got {arr.shape}")
    return arr[:, :5]


def format_prediction(stem: str, boxes: np.ndarray) -> str:
    """Text of one prediction file; boxes (N, 5) ``[x, y, w, h, score]``."""
    arr = as_pred_array(boxes, stem)
    lines = [stem, str(len(arr))]
    lines += [" ".join(repr(float(v)) for v in row) for row in arr]
    return "\n".join(lines) + "\n"


def write_prediction_file(path: str | os.PathLike, stem: str, boxes: np.ndarray) -> None:
    """Atomically write one prediction file (see ``format_prediction``)."""
    atomic_write_text(path, format_prediction(stem, boxes))


def write_predictions(pred_dir: str | os.PathLike, predictions: Mapping[str, np.ndarray]) -> list[Path]:
    """Write ``{"<event>/<stem>": (N, 5) xywh+score}`` as ``pred_dir/<event>/<stem>.txt``; returns the paths."""
    pred_dir = Path(pred_dir)
    paths = []
    for key, boxes in predictions.items():
        key = image_key(key)
        p = pred_dir / f"{key}.txt"
        write_prediction_file(p, key.rsplit("/", 1)[-1], boxes)
        paths.append(p)
    return paths


def parse_prediction(text: str, source: str = "<text>") -> tuple[str | None, np.ndarray]:
    """Parse one prediction file -> (name from the first line or None, (N, 5) float64).

    Box lines are lines of >= 5 numbers; the first 5 are ``x y w h score``. A leading
    non-numeric line is the image name; a line with a single integer before the boxes is
    the count (not checked against the boxes, which win).
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    name: str | None = None
    rows: list[list[float]] = []
    for n, ln in enumerate(lines):
        toks = [t for t in _SPLIT.split(ln) if t]
        try:
            vals = [float(t) for t in toks]
        except ValueError:
            if n == 0:
                name = ln
                continue
            raise WiderFaceDataError(f"{source}: line {n + 1} is not numeric: {ln!r}") from None
        if len(vals) == 1 and not rows:
            continue  # count line
        if len(vals) < 5:
            raise WiderFaceDataError(f"{source}: line {n + 1} has {len(vals)} numbers, expected x y w h score")
        rows.append(vals[:5])
    return name, np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_prediction_file(path: str | os.PathLike) -> tuple[str | None, np.ndarray]:
    """Read one prediction file (see ``parse_prediction``)."""
    p = Path(path)
    return parse_prediction(p.read_text(encoding="utf-8", errors="replace"), source=str(p))


def read_predictions(pred_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every ``*.txt`` under pred_dir -> ``{"<event>/<stem>": (N, 5)}``.

    The key comes from the file's path (``<event>/<stem>.txt``; for files directly in
    pred_dir just ``<stem>``), not from the name line, which tools write inconsistently.
    Other files are ignored; a ``.txt`` that is not a prediction file is skipped with a warning
    (its image then counts as missing).
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise WiderFaceDataError(f"{root}: prediction directory not found")
    out: dict[str, np.ndarray] = {}
    bad: list[str] = []
    for p in sorted(root.rglob("*.txt")):
        try:
            _, arr = read_prediction_file(p)
        except WiderFaceDataError as e:
            bad.append(str(e))
            continue
        out[image_key(p.relative_to(root).as_posix())] = arr
    if bad:
        warnings.warn(f"{root}: skipped {len(bad)} unreadable .txt file(s), e.g. {bad[0]}", stacklevel=2)
    return out


def match_prediction_keys(
    predictions: Mapping[str, np.ndarray], keys: Iterable[str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Map predictions onto GT keys ``"<event>/<stem>"``.

    A prediction matches by its full key, else by its stem (WIDER stems are unique across
    events). Returns ({gt_key: (N, 5)} for matched keys, [gt keys without a prediction]).
    """
    by_key = {image_key(k): as_pred_array(v, k) for k, v in predictions.items()}
    by_stem: dict[str, np.ndarray] = {}
    for k, v in by_key.items():
        by_stem.setdefault(k.rsplit("/", 1)[-1], v)
    found: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for k in keys:
        if k in by_key:
            found[k] = by_key[k]
        elif k.rsplit("/", 1)[-1] in by_stem:
            found[k] = by_stem[k.rsplit("/", 1)[-1]]
        else:
            missing.append(k)
    return found, missing

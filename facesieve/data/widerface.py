"""WIDER FACE readers: the ``wider_face_{train,val}_bbx_gt.txt`` text format, the official
evaluation ``.mat`` files, and the image list of a data directory.

Keys: an image is named by its *key* ``"<event>/<stem>"`` (e.g. ``"0--Parade/0_Parade_Parade_0_120"``),
independent of the ``images/`` prefix and the ``.jpg`` suffix. Boxes are ``[x1, y1, w, h]``
(xywh, pixels, as in the official files) unless a name says otherwise.

Data directory layout (e.g. ``shared/data/wider_val_dev``)::

    images/<event>/<file>.jpg
    wider_face_val_bbx_gt.txt          (or wider_face_split/wider_face_val_bbx_gt.txt)
    <dir name>.txt or wider_val_dev.txt   optional list of images/<event>/<file>.jpg
    ground_truth/wider_{face,easy,medium,hard}_val.mat   optional official eval files
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from facesieve.io import atomic_write_text

ATTRIBUTE_NAMES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
"""Column order of ``WiderAnnotation.attributes`` (the 6 integers after each box)."""

SETTINGS = ("easy", "medium", "hard")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LIST_FILE_NAMES = ("wider_val_dev.txt", "image_list.txt", "images.txt")


class WiderFaceDataError(ValueError):
    """A WIDER FACE file or data directory is missing or malformed (message says which and why)."""


@dataclass
class WiderAnnotation:
    """Ground truth of one image from the text format.

    path: image path relative to ``images/``, e.g. ``"0--Parade/0_Parade_Parade_0_120.jpg"``.
    boxes: (N, 4) float64 ``[x1, y1, w, h]`` pixels.
    attributes: (N, 6) int64 in ATTRIBUTE_NAMES order.
    """

    path: str
    boxes: np.ndarray
    attributes: np.ndarray

    @property
    def key(self) -> str:
        return image_key(self.path)

    @property
    def invalid(self) -> np.ndarray:
        """(N,) bool: faces flagged invalid by the annotators."""
        return self.attributes[:, 3].astype(bool)


def image_key(path: str | os.PathLike) -> str:
    """``"images/0--Parade/x.jpg"``, ``"0--Parade/x.jpg"`` or ``"0--Parade/x"`` -> ``"0--Parade/x"``.

    A bare name ``"x.jpg"`` gives ``"x"`` (no event).
    """
    parts = Path(str(path).replace("\\", "/")).parts
    stem = parts[-1]
    for suf in IMAGE_SUFFIXES + (".txt",):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    return f"{parts[-2]}/{stem}" if len(parts) >= 2 else stem


# ---------------------------------------------------------------------------- text format


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def parse_bbx_gt(text: str, source: str = "<text>") -> list[WiderAnnotation]:
    """Parse the ``wider_face_*_bbx_gt.txt`` format.

    Per image: a path line, a count line, then ``count`` lines
    ``x1 y1 w h blur expression illumination invalid occlusion pose``. An image with no face
    has count 0 followed by one all-zero line (official files); a missing placeholder line is
    tolerated. Blank lines, CRLF and trailing spaces are ignored.
    """
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    out: list[WiderAnnotation] = []
    i = 0
    while i < len(lines):
        path = lines[i]
        if _is_number(path.split()[0]) and len(path.split()) > 1:
            raise WiderFaceDataError(f"{source}: line '{path}' where an image path was expected")
        if i + 1 >= len(lines):
            raise WiderFaceDataError(f"{source}: image {path} has no face-count line")
        try:
            count = int(lines[i + 1].split()[0])
        except ValueError:
            raise WiderFaceDataError(f"{source}: bad face count {lines[i + 1]!r} for {path}") from None
        i += 2
        rows: list[list[float]] = []
        if count == 0:
            # official placeholder "0 0 0 0 0 0 0 0 0 0"; skip it when present
            if i < len(lines) and len(lines[i].split()) >= 4 and all(_is_number(t) for t in lines[i].split()):
                i += 1
        for k in range(count):
            if i >= len(lines):
                raise WiderFaceDataError(f"{source}: {path} declares {count} faces, file ends after {k}")
            toks = lines[i].split()
            if len(toks) < 4 or not all(_is_number(t) for t in toks):
                raise WiderFaceDataError(f"{source}: {path}: face {k + 1}/{count}: bad line {lines[i]!r}")
            vals = [float(t) for t in toks[:10]]
            rows.append(vals + [0.0] * (10 - len(vals)))
            i += 1
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 10)
        out.append(WiderAnnotation(path=path, boxes=arr[:, :4].copy(), attributes=arr[:, 4:].astype(np.int64)))
    return out


def read_bbx_gt(path: str | os.PathLike) -> list[WiderAnnotation]:
    """Read a ``wider_face_*_bbx_gt.txt`` file (see ``parse_bbx_gt``), in file order."""
    p = Path(path)
    if not p.is_file():
        raise WiderFaceDataError(f"{p}: ground-truth file not found")
    return parse_bbx_gt(p.read_text(encoding="utf-8"), source=str(p))


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def format_bbx_gt(annotations: Iterable[WiderAnnotation]) -> str:
    """Inverse of ``parse_bbx_gt``: official layout (trailing space on face lines, 10-zero placeholder)."""
    chunks: list[str] = []
    for a in annotations:
        boxes = np.asarray(a.boxes, dtype=np.float64).reshape(-1, 4)
        attrs = np.asarray(a.attributes, dtype=np.int64).reshape(-1, 6)
        chunks.append(f"{a.path}\n{len(boxes)}\n")
        if len(boxes) == 0:
            chunks.append("0 0 0 0 0 0 0 0 0 0 \n")
        for b, at in zip(boxes, attrs):
            chunks.append(" ".join([_fmt_num(v) for v in b] + [str(int(v)) for v in at]) + " \n")
    return "".join(chunks)


def write_bbx_gt(path: str | os.PathLike, annotations: Iterable[WiderAnnotation]) -> None:
    """Write annotations in the official text format (atomic)."""
    atomic_write_text(path, format_bbx_gt(annotations))


# ---------------------------------------------------------------------------- .mat files


@dataclass
class MatImageGT:
    """One image of the official eval .mat files.

    boxes: (N, 4) float64 ``[x1, y1, w, h]`` pixels (``face_bbx_list``).
    keep: setting -> (N,) bool, True for faces counted in that setting (``gt_list``, 1-based in the file).
    attributes: (N, 6) int64 in ATTRIBUTE_NAMES order.
    """

    boxes: np.ndarray
    keep: dict[str, np.ndarray]
    attributes: np.ndarray


@functools.lru_cache(maxsize=8)
def _loadmat_cached(path: str, mtime_ns: int, size: int) -> dict:
    """scipy.io.loadmat, memoised on (path, mtime, size); callers must not modify the arrays."""
    from facesieve.optional import require

    loadmat = require("scipy.io", "reading the WIDER FACE .mat ground truth", "eval").loadmat

    return loadmat(path)


def _loadmat(path: Path) -> dict:
    st = path.stat()
    return _loadmat_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def read_eval_mats(
    gt_dir: str | os.PathLike, keys: Iterable[str] | None = None, split: str = "val"
) -> dict[str, MatImageGT]:
    """Read ``wider_face_<split>.mat`` and ``wider_{easy,medium,hard}_<split>.mat`` from gt_dir.

    Returns ``{key: MatImageGT}`` in the files' event/image order, limited to ``keys`` if given
    (keys absent from the .mat files raise WiderFaceDataError).
    """
    gt_dir = Path(gt_dir)
    names = {"face": f"wider_face_{split}.mat", **{s: f"wider_{s}_{split}.mat" for s in SETTINGS}}
    missing = [n for n in names.values() if not (gt_dir / n).is_file()]
    if missing:
        raise WiderFaceDataError(f"{gt_dir}: missing evaluation file(s) {', '.join(missing)}")
    face = _loadmat(gt_dir / names["face"])
    gt_lists = {s: _loadmat(gt_dir / names[s])["gt_list"] for s in SETTINGS}
    attr_lists = [face[f"{n}_label_list"] for n in ATTRIBUTE_NAMES]
    wanted = None if keys is None else set(keys)
    out: dict[str, MatImageGT] = {}
    for i in range(face["event_list"].shape[0]):
        event = str(face["event_list"][i][0][0])
        files = face["file_list"][i][0]
        for j in range(len(files)):
            key = f"{event}/{files[j][0][0]}"
            if wanted is not None and key not in wanted:
                continue
            boxes = np.asarray(face["face_bbx_list"][i][0][j][0], dtype=np.float64).reshape(-1, 4)
            keep = {}
            for s in SETTINGS:
                idx = np.asarray(gt_lists[s][i][0][j][0], dtype=np.int64).reshape(-1) - 1
                mask = np.zeros(len(boxes), dtype=bool)
                mask[idx] = True
                keep[s] = mask
            attrs = np.stack(
                [np.asarray(a[i][0][j][0], dtype=np.int64).reshape(-1) for a in attr_lists], axis=1
            ).reshape(-1, 6) if len(boxes) else np.zeros((0, 6), np.int64)
            out[key] = MatImageGT(boxes=boxes, keep=keep, attributes=attrs)
    if wanted is not None and len(out) != len(wanted):
        lost = sorted(wanted - set(out))
        raise WiderFaceDataError(
            f"{gt_dir}: {len(lost)} image(s) not in {names['face']}, e.g. {', '.join(lost[:3])}"
        )
    return out


# ---------------------------------------------------------------------------- data directory


@dataclass(frozen=True)
class WiderDataDir:
    """Located files of a WIDER FACE data directory (see module docstring). Missing optional parts are None."""

    root: Path
    images_dir: Path
    gt_text: Path | None
    mat_dir: Path | None
    list_file: Path | None


def locate_data_dir(data_dir: str | os.PathLike) -> WiderDataDir:
    """Find images, GT text, .mat dir and image list under data_dir; raise WiderFaceDataError if unusable."""
    root = Path(data_dir)
    if not root.is_dir():
        raise WiderFaceDataError(f"{root}: data directory not found")
    images_dir = next((p for p in (root / "images", root / "WIDER_val" / "images") if p.is_dir()), None)
    if images_dir is None:
        raise WiderFaceDataError(f"{root}: no images/ folder (expected images/<event>/<file>.jpg)")
    gt_text = next(
        (
            p
            for d in (root, root / "wider_face_split")
            for p in sorted(d.glob("wider_face_*_bbx_gt.txt"))
            if p.is_file()
        ),
        None,
    )
    mat_dir = next(
        (d for d in (root / "ground_truth", root, root / "eval_tools" / "ground_truth") if (d / "wider_face_val.mat").is_file()),
        None,
    )
    list_file = next((root / n for n in (f"{root.resolve().name}.txt", *LIST_FILE_NAMES) if (root / n).is_file()), None)
    if gt_text is None and mat_dir is None:
        raise WiderFaceDataError(
            f"{root}: no ground truth (neither wider_face_*_bbx_gt.txt nor ground_truth/wider_face_val.mat)"
        )
    return WiderDataDir(root=root, images_dir=images_dir, gt_text=gt_text, mat_dir=mat_dir, list_file=list_file)


def list_images(data_dir: str | os.PathLike, check_exists: bool = True) -> list[str]:
    """Image paths relative to ``images/`` (``"<event>/<file>.jpg"``), sorted by that string.

    Taken from the list file (``wider_val_dev.txt``) when there is one, else from scanning
    ``images/<event>/``. ``check_exists``: raise WiderFaceDataError naming missing files.
    """
    d = locate_data_dir(data_dir)
    if d.list_file is not None:
        rels = []
        for ln in d.list_file.read_text(encoding="utf-8").splitlines():
            ln = ln.strip().replace("\\", "/")
            if not ln:
                continue
            rels.append(ln[len("images/"):] if ln.startswith("images/") else ln)
    else:
        rels = [
            p.relative_to(d.images_dir).as_posix()
            for p in d.images_dir.glob("*/*")
            if p.suffix.lower() in IMAGE_SUFFIXES
        ]
    rels = sorted(set(rels))
    if not rels:
        raise WiderFaceDataError(f"{d.root}: no images found")
    if check_exists:
        missing = [r for r in rels if not (d.images_dir / r).is_file()]
        if missing:
            raise WiderFaceDataError(
                f"{d.images_dir}: {len(missing)} listed image(s) missing, e.g. {', '.join(missing[:3])}"
            )
    return rels


def image_paths(data_dir: str | os.PathLike, rels: Sequence[str]) -> list[Path]:
    """Absolute paths of ``list_images`` entries."""
    d = locate_data_dir(data_dir)
    return [d.images_dir / r for r in rels]

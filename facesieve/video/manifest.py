"""Per-video manifests (JSON Lines, optional Parquet) and the completion marker.

Layout of a run directory ``OUT``::

    OUT/summary.json                      run summary (rewritten after every video)
    OUT/<video_id>/manifest.jsonl         one row per face (and per sampled frame without one)
    OUT/<video_id>/manifest.parquet       same rows, with --parquet
    OUT/<video_id>/crops/<frame>_<face>.jpg
    OUT/<video_id>/done.json              completion marker, written last

A video's directory is built under ``OUT/.tmp-<video_id>-*`` and renamed into place
complete, so ``OUT/<video_id>`` is never half-written. A failed video gets a directory
with a one-row manifest carrying the error and no ``done.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from facesieve.io.atomic import atomic_open, atomic_write_text

MANIFEST_JSONL = "manifest.jsonl"
MANIFEST_PARQUET = "manifest.parquet"
DONE_MARKER = "done.json"
SUMMARY = "summary.json"

MANIFEST_FIELDS = (
    "video",  # input path as given
    "video_id",  # output directory name
    "sample",  # position 0..N-1 in the video's output sequence; null for frames without faces
    "frame_index",  # frame number in presentation order (0-based)
    "timestamp",  # seconds since the first frame
    "pts",  # raw presentation timestamp (stream time base)
    "detector",  # detector whose faces were kept; null when none found a face
    "detectors_tried",  # detectors run on the frame, in order
    "oversampled",  # true for a duplicate added to reach N
    "face_index",  # face number within the frame (highest score first); null without a face
    "box",  # [x1, y1, x2, y2] full-resolution upright frame pixels
    "score",
    "landmarks",  # [[x, y] x 5] in LANDMARK_NAMES order, frame pixels
    "crop",  # crop image path relative to OUT; duplicates point at the original's file
    "crop_kind",  # "aligned" | "box" | null
    "error",  # null, or why the video failed (then most other fields are null)
)


def video_rows(result: Any) -> list[dict[str, Any]]:
    """A ``facesieve.video.VideoResult``'s manifest rows (dicts keyed by MANIFEST_FIELDS; missing keys are null):
    one per face of each output sample (duplicates flagged ``oversampled``), one per sampled
    frame without faces, or a single error row for a failed video. Coordinates are rounded
    to 3 decimals (frame pixels). (``result`` is not typed by import: results.py imports
    this module.)"""
    base = {"video": result.path, "video_id": result.video_id}
    if result.status == "failed":
        return [{**base, "error": result.error}]
    slots: dict[int, list[tuple[int, bool]]] = {}
    for s, (i, dup) in enumerate(result.samples):
        slots.setdefault(i, []).append((s, dup))
    rows: list[dict[str, Any]] = []
    for i, fr in enumerate(result.frames):
        common = {
            **base,
            "frame_index": fr.index,
            "timestamp": round(fr.timestamp, 6),
            "pts": fr.pts,
            "detector": fr.detector,
            "detectors_tried": list(fr.tried),
        }
        if not fr.faces or i not in slots:
            rows.append({**common, "oversampled": False})
            continue
        for s, dup in slots[i]:
            for j, face in enumerate(fr.faces):
                d = face.to_dict(decimals=3)
                rows.append({
                    **common,
                    "sample": s,
                    "oversampled": dup,
                    "face_index": j,
                    "box": d["box"],
                    "score": d["score"],
                    "landmarks": d["landmarks"],
                    "crop": fr.crop_paths[j] if j < len(fr.crop_paths) else None,
                    "crop_kind": fr.crop_kinds[j] if j < len(fr.crop_kinds) else None,
                })
    return rows


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Atomically write rows as JSON Lines (keys in MANIFEST_FIELDS order)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: _clean(r.get(k)) for k in MANIFEST_FIELDS}, separators=(",", ":")) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _parquet_schema():
    from facesieve.optional import require

    pa = require("pyarrow", "parquet manifests (--parquet)", "parquet")

    f64 = pa.float64()
    return pa.schema(
        [
            ("video", pa.string()),
            ("video_id", pa.string()),
            ("sample", pa.int32()),
            ("frame_index", pa.int64()),
            ("timestamp", f64),
            ("pts", pa.int64()),
            ("detector", pa.string()),
            ("detectors_tried", pa.list_(pa.string())),
            ("oversampled", pa.bool_()),
            ("face_index", pa.int32()),
            ("box", pa.list_(f64, 4)),
            ("score", f64),
            ("landmarks", pa.list_(pa.list_(f64, 2), 5)),
            ("crop", pa.string()),
            ("crop_kind", pa.string()),
            ("error", pa.string()),
        ]
    )


def parquet_available() -> bool:
    from facesieve.optional import installed

    return installed("pyarrow")


def write_parquet(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Atomically write rows as Parquet (needs ``pip install 'facesieve[parquet]'``)."""
    from facesieve.optional import require

    pa = require("pyarrow", "parquet manifests (--parquet)", "parquet")
    pq = require("pyarrow.parquet", "parquet manifests (--parquet)", "parquet")
    schema = _parquet_schema()
    table = pa.Table.from_pylist([{k: _clean(r.get(k)) for k in MANIFEST_FIELDS} for r in rows], schema=schema)
    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_marker(video_dir: str | Path) -> dict[str, Any] | None:
    """The completion marker of a video directory, or None when absent or unreadable."""
    p = Path(video_dir) / DONE_MARKER
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

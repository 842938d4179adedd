"""Where a video run's outputs go: a run directory on disk, or nowhere (kept in memory).

On disk (``OutputDir``) each video is built in ``OUT/.tmp-<video_id>-*`` (crops, manifest,
optional Parquet, then the ``done.json`` marker) and renamed into place complete, replacing
an older copy; a failed video gets a directory holding only its one-row error manifest;
``remove_stale`` deletes the temp entries an interrupted run left. ``MemoryOutput`` has the
same methods and keeps the crops as arrays on the ExtractedFrames (``extract()``), so the
pipeline never asks which one it has. See ``manifest`` for the layout.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Protocol, Sequence

import cv2
import numpy as np

from facesieve.io.atomic import atomic_write_bytes
from facesieve.io.paths import make_output_dir
from facesieve.video import manifest as mf
from facesieve.video.results import ExtractedFrame, VideoResult


class VideoOutput(Protocol):
    """One video's outputs while it is being processed."""

    def store_crops(self, frame: ExtractedFrame, crops: Sequence[np.ndarray]) -> None:
        """Keep a frame's RGB uint8 crops (one per face, in ``frame.faces`` order)."""

    def publish(self, result: VideoResult, settings: dict[str, Any], t0: float) -> None:
        """Finish the video: manifest and marker written, made visible complete. Sets
        ``result.timing["total"]`` (seconds since ``t0``, a ``time.perf_counter()``)."""

    def discard(self) -> None:
        """Drop what was written so far (idempotent)."""


class _InMemoryVideo:
    def store_crops(self, frame: ExtractedFrame, crops: Sequence[np.ndarray]) -> None:
        frame.crops = list(crops)

    def publish(self, result: VideoResult, settings: dict[str, Any], t0: float) -> None:
        result.timing["total"] = time.perf_counter() - t0

    def discard(self) -> None:
        pass


class MemoryOutput:
    """No run directory: crops stay on the ExtractedFrames, nothing is written."""

    def start(self, video_id: str) -> VideoOutput:
        return _InMemoryVideo()

    def record_failure(self, result: VideoResult) -> None:
        pass


class _VideoDir:
    def __init__(self, run: OutputDir, video_id: str):
        self.run = run
        self.video_id = video_id
        self.tmp: Path | None = make_output_dir(run.root, f".tmp-{video_id}-")
        (self.tmp / "crops").mkdir()

    def store_crops(self, frame: ExtractedFrame, crops: Sequence[np.ndarray]) -> None:
        assert self.tmp is not None
        for j, im in enumerate(crops):
            name = f"{frame.index:06d}_{j}.{self.run.image_format}"
            self.run.write_image(self.tmp / "crops" / name, im)
            frame.crop_paths.append(f"{self.video_id}/crops/{name}")

    def publish(self, result: VideoResult, settings: dict[str, Any], t0: float) -> None:
        assert self.tmp is not None
        t = time.perf_counter()
        rows = result.rows()
        mf.write_jsonl(self.tmp / mf.MANIFEST_JSONL, rows)
        if self.run.parquet:
            mf.write_parquet(self.tmp / mf.MANIFEST_PARQUET, rows)
        result.timing["write"] += time.perf_counter() - t
        result.timing["total"] = time.perf_counter() - t0
        mf.write_json(self.tmp / mf.DONE_MARKER, {
            "video": result.path, "settings": settings, "summary": result.summary(),
        })
        publish_dir(self.tmp, self.run.root / self.video_id)
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


class OutputDir:
    """A run directory ``root``: per-video temp directories published atomically.

    image_format: "jpg" or "png" crops; jpeg_quality: 0-100; parquet: also write
    manifest.parquet. OSError from the filesystem propagates.
    """

    def __init__(self, root: str | os.PathLike, image_format: str = "jpg", jpeg_quality: int = 95,
                 parquet: bool = False):
        self.root = Path(root)
        self.image_format = image_format
        self.jpeg_quality = int(jpeg_quality)
        self.parquet = parquet

    def start(self, video_id: str) -> VideoOutput:
        """A fresh ``root/.tmp-<video_id>-*`` directory (with ``crops/``) for one video."""
        return _VideoDir(self, video_id)

    def record_failure(self, result: VideoResult) -> None:
        """Publish a failed video's directory: only its one-row error manifest."""
        tmp = make_output_dir(self.root, f".tmp-{result.video_id}-")
        try:
            mf.write_jsonl(tmp / mf.MANIFEST_JSONL, result.rows())
            if self.parquet:
                mf.write_parquet(tmp / mf.MANIFEST_PARQUET, result.rows())
            publish_dir(tmp, self.root / result.video_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def marker(self, video_id: str) -> dict[str, Any] | None:
        """The completion marker of ``root/<video_id>``, or None (absent or unreadable)."""
        return mf.read_marker(self.root / video_id)

    def remove_stale(self) -> None:
        """Delete the ``.tmp-*`` entries an interrupted run (or a killed worker) left."""
        remove_stale(self.root)

    def write_image(self, path: Path, rgb: np.ndarray) -> None:
        """Encode an RGB uint8 (H, W, 3) crop and write it atomically; OSError if encoding fails."""
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality] if self.image_format == "jpg" else []
        ok, buf = cv2.imencode("." + self.image_format, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise OSError(f"could not encode {path.name}")
        atomic_write_bytes(path, buf.tobytes())  # a killed job never leaves a half-written crop


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp directory into place (replacing an older one)."""
    old = None
    if final.exists():
        old = final.with_name(f".tmp-old-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(out: Path) -> None:
    """Delete the ``.tmp-*`` entries an interrupted run (or a killed worker) left in ``out``."""
    for stale in out.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()

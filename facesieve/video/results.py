"""The records of a video run: per frame, per video, per batch (JSON-ready summaries).

Manifest rows are built beside the manifest schema (``manifest.video_rows``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facesieve.types import Face
from facesieve.video import manifest as mf
from facesieve.video.fallback import FallbackStats
from facesieve.video.sampling import DecodeStats


@dataclass
class ExtractedFrame:
    """One sampled frame after the cascade.

    faces: kept faces (after ``keep``), full-resolution upright pixels, best first.
    crops: RGB uint8 crops, one per face (empty with crop="none" or when written to disk).
    crop_paths: crop files relative to the run directory (batch runs).
    """

    index: int
    timestamp: float
    pts: int | None
    detector: str | None
    tried: tuple[str, ...]
    faces: list[Face]
    crop_kinds: list[str] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    crop_paths: list[str] = field(default_factory=list)


@dataclass
class VideoResult:
    """Outcome for one video.

    status: "done", "failed" or "skipped" (already complete in the output directory).
    frames: every sampled frame in time order; samples: the output sequence as
    (position in ``frames``, oversampled) pairs -- N entries when N face frames exist or
    could be filled by oversampling.
    """

    path: str
    video_id: str
    status: str = "done"
    error: str | None = None
    width: int = 0  # upright frame size, pixels
    height: int = 0
    fps: float = 0.0
    duration: float = 0.0
    frame_count: int = 0
    frames: list[ExtractedFrame] = field(default_factory=list)
    samples: list[tuple[int, bool]] = field(default_factory=list)
    decode: DecodeStats = field(default_factory=DecodeStats)
    detection: FallbackStats = field(default_factory=FallbackStats)  # frames per detector
    timing: dict[str, float] = field(default_factory=dict)
    note: str | None = None

    @property
    def face_frames(self) -> list[tuple[ExtractedFrame, bool]]:
        """The output sequence: (frame, oversampled) in order."""
        return [(self.frames[i], dup) for i, dup in self.samples]

    @property
    def faces(self) -> int:
        """Faces found (original frames only, duplicates not counted)."""
        return sum(len(f.faces) for f in self.frames)

    def rows(self) -> list[dict[str, Any]]:
        """Manifest rows (see ``manifest.MANIFEST_FIELDS`` and ``manifest.video_rows``)."""
        return mf.video_rows(self)

    @property
    def cascade(self) -> FallbackStats:
        """Former name of ``detection`` (kept for compatibility)."""
        return self.detection

    def summary(self) -> dict[str, Any]:
        """JSON-ready per-video entry of the run summary."""
        return {
            "video": self.path,
            "video_id": self.video_id,
            "status": self.status,
            "error": self.error,
            "note": self.note,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 4),
            "duration": round(self.duration, 4),
            "frame_count": self.frame_count,
            "frames_sampled": len(self.frames),
            "frames_decoded": self.decode.frames_decoded,
            "face_frames": sum(1 for f in self.frames if f.faces),
            "faces": self.faces,
            "samples": len(self.samples),
            "oversampled": sum(1 for _, dup in self.samples if dup),
            "frames_to_detector": dict(self.detection.sent),
            "faces_from_detector": dict(self.detection.kept),
            "fallback_frames": self.detection.fallback_frames,
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
        }


@dataclass
class VideoRunSummary:
    """Outcome of a video batch run; ``exit_code`` is 0 when no video failed, else 1.

    (Exported as ``facesieve.RunSummary`` / ``facesieve.video.RunSummary`` too; not the
    image CLI's ``facesieve.cli.detect.DetectRunSummary``.)
    """

    out_dir: str
    videos: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    unmatched: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def failed(self) -> int:
        """Videos with status "failed"."""
        return sum(v.status == "failed" for v in self.videos)

    @property
    def done(self) -> int:
        return sum(v.status == "done" for v in self.videos)

    @property
    def skipped(self) -> int:
        return sum(v.status == "skipped" for v in self.videos)

    @property
    def faces(self) -> int:
        return sum(v.faces for v in self.videos if v.status == "done")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_dict(self) -> dict[str, Any]:
        sent: Counter = Counter()
        kept: Counter = Counter()
        timing: Counter = Counter()
        frames = fallback = 0
        for v in self.videos:
            sent.update(v.detection.sent)
            kept.update(v.detection.kept)
            timing.update(v.timing)
            frames += len(v.frames)
            fallback += v.detection.fallback_frames
        return {
            "out_dir": self.out_dir,
            "complete": self.complete,
            "videos": len(self.videos),
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "faces": self.faces,
            "frames_sampled": frames,
            "face_frames": sum(sum(1 for f in v.frames if f.faces) for v in self.videos),
            "frames_to_detector": dict(sent),
            "faces_from_detector": dict(kept),
            "fallback_frames": fallback,
            "fallback_share": round(fallback / frames, 4) if frames else 0.0,
            "seconds": round(self.seconds, 3),
            "timing": {k: round(v, 3) for k, v in timing.items()},
            "unmatched_inputs": self.unmatched,
            "per_video": [v.summary() for v in self.videos],
        }


RunSummary = VideoRunSummary
"""Public name (``facesieve.RunSummary``) of VideoRunSummary."""

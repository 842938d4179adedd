"""The video's fallback chain: a fast primary detector, a stronger fallback where it finds
too little, and oversampling of the frames that have faces. (Not to be confused with
MTCNN's own P-Net -> R-Net -> O-Net cascade inside one detector.)

Boxes and landmarks are always returned in full-resolution frame pixels, whatever size
the detectors were fed.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from facesieve.detectors.base import Detector
from facesieve.types import Face
from facesieve.video.sampling import SampledFrame


@dataclass
class FrameFaces:
    """Fallback-chain result for one frame.

    faces: the kept detector's faces, full-resolution pixels, highest score first.
    detector: name of the detector whose faces were kept (None when neither found any).
    tried: names of the detectors run on this frame, in order.
    """

    faces: list[Face]
    detector: str | None
    tried: tuple[str, ...]


@dataclass
class FallbackStats:
    """Frames sent to each detector, fallback uses and detector time (seconds)."""

    frames: int = 0
    sent: Counter = field(default_factory=Counter)  # detector name -> frames
    kept: Counter = field(default_factory=Counter)  # detector name -> frames whose faces it gave
    fallback_frames: int = 0
    seconds: Counter = field(default_factory=Counter)  # detector name -> seconds

    def merge(self, other: "FallbackStats") -> None:
        self.frames += other.frames
        self.sent.update(other.sent)
        self.kept.update(other.kept)
        self.fallback_frames += other.fallback_frames
        self.seconds.update(other.seconds)


def _resize_long_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image, 1.0
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / w


def _rescale(faces: list[Face], scale: float) -> list[Face]:
    """Map faces found on an image scaled by ``scale`` back to full-resolution pixels."""
    if scale == 1.0:
        return faces
    inv = 1.0 / scale
    for f in faces:
        f.box = tuple(float(v) * inv for v in f.box)  # type: ignore[assignment]
        if f.landmarks is not None:
            f.landmarks = (np.asarray(f.landmarks, dtype=np.float32) * inv).astype(np.float32)
    return faces


class FallbackDetector:
    """Primary detector on every frame, fallback on frames where it found too little.

    primary / fallback: Detectors (fallback None: no second pass).
    min_faces: a frame needs at least this many faces scoring >= ``confident_score``
        from the primary, else the fallback runs on it.
    confident_score: the score a face needs to count towards ``min_faces``.
    primary_max_side / fallback_max_side: long side (pixels) of the image each detector
        sees (None: full resolution). A ``SampledFrame.detect_image`` of the right size
        is used as is; otherwise the full frame is resized (area interpolation).
    batch_size: images per detector call.
    The fallback's faces are kept when more of them count than the primary's (ties: the
    higher best score); otherwise the primary's stay.
    """

    def __init__(
        self,
        primary: Detector,
        fallback: Detector | None = None,
        min_faces: int = 1,
        confident_score: float = 0.9,
        primary_max_side: int | None = 960,
        fallback_max_side: int | None = 960,
        batch_size: int = 8,
    ):
        if min_faces < 1:
            raise ValueError(f"min_faces must be >= 1, got {min_faces}")
        self.primary = primary
        self.fallback = fallback
        self.min_faces = int(min_faces)
        self.confident_score = float(confident_score)
        self.primary_max_side = primary_max_side
        self.fallback_max_side = fallback_max_side
        self.batch_size = max(1, int(batch_size))
        self.stats = FallbackStats()

    @staticmethod
    def _name(det: Detector) -> str:
        return det.name or type(det).__name__

    def _confident(self, faces: Sequence[Face]) -> int:
        return sum(f.score >= self.confident_score for f in faces)

    def needs_fallback(self, faces: Sequence[Face]) -> bool:
        """True when fewer than ``min_faces`` faces reach ``confident_score``."""
        return self._confident(faces) < self.min_faces

    def _run(self, det: Detector, frames: Sequence[SampledFrame], max_side: int | None) -> list[list[Face]]:
        images, scales = [], []
        for fr in frames:
            h, w = fr.image.shape[:2]
            dh, dw = fr.detect_image.shape[:2]
            want_long = max(h, w) if not max_side else min(max(h, w), max_side)
            if max(dh, dw) == want_long:
                images.append(fr.detect_image)
                scales.append(fr.detect_scale)
            else:
                im, s = _resize_long_side(fr.image, max_side)
                images.append(im)
                scales.append(s)
        name = self._name(det)
        t = time.perf_counter()
        results = det.detect_batch(images, batch_size=self.batch_size)
        self.stats.seconds[name] += time.perf_counter() - t
        self.stats.sent[name] += len(images)
        out = []
        for faces, s in zip(results, scales):
            for f in faces:
                f.detector = f.detector or name
            out.append(_rescale(list(faces), s))
        return out

    def detect(self, frames: Sequence[SampledFrame]) -> list[FrameFaces]:
        """Run the primary (and, where needed, the fallback) on frames; one FrameFaces per frame, in order."""
        if not frames:
            return []
        pname = self._name(self.primary)
        first = self._run(self.primary, frames, self.primary_max_side)
        results = [
            FrameFaces(sorted(f, key=lambda x: -x.score), pname if f else None, (pname,)) for f in first
        ]
        todo = [i for i, r in enumerate(results) if self.needs_fallback(r.faces)]
        self.stats.frames += len(frames)
        if self.fallback is not None and todo:
            fname = self._name(self.fallback)
            self.stats.fallback_frames += len(todo)
            second = self._run(self.fallback, [frames[i] for i in todo], self.fallback_max_side)
            for i, faces in zip(todo, second):
                r = results[i]
                faces = sorted(faces, key=lambda x: -x.score)
                a, b = self._confident(r.faces), self._confident(faces)
                best_a = max((f.score for f in r.faces), default=-1.0)
                best_b = max((f.score for f in faces), default=-1.0)
                use_fallback = bool(faces) and (b > a or (b == a and best_b > best_a))
                results[i] = FrameFaces(
                    faces if use_fallback else r.faces,
                    fname if use_fallback else r.detector,
                    (pname, fname),
                )
        for r in results:
            if r.detector:
                self.stats.kept[r.detector] += 1
        return results


Cascade = FallbackDetector
"""Former name of FallbackDetector (exported by ``facesieve.video``; kept as an alias)."""
CascadeStats = FallbackStats
"""Former name of FallbackStats."""


def oversample(success: Sequence[int], n: int) -> list[tuple[int, bool]]:
    """Fill ``n`` slots from the successful items ``success`` (any ids, in output order).

    Returns n (id, is_duplicate) pairs: every id once, in order, plus ``n - len(success)``
    duplicates spread evenly over the ids (each id repeated at most ceil(n / k) times),
    each placed right after its original. With ``len(success) >= n`` or no successes the
    ids are returned as they are (nothing to fill from).
    """
    k = len(success)
    if k == 0 or k >= n:
        return [(s, False) for s in success]
    base, extra = divmod(n, k)
    # the `extra` ids that get one more copy: evenly spaced over the sequence
    more = {int(np.floor((j + 0.5) * k / extra)) for j in range(extra)} if extra else set()
    out: list[tuple[int, bool]] = []
    for i, s in enumerate(success):
        copies = base + (1 if i in more else 0)
        out.append((s, False))
        out.extend((s, True) for _ in range(copies - 1))
    return out

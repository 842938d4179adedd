"""The per-video pipeline: a decode thread, a bounded frame queue, batched detection, crops.

A decode thread reads the sampled frames of one video after another into a bounded
queue while the calling thread runs the detectors (in batches of the fallback chain's
``batch_size``), cuts the crops and hands them to the output (``outdir``), so decoding of
the next frames overlaps detection. A bad video (decode error, detector or disk error)
fails alone; the others go on.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from facesieve.align import align_face, box_crop, select_faces
from facesieve.types import Face
from facesieve.video.config import VideoConfig
from facesieve.video.fallback import FallbackDetector, FallbackStats, FrameFaces, oversample
from facesieve.video.outdir import MemoryOutput, OutputDir, VideoOutput
from facesieve.video.results import ExtractedFrame, VideoResult
from facesieve.video.sampling import SampledFrame, VideoError, VideoReader

Output = Union[OutputDir, MemoryOutput]


@dataclass
class _Job:
    path: Path
    video_id: str


@dataclass
class _Work:
    job: _Job
    result: VideoResult
    output: VideoOutput
    pending: list[SampledFrame] = field(default_factory=list)
    t0: float = 0.0


_DONE = object()


def choose_indices(reader: VideoReader, config: VideoConfig) -> list[int]:
    """The frame indices ``config`` samples from ``reader``'s video (every / fps / frames)."""
    if config.every is not None:
        return reader.choose(every=config.every)
    if config.fps is not None:
        return reader.choose(fps=config.fps)
    return reader.choose(frames=config.frames)


class Pipeline:
    """Runs jobs through decode -> detection -> crops -> ``output``.

    ``run(jobs, sink, on_frames)`` calls ``sink(VideoResult)`` once per job, in order, and
    ``on_frames(n)`` with +n when n frames of a video are scheduled and -n when n are done.
    """

    def __init__(self, config: VideoConfig, detectors: FallbackDetector, output: Output):
        self.config = config
        self.detectors = detectors
        self.output = output

    def _produce(self, jobs: list[_Job], q: queue.Queue, stop: threading.Event) -> None:
        """Decode thread: ("start", job, reader) / ("frame", job, frame) / ("end", job, stats)
        / ("error", job, reason) events, then _DONE."""

        def put(item: Any) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        c = self.config
        try:
            for job in jobs:
                if stop.is_set():
                    return
                try:
                    with VideoReader(job.path, detect_max_side=c.max_size, max_pixels=c.max_pixels,
                                     threads=c.decode_threads, fast=c.fast_decode) as reader:
                        idx = choose_indices(reader, c)
                        if not put(("start", job, reader.info, len(idx))):
                            return
                        for fr in reader.read(idx):
                            if not put(("frame", job, fr)):
                                return
                        put(("end", job, reader.stats))
                except VideoError as e:
                    put(("error", job, e.reason))
                except MemoryError:
                    put(("error", job, "out of memory while decoding (lower max_pixels?)"))
                except Exception as e:  # a decoder bug must not end the batch
                    put(("error", job, f"unexpected {type(e).__name__} while decoding: {e}"))
        finally:
            put(_DONE)

    def run(self, jobs: list[_Job], sink: Callable[[VideoResult], None], on_frames: Callable[[int], None]) -> None:
        detectors = self.detectors
        q: queue.Queue = queue.Queue(maxsize=max(2, self.config.queue_frames))
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(jobs, q, stop), name="facesieve-decode", daemon=True)
        producer.start()
        work: _Work | None = None
        failed_ids: set[str] = set()
        try:
            while True:
                ev = q.get()
                if ev is _DONE:
                    break
                kind, job = ev[0], ev[1]
                if kind == "start":
                    work = self._begin(job, ev[2])
                    on_frames(ev[3])
                    continue
                if kind == "error":
                    _discard(work)
                    work = None
                    sink(self.failed(job, ev[2]))
                    continue
                if job.video_id in failed_ids or work is None:
                    continue  # rest of a video that already failed
                try:
                    if kind == "frame":
                        work.pending.append(ev[2])
                        if len(work.pending) >= detectors.batch_size:
                            self._flush(work)
                            on_frames(-detectors.batch_size)
                    elif kind == "end":
                        n = len(work.pending)
                        self._flush(work)
                        on_frames(-n)
                        work.result.decode = ev[2]
                        sink(self._finish(work))
                        work = None
                except Exception as e:  # a detector or disk error fails this video only
                    failed_ids.add(job.video_id)
                    _discard(work)
                    work = None
                    sink(self.failed(job, f"{type(e).__name__}: {e}"))
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
            producer.join(timeout=10)
            _discard(work)

    def _begin(self, job: _Job, info) -> _Work:
        r = VideoResult(str(job.path), job.video_id, fps=info.fps, duration=info.duration,
                        frame_count=info.frame_count)
        r.timing = {"decode": 0.0, "detect": 0.0, "crop": 0.0, "write": 0.0}
        t0 = time.perf_counter()
        self.detectors.stats = r.detection = FallbackStats()  # counts for this video only
        return _Work(job, r, self.output.start(job.video_id), t0=t0)

    def _flush(self, w: _Work) -> None:
        frames, w.pending = w.pending, []
        if not frames:
            return
        t = time.perf_counter()
        found: list[FrameFaces] = self.detectors.detect(frames)
        w.result.timing["detect"] += time.perf_counter() - t
        c = self.config
        r = w.result
        for fr, ff in zip(frames, found):
            if not r.width:
                r.height, r.width = fr.image.shape[:2]
            faces = select_faces(ff.faces, c.keep)
            ef = ExtractedFrame(fr.index, fr.timestamp, fr.pts, ff.detector if faces else None, ff.tried, faces)
            t = time.perf_counter()
            crops = [self._crop(fr.image, face) for face in faces] if c.crop != "none" else []
            r.timing["crop"] += time.perf_counter() - t
            ef.crop_kinds = [k for _, k in crops]
            t = time.perf_counter()
            w.output.store_crops(ef, [im for im, _ in crops])
            r.timing["write"] += time.perf_counter() - t
            r.frames.append(ef)
            fr.image = fr.detect_image = None  # type: ignore[assignment]  # free the pixels now

    def _crop(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, str]:
        c = self.config
        if c.crop == "aligned" and face.landmarks is not None:
            try:
                return align_face(image, face.landmarks, c.crop_size)[0], "aligned"
            except ValueError:
                pass  # degenerate landmarks: fall back to the box crop
        return box_crop(image, face.box, margin=c.margin, size=c.crop_size, square=True)[0], "box"

    def _finish(self, w: _Work) -> VideoResult:
        c = self.config
        r = w.result
        r.frames.sort(key=lambda f: f.index)
        success = [i for i, f in enumerate(r.frames) if f.faces]
        target = c.frames if (c.oversample and c.frames) else None
        r.samples = oversample(success, target) if target else [(i, False) for i in success]
        if not success:
            r.note = "no face found in any sampled frame"
        r.timing["decode"] = r.decode.seconds
        w.output.publish(r, c.output_settings(), w.t0)
        return r

    def failed(self, job: _Job, reason: str) -> VideoResult:
        """The "failed" VideoResult of ``job`` (its error manifest published by the output)."""
        r = VideoResult(str(job.path), job.video_id, status="failed", error=reason)
        self.output.record_failure(r)
        return r


def _discard(w: _Work | None) -> None:
    if w is not None:
        w.output.discard()

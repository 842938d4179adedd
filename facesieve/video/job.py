"""The video face-extraction job: decode, cascade, crops, manifests, resumable batch runs.

A decode thread reads the sampled frames of one video after another into a bounded
queue while the calling thread runs the detectors (in batches), cuts the crops and
writes the outputs, so decoding of the next frames overlaps detection.

    >>> from facesieve.video import VideoConfig, extract_video
    >>> summary = extract_video(["clips/"], "faces_out", VideoConfig(frames=32))
    >>> summary.failed, summary.faces
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import shutil
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from facesieve.detectors.base import Detector
from facesieve.io.atomic import atomic_write_bytes
from facesieve.io.paths import expand_inputs, make_output_dir
from facesieve.types import Face
from facesieve.video import manifest as mf
from facesieve.video.align import align_face, box_crop, select_faces
from facesieve.video.cascade import Cascade, CascadeStats, FrameFaces, oversample
from facesieve.video.sampling import MAX_VIDEO_PIXELS, DecodeStats, SampledFrame, VideoError, VideoReader

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
     ".ts", ".mts", ".m2ts", ".3gp", ".ogv"}
)
"""Lower-case suffixes picked up from directories and globs (explicit files are always kept)."""


@dataclass
class VideoConfig:
    """Settings of a video face-extraction run (pixels, seconds, probabilities).

    Sampling: ``frames`` = N, the face frames wanted per video. Frames are taken at the
    centres of N equal time slices, unless ``every`` (every k-th frame) or ``fps``
    (frames per second of video) is set; N then only sets the oversampling target
    (None: no target).
    Cascade: ``primary`` runs on every sampled frame; ``fallback`` on frames where the
    primary found fewer than ``min_faces`` faces scoring >= ``confident_score``.
    ``detect_max_side`` / ``fallback_max_side``: long side of the image each detector
    sees (1080p at 960 is detected at half size; boxes are mapped back); the CLI's
    ``--max-size`` / ``--fallback-max-size``, the ``max_size`` of ``facesieve detect`` and
    of the detectors. A RetinaFace fallback also runs its coarser passes for large faces
    when the frame's short side is still above 640 px (see README, "Image size and scale").
    ``min_face_size``: MTCNN's smallest face, in detector-input pixels (None: its default).
    ``primary_options`` / ``fallback_options``: extra ``facesieve.load`` options.
    ``backend``: detector runtime ("torch", "onnxruntime", "openvino"); "auto" picks
    OpenVINO on the CPU (about 2-3x faster than torch for these models) and torch on CUDA.
    ``oversample``: duplicate face frames (spread evenly, flagged) up to N.
    Crops: ``crop`` "aligned" (5-point similarity to the ArcFace template, box crop when a
    face has no landmarks), "box" (``margin`` x box size added per side, square) or
    "none"; ``crop_size`` output side; ``keep`` "all", "largest" or "best" per frame.
    ``image_format`` "jpg" or "png". ``parquet``: also write manifest.parquet.
    ``max_pixels``: larger videos fail with a clear error instead of exhausting memory.
    ``fast_decode``: skip H.264/HEVC deblocking (~25% less decoding; pixels off by ~1 level).
    """

    frames: int | None = 32
    every: int | None = None
    fps: float | None = None
    primary: str = "mtcnn"
    fallback: str | None = "retinaface-mnet025"
    min_faces: int = 1
    confident_score: float = 0.9
    detect_max_side: int | None = 960
    fallback_max_side: int | None = 960
    min_face_size: float | None = None
    primary_options: dict[str, Any] = field(default_factory=dict)
    fallback_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    backend: str = "auto"
    batch_size: int = 8
    oversample: bool = True
    crop: str = "aligned"
    crop_size: int = 112
    margin: float = 0.2
    keep: str = "all"
    image_format: str = "jpg"
    jpeg_quality: int = 95
    parquet: bool = False
    max_pixels: int = MAX_VIDEO_PIXELS
    fast_decode: bool = False
    decode_threads: int = 0
    queue_frames: int = 16

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.every is not None and self.fps is not None:
            raise ValueError("give at most one of every= and fps=")
        if self.every is None and self.fps is None and self.frames is None:
            raise ValueError("frames= is needed unless every= or fps= is given")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.crop not in ("aligned", "box", "none"):
            raise ValueError(f"crop must be 'aligned', 'box' or 'none', got {self.crop!r}")
        if self.keep not in ("all", "largest", "best"):
            raise ValueError(f"keep must be 'all', 'largest' or 'best', got {self.keep!r}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8 pixels, got {self.crop_size}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        for name in ("detect_max_side", "fallback_max_side"):
            v = getattr(self, name)
            if v is not None and v < 32:
                raise ValueError(f"{name} must be >= 32 pixels or None, got {v}")
        if self.min_faces < 1:
            raise ValueError(f"min_faces must be >= 1, got {self.min_faces}")
        if self.backend not in ("auto", "torch", "onnxruntime", "openvino"):
            raise ValueError(f"backend must be 'auto', 'torch', 'onnxruntime' or 'openvino', got {self.backend!r}")
        if self.parquet and not mf.parquet_available():
            raise ValueError('parquet=True (--parquet) needs: pip install "facesieve[parquet]"')

    def output_settings(self) -> dict[str, Any]:
        """The settings that change a video's outputs (stored in its completion marker)."""
        d = asdict(self)
        for k in ("device", "backend", "batch_size", "max_pixels", "decode_threads", "queue_frames", "parquet"):
            d.pop(k)
        return d


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
    cascade: CascadeStats = field(default_factory=CascadeStats)
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
        """Manifest rows (see ``manifest.MANIFEST_FIELDS``)."""
        base = {"video": self.path, "video_id": self.video_id}
        if self.status == "failed":
            return [{**base, "error": self.error}]
        slots: dict[int, list[tuple[int, bool]]] = {}
        for s, (i, dup) in enumerate(self.samples):
            slots.setdefault(i, []).append((s, dup))
        rows: list[dict[str, Any]] = []
        for i, fr in enumerate(self.frames):
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
            "frames_to_detector": dict(self.cascade.sent),
            "faces_from_detector": dict(self.cascade.kept),
            "fallback_frames": self.cascade.fallback_frames,
            "timing": {k: round(v, 4) for k, v in self.timing.items()},
        }


@dataclass
class RunSummary:
    """Outcome of a batch run; ``exit_code`` is 0 when no video failed, else 1."""

    out_dir: str
    videos: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    unmatched: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def failed(self) -> int:
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
            sent.update(v.cascade.sent)
            kept.update(v.cascade.kept)
            timing.update(v.timing)
            frames += len(v.frames)
            fallback += v.cascade.fallback_frames
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


# ----------------------------------------------------------------------------- inputs
def expand_video_inputs(
    args: Iterable[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()
) -> tuple[list[Path], list[str]]:
    """Files, directories (searched recursively, hidden entries skipped) and globs -> paths.

    Explicit file arguments are kept whatever their name (and even when missing, so that
    they are reported per video); directory and glob matches need a VIDEO_EXTENSIONS
    suffix. ``exclude``: directories never searched (the output directory). Returns
    (paths in a stable order without duplicates, arguments that matched nothing).
    """
    found = expand_inputs(args, exclude=exclude, extensions=VIDEO_EXTENSIONS)
    return found.paths, found.unmatched


def video_ids(paths: Sequence[Path]) -> list[str]:
    """Output directory names: the file stem, plus a short hash of the absolute path
    when two inputs share a stem (stable across runs with the same inputs)."""
    stems = []
    for p in paths:
        s = "".join(c if (c.isalnum() or c in "-_.+=@,") else "_" for c in p.stem) or "video"
        stems.append(("_" + s) if s.startswith(".") else s)
    counts = Counter(stems)
    out = []
    for p, s in zip(paths, stems):
        if counts[s] > 1:
            h = hashlib.sha1(os.path.abspath(p).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            s = f"{s}-{h}"
        out.append(s)
    return out


# ----------------------------------------------------------------------------- extractor
@dataclass
class _Job:
    path: Path
    video_id: str


@dataclass
class _Work:
    job: _Job
    result: VideoResult
    pending: list[SampledFrame] = field(default_factory=list)
    tmp_dir: Path | None = None
    t0: float = 0.0


_DONE = object()


class VideoFaceExtractor:
    """Extracts face frames and crops from videos with the MTCNN -> RetinaFace cascade.

    config: VideoConfig (defaults if None).
    primary / fallback: ready Detectors overriding ``config.primary`` / ``config.fallback``
        (they are otherwise loaded with ``facesieve.load`` on first use).
    ``extract(path)`` keeps results in memory; ``run(paths, out_dir)`` is the resumable
    batch job writing crops, manifests and a summary.
    """

    def __init__(
        self,
        config: VideoConfig | None = None,
        primary: Detector | None = None,
        fallback: Detector | None = None,
    ):
        self.config = config or VideoConfig()
        self.config.validate()
        self._primary = primary
        self._fallback = fallback
        self._cascade: Cascade | None = None

    # -- detectors ---------------------------------------------------------------
    @property
    def cascade(self) -> Cascade:
        """The Cascade (loads the configured detectors on first use)."""
        if self._cascade is None:
            from facesieve.api import load

            c = self.config
            backend = self.backend()
            primary = self._primary
            if primary is None:
                opts = {"backend": backend, **c.primary_options}
                if c.min_face_size is not None and c.primary == "mtcnn":
                    opts.setdefault("min_face_size", c.min_face_size)
                primary = load(c.primary, device=c.device, **opts)
            fallback = self._fallback
            if fallback is None and c.fallback:
                fallback = load(c.fallback, device=c.device, **{"backend": backend, **c.fallback_options})
            self._cascade = Cascade(
                primary, fallback, min_faces=c.min_faces, confident_score=c.confident_score,
                primary_max_side=c.detect_max_side, fallback_max_side=c.fallback_max_side,
                batch_size=c.batch_size,
            )
        return self._cascade

    def backend(self) -> str:
        """The detector backend ``config.backend`` resolves to ("auto": OpenVINO for both
        detectors on the CPU, see ``facesieve.backends.FASTEST_CPU_BACKEND``)."""
        from facesieve.backends import resolve_backend

        return resolve_backend(self.config.backend, self.config.primary, self.config.device, cpu_choice="openvino")

    # -- public ------------------------------------------------------------------
    def extract(self, path: str | os.PathLike) -> VideoResult:
        """Process one video in memory (crops kept as arrays in ``ExtractedFrame.crops``).

        A bad video gives a VideoResult with status "failed" and the reason in ``error``.
        """
        job = _Job(Path(path), video_ids([Path(path)])[0])
        results: list[VideoResult] = []
        self._pipeline([job], None, results.append, lambda n: None)
        return results[0]

    def run(
        self,
        inputs: Sequence[str | os.PathLike],
        out_dir: str | os.PathLike,
        overwrite: bool = False,
        progress: bool = False,
    ) -> RunSummary:
        """Batch job: every video in ``inputs`` (files, directories, globs) -> ``out_dir``.

        Videos with a completion marker are skipped unless ``overwrite``. Failures are
        recorded per video (summary and manifest) and the run goes on.
        """
        t0 = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths, unmatched = expand_video_inputs(inputs, exclude=[out])
        summary = RunSummary(str(out), unmatched=unmatched)
        skipped, jobs = self.plan(paths, out, overwrite)
        summary.videos.extend(skipped)
        remove_stale(out)

        from tqdm import tqdm

        # disable=None: bars only when stderr is a terminal (never into a log file)
        vbar = tqdm(total=len(jobs), desc="videos", unit="video", disable=None if progress else True, position=0)
        fbar = tqdm(total=0, desc="frames", unit="frame", disable=None if progress else True, position=1, leave=False)

        last_write = [0.0]

        def sink(result: VideoResult) -> None:
            summary.videos.append(result)
            vbar.update(1)
            vbar.set_postfix(failed=summary.failed, faces=summary.faces)
            now = time.perf_counter()
            if now - last_write[0] > 10.0:  # a partial summary now and then, not O(videos^2) writes
                summary.seconds = now - t0
                mf.write_json(out / mf.SUMMARY, summary.to_dict())
                last_write[0] = time.perf_counter()

        def on_frames(n: int) -> None:
            if n > 0:
                fbar.total += n
                fbar.refresh()
            else:
                fbar.update(-n)

        try:
            if jobs:
                self._pipeline(jobs, out, sink, on_frames)
            summary.complete = True
        finally:
            vbar.close()
            fbar.close()
            order = {str(p): i for i, p in enumerate(paths)}
            summary.videos.sort(key=lambda v: order.get(v.path, len(order)))
            summary.seconds = time.perf_counter() - t0
            mf.write_json(out / mf.SUMMARY, summary.to_dict())  # complete: false when interrupted
        return summary

    def plan(self, paths: Sequence[Path], out: Path, overwrite: bool = False) -> tuple[list[VideoResult], list[_Job]]:
        """Split a batch into videos already complete in ``out`` (VideoResults with status
        "skipped") and the jobs left to do (path, video_id), in input order."""
        skipped: list[VideoResult] = []
        jobs: list[_Job] = []
        settings = self.config.output_settings()
        for p, vid in zip(paths, video_ids(paths)):
            marker = mf.read_marker(out / vid)
            if marker is not None and not overwrite:
                r = VideoResult(str(p), vid, status="skipped")
                if marker.get("settings") != settings:
                    r.note = "complete from a run with other settings; use overwrite to redo it"
                skipped.append(r)
            else:
                jobs.append(_Job(p, vid))
        return skipped, jobs

    def process(self, path: str | os.PathLike, video_id: str, out_dir: str | os.PathLike) -> VideoResult:
        """One video of a batch run into ``out_dir/<video_id>`` (built in a temp directory,
        renamed into place complete). A bad video gives status "failed" (its directory holds
        the one-row error manifest); nothing else raises except KeyboardInterrupt / OS errors
        on ``out_dir`` itself."""
        results: list[VideoResult] = []
        self._pipeline([_Job(Path(path), video_id)], Path(out_dir), results.append, lambda n: None)
        return results[0]

    # -- pipeline ----------------------------------------------------------------
    def _choose(self, reader: VideoReader) -> list[int]:
        c = self.config
        if c.every is not None:
            return reader.choose(every=c.every)
        if c.fps is not None:
            return reader.choose(fps=c.fps)
        return reader.choose(frames=c.frames)

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
                    with VideoReader(job.path, detect_max_side=c.detect_max_side, max_pixels=c.max_pixels,
                                     threads=c.decode_threads, fast=c.fast_decode) as reader:
                        idx = self._choose(reader)
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

    def _pipeline(
        self,
        jobs: list[_Job],
        out: Path | None,
        sink: Callable[[VideoResult], None],
        on_frames: Callable[[int], None],
    ) -> None:
        cascade = self.cascade
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
                    work = self._begin(job, ev[2], out)
                    on_frames(ev[3])
                    continue
                if kind == "error":
                    self._discard(work)
                    work = None
                    sink(self._failed(job, ev[2], out))
                    continue
                if job.video_id in failed_ids or work is None:
                    continue  # rest of a video that already failed
                try:
                    if kind == "frame":
                        work.pending.append(ev[2])
                        if len(work.pending) >= cascade.batch_size:
                            self._flush(work, cascade)
                            on_frames(-cascade.batch_size)
                    elif kind == "end":
                        n = len(work.pending)
                        self._flush(work, cascade)
                        on_frames(-n)
                        work.result.decode = ev[2]
                        sink(self._finish(work, out))
                        work = None
                except Exception as e:  # a detector or disk error fails this video only
                    failed_ids.add(job.video_id)
                    self._discard(work)
                    work = None
                    sink(self._failed(job, f"{type(e).__name__}: {e}", out))
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
            producer.join(timeout=10)
            self._discard(work)

    def _begin(self, job: _Job, info, out: Path | None) -> _Work:
        r = VideoResult(str(job.path), job.video_id, fps=info.fps, duration=info.duration,
                        frame_count=info.frame_count)
        r.timing = {"decode": 0.0, "detect": 0.0, "crop": 0.0, "write": 0.0}
        w = _Work(job, r, t0=time.perf_counter())
        self.cascade.stats = r.cascade = CascadeStats()  # counts for this video only
        if out is not None:
            w.tmp_dir = make_output_dir(out, f".tmp-{job.video_id}-")
            (w.tmp_dir / "crops").mkdir()
        return w

    def _flush(self, w: _Work, cascade: Cascade) -> None:
        frames, w.pending = w.pending, []
        if not frames:
            return
        t = time.perf_counter()
        found: list[FrameFaces] = cascade.detect(frames)
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
            if w.tmp_dir is None:
                ef.crops = [im for im, _ in crops]
            else:
                t = time.perf_counter()
                for j, (im, _) in enumerate(crops):
                    name = f"{fr.index:06d}_{j}.{c.image_format}"
                    self._write_image(w.tmp_dir / "crops" / name, im)
                    ef.crop_paths.append(f"{w.job.video_id}/crops/{name}")
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

    def _write_image(self, path: Path, rgb: np.ndarray) -> None:
        c = self.config
        params = [cv2.IMWRITE_JPEG_QUALITY, int(c.jpeg_quality)] if c.image_format == "jpg" else []
        ok, buf = cv2.imencode("." + c.image_format, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise OSError(f"could not encode {path.name}")
        atomic_write_bytes(path, buf.tobytes())  # a killed job never leaves a half-written crop

    def _finish(self, w: _Work, out: Path | None) -> VideoResult:
        c = self.config
        r = w.result
        r.frames.sort(key=lambda f: f.index)
        success = [i for i, f in enumerate(r.frames) if f.faces]
        target = c.frames if (c.oversample and c.frames) else None
        r.samples = oversample(success, target) if target else [(i, False) for i in success]
        if not success:
            r.note = "no face found in any sampled frame"
        r.timing["decode"] = r.decode.seconds
        if out is not None and w.tmp_dir is not None:
            t = time.perf_counter()
            rows = r.rows()
            mf.write_jsonl(w.tmp_dir / mf.MANIFEST_JSONL, rows)
            if c.parquet:
                mf.write_parquet(w.tmp_dir / mf.MANIFEST_PARQUET, rows)
            r.timing["write"] += time.perf_counter() - t
            r.timing["total"] = time.perf_counter() - w.t0
            mf.write_json(w.tmp_dir / mf.DONE_MARKER, {
                "video": r.path, "settings": c.output_settings(), "summary": r.summary(),
            })
            self._publish(w.tmp_dir, out / w.job.video_id)
            w.tmp_dir = None
        else:
            r.timing["total"] = time.perf_counter() - w.t0
        return r

    def _failed(self, job: _Job, reason: str, out: Path | None) -> VideoResult:
        r = VideoResult(str(job.path), job.video_id, status="failed", error=reason)
        if out is not None:
            tmp = make_output_dir(out, f".tmp-{job.video_id}-")
            try:
                mf.write_jsonl(tmp / mf.MANIFEST_JSONL, r.rows())
                if self.config.parquet:
                    mf.write_parquet(tmp / mf.MANIFEST_PARQUET, r.rows())
                self._publish(tmp, out / job.video_id)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return r

    @staticmethod
    def _publish(tmp: Path, final: Path) -> None:
        """Move a finished temp directory into place (replacing an older one)."""
        old = None
        if final.exists():
            old = final.with_name(f".tmp-old-{final.name}-{os.getpid()}-{time.monotonic_ns()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def _discard(w: _Work | None) -> None:
        if w is not None and w.tmp_dir is not None:
            shutil.rmtree(w.tmp_dir, ignore_errors=True)
            w.tmp_dir = None


def remove_stale(out: Path) -> None:
    """Delete the ``.tmp-*`` entries an interrupted run (or a killed worker) left in ``out``."""
    for stale in out.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def extract_video(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: VideoConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    primary: Detector | None = None,
    fallback: Detector | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
) -> RunSummary:
    """Extract N face frames and their crops from each video into ``out_dir``.

    inputs: a video path, a directory (searched recursively), a glob, or a list of them.
    Returns the RunSummary (also written to ``out_dir/summary.json``); ``exit_code`` is 1
    when some video failed. See VideoConfig for the settings, ``manifest`` for the layout.
    engine: "local" (this process) or "ray" (a pool of Ray actors, see
    ``facesieve.video.ray_engine.run_ray``: ``ray_address`` None starts a local Ray
    instance, "auto" / "ray://host:port" joins a cluster; ``workers`` actors, default one
    per CPU). Same outputs either way. Raises ValueError for an unknown engine, or
    primary/fallback objects with engine="ray"; RayUnavailable when Ray is not installed.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if engine == "ray":
        if primary is not None or fallback is not None:
            raise ValueError("engine='ray' loads the detectors from the config on each worker; "
                             "primary=/fallback= objects work with engine='local' only")
        from facesieve.video.ray_engine import run_ray

        return run_ray(list(inputs), out_dir, config, overwrite=overwrite, progress=progress,
                       address=ray_address, workers=workers)
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    extractor = VideoFaceExtractor(config, primary=primary, fallback=fallback)
    return extractor.run(list(inputs), out_dir, overwrite=overwrite, progress=progress)

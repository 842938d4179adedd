"""The video face-extraction job: the extractor facade and its batch runs.

The parts live beside it: ``config`` (VideoConfig), ``results`` (per frame / video / run
records), ``outdir`` (temp directories, atomic publish, markers), ``pipeline`` (decode
thread, queue, batching, crops), ``fallback`` (primary -> fallback detector chain);
``extract`` holds ``extract_video``, which picks this local engine or ``ray_engine``.

    >>> from facesieve.video import VideoConfig, extract_video
    >>> summary = extract_video(["clips/"], "faces_out", VideoConfig(frames=32))
    >>> summary.failed, summary.faces
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from facesieve.detectors.base import Detector
from facesieve.io.paths import expand_inputs
from facesieve.video import manifest as mf
from facesieve.video.config import VideoConfig
from facesieve.video.fallback import FallbackDetector
from facesieve.video.outdir import MemoryOutput, OutputDir, remove_stale
from facesieve.video.pipeline import Pipeline, _Job
from facesieve.video.results import ExtractedFrame, RunSummary, VideoResult, VideoRunSummary

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
     ".ts", ".mts", ".m2ts", ".3gp", ".ogv"}
)
"""Lower-case suffixes picked up from directories and globs (explicit files are always kept)."""


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
class VideoFaceExtractor:
    """Extracts face frames and crops from videos with the MTCNN -> RetinaFace fallback chain.

    config: VideoConfig (defaults if None); validated here (ValueError naming the bad setting).
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
        self._detectors: FallbackDetector | None = None

    # -- detectors ---------------------------------------------------------------
    @property
    def detectors(self) -> FallbackDetector:
        """The FallbackDetector (loads the configured detectors on first use; a bad model name
        or missing weights raise here, as ``facesieve.load`` does)."""
        if self._detectors is None:
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
            self._detectors = FallbackDetector(
                primary, fallback, min_faces=c.min_faces, confident_score=c.confident_score,
                primary_max_side=c.max_size, fallback_max_side=c.fallback_max_size,
                batch_size=c.batch_size,
            )
        return self._detectors

    @property
    def cascade(self) -> FallbackDetector:
        """Former name of ``detectors`` (kept for compatibility)."""
        return self.detectors

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
        self._pipeline(MemoryOutput()).run([job], results.append, lambda n: None)
        return results[0]

    def run(
        self,
        inputs: Sequence[str | os.PathLike],
        out_dir: str | os.PathLike,
        overwrite: bool = False,
        progress: bool = False,
    ) -> VideoRunSummary:
        """Batch job: every video in ``inputs`` (files, directories, globs) -> ``out_dir``.

        Videos with a completion marker are skipped unless ``overwrite``. Failures are
        recorded per video (summary and manifest) and the run goes on.
        """
        t0 = time.perf_counter()
        out, paths, summary, jobs = self.start_run(inputs, out_dir, overwrite)

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
                self._pipeline(self._output(out)).run(jobs, sink, on_frames)
            summary.complete = True
        finally:
            vbar.close()
            fbar.close()
            order = {str(p): i for i, p in enumerate(paths)}
            summary.videos.sort(key=lambda v: order.get(v.path, len(order)))
            summary.seconds = time.perf_counter() - t0
            mf.write_json(out / mf.SUMMARY, summary.to_dict())  # complete: false when interrupted
        return summary

    def start_run(
        self,
        inputs: Sequence[str | os.PathLike],
        out_dir: str | os.PathLike,
        overwrite: bool = False,
        summary_type: type[VideoRunSummary] = VideoRunSummary,
    ) -> tuple[Path, list[Path], VideoRunSummary, list[_Job]]:
        """The opening every engine shares: create ``out_dir``, expand ``inputs``, start a
        ``summary_type`` summary holding the unmatched arguments and the videos already
        complete (skipped unless ``overwrite``), clean up stale temp dirs.
        Returns (out dir, video paths, summary, jobs still to do)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths, unmatched = expand_video_inputs(inputs, exclude=[out])
        summary = summary_type(str(out), unmatched=unmatched)
        skipped, jobs = self.plan(paths, out, overwrite)
        summary.videos.extend(skipped)
        remove_stale(out)
        return out, paths, summary, jobs

    def plan(self, paths: Sequence[Path], out: Path, overwrite: bool = False) -> tuple[list[VideoResult], list[_Job]]:
        """Split a batch into videos already complete in ``out`` (VideoResults with status
        "skipped") and the jobs left to do (path, video_id), in input order."""
        skipped: list[VideoResult] = []
        jobs: list[_Job] = []
        settings = self.config.output_settings()
        for p, vid in zip(paths, video_ids(paths)):
            marker = self._output(out).marker(vid)
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
        self._pipeline(self._output(Path(out_dir))).run([_Job(Path(path), video_id)], results.append, lambda n: None)
        return results[0]

    def record_failure(self, job: _Job, reason: str, out_dir: str | os.PathLike) -> VideoResult:
        """A "failed" VideoResult for ``job`` with its error manifest published in ``out_dir``
        (used by the Ray driver for videos whose worker died)."""
        r = VideoResult(str(job.path), job.video_id, status="failed", error=reason)
        self._output(Path(out_dir)).record_failure(r)  # no detector is loaded for this
        return r

    def _output(self, out: Path) -> OutputDir:
        c = self.config
        return OutputDir(out, image_format=c.image_format, jpeg_quality=c.jpeg_quality, parquet=c.parquet)

    def _pipeline(self, output: OutputDir | MemoryOutput) -> Pipeline:
        return Pipeline(self.config, self.detectors, output)


__all__ = [
    "ExtractedFrame",
    "RunSummary",
    "VIDEO_EXTENSIONS",
    "VideoConfig",
    "VideoFaceExtractor",
    "VideoResult",
    "VideoRunSummary",
    "expand_video_inputs",
    "remove_stale",
    "video_ids",
]

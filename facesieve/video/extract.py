"""``extract_video``: the video job's entry point, on this process or on Ray.

    >>> from facesieve.video import VideoConfig, extract_video
    >>> summary = extract_video(["clips/"], "faces_out", VideoConfig(frames=32))
    >>> summary.failed, summary.faces
"""
from __future__ import annotations

import os
from typing import Sequence

from facesieve.detectors.base import Detector
from facesieve.video.config import VideoConfig
from facesieve.video.job import VideoFaceExtractor
from facesieve.video.results import VideoRunSummary


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
) -> VideoRunSummary:
    """Extract N face frames and their crops from each video into ``out_dir``.

    inputs: a video path, a directory (searched recursively), a glob, or a list of them.
    Returns the VideoRunSummary (``facesieve.RunSummary``; also written to
    ``out_dir/summary.json``); ``exit_code`` is 1 when some video failed. See VideoConfig
    for the settings, ``manifest`` for the layout: per face a manifest row with the box
    [x1, y1, x2, y2] and 5 (x, y) landmarks in full-resolution upright frame pixels, and an
    RGB crop saved as ``crop_size`` x ``crop_size`` JPEG/PNG (aligned to the ArcFace
    template, or box + margin). A video that cannot be decoded or processed is recorded as
    "failed" (summary and manifest) and the run goes on; videos already complete are skipped
    unless ``overwrite``. primary / fallback: ready Detectors overriding the config's names.
    progress: tqdm bars on stderr (only when it is a terminal).
    engine: "local" (this process) or "ray" (a pool of Ray actors, see
    ``facesieve.video.ray_engine.run_ray``: ``ray_address`` None starts a local Ray
    instance, "auto" / "ray://host:port" joins a cluster; ``workers`` actors, default one
    per CPU). Same outputs either way. Raises ValueError for a bad setting (VideoConfig.validate),
    an unknown engine, or primary/fallback objects with engine="ray"; the errors of
    ``facesieve.load`` when a configured detector cannot be loaded (ValueError, WeightsError,
    MissingDependencyError), before any video is processed (only when some video is left
    to process); OSError when ``out_dir`` cannot be created or written; RayUnavailable
    when Ray is not installed.
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

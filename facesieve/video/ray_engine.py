"""The video job on Ray: one detector actor per worker, one video per call, same outputs.

The driver (this process) expands the inputs, skips the videos already complete in
``out_dir`` (before anything is scheduled) and hands the rest, one video at a time, to a
pool of ``VideoWorker`` actors. Each actor holds a ``VideoFaceExtractor`` (detectors
loaded once) and runs exactly the local job's per-video code
(``VideoFaceExtractor.process``): the video's directory is built in ``out_dir/.tmp-*``
and renamed into place complete, so the outputs are byte-for-byte those of
``engine="local"`` and ``out_dir`` must be a path every node sees (a local disk for one
machine, a shared filesystem for a cluster).

Faults: a video that fails for a reason of its own (corrupt file, detector error) comes
back as a "failed" VideoResult and is reported once. A worker that dies (killed, OOM,
node lost) is replaced by a new actor (placed wherever Ray finds a CPU) and its video
re-queued, at most ``max_attempts`` times; the dead worker's temp directory is never
published and is removed at the end of the run. Ctrl-C stops the actors and writes
``summary.json`` with ``complete: false``; the next run skips what is complete.

    >>> from facesieve.video import VideoConfig, extract_video
    >>> s = extract_video("clips/", "out", VideoConfig(frames=32), engine="ray", workers=2)
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from facesieve.video import manifest as mf
from facesieve.video.config import VideoConfig
from facesieve.video.job import VideoFaceExtractor
from facesieve.video.outdir import remove_stale
from facesieve.video.pipeline import _Job
from facesieve.video.results import VideoResult, VideoRunSummary

MAX_ATTEMPTS = 3
"""Times a video is started on a worker that then dies before it is given up (failed)."""


class WorkerStartError(RuntimeError):
    """The Ray workers could not load the detectors (bad model name, missing weights...)."""


@dataclass
class RayRunSummary(VideoRunSummary):
    """VideoRunSummary of a Ray run: the same fields, plus ``ray`` (workers, per-worker
    throughput, retries and Ray's per-video overhead) in ``to_dict()["ray"]``."""

    ray: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["engine"] = "ray"
        d["ray"] = self.ray
        return d


class VideoWorker:
    """A Ray actor (``ray.remote(VideoWorker)``): the detectors, loaded once, and the local
    job's per-video function. Times are ``time.time()`` seconds (the driver compares them
    with its own clock to measure Ray's overhead)."""

    def __init__(self, config: VideoConfig) -> None:
        t = time.perf_counter()
        self.extractor = VideoFaceExtractor(config)
        self.extractor.detectors  # load the detectors now, once per worker
        self.load_seconds = time.perf_counter() - t

    def info(self) -> dict[str, Any]:
        """pid, node address and id, and model load time of this worker."""
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(), "load_s": round(self.load_seconds, 3)}

    def process(self, path: str, video_id: str, out_dir: str) -> tuple[VideoResult, dict[str, float]]:
        """Process one video into ``out_dir/<video_id>``; returns (result, {"start", "end",
        "cpu": this process's CPU seconds during the call, "pid", "node_id"})."""
        import ray

        t0, c0 = time.time(), time.process_time()
        result = self.extractor.process(path, video_id, out_dir)
        return result, {"start": t0, "end": time.time(), "cpu": time.process_time() - c0, "pid": os.getpid(),
                        "node_id": ray.get_runtime_context().get_node_id()}


@dataclass
class _Slot:
    """One worker position in the pool; ``actor`` is replaced when the worker dies."""

    index: int
    actor: Any = None
    busy: Any = None  # (object ref, job, submit time) while a video is in flight
    last_end: float = 0.0
    videos: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    restarts: int = 0
    pids: list[int] = field(default_factory=list)
    node: str | None = None
    node_ids: list[str] = field(default_factory=list)


def run_ray(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: VideoConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = False,
    address: str | None = None,
    workers: int | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> RayRunSummary:
    """The batch job of ``VideoFaceExtractor.run`` on a pool of Ray actors.

    inputs / out_dir / overwrite: as ``VideoFaceExtractor.run``; ``out_dir`` must be
    visible at the same path on every node. address: None starts a local Ray instance
    (``workers`` CPUs, default all cores), "auto" or "ray://host:port" joins a cluster.
    workers: actors (1 CPU each), default one per free CPU of the instance / cluster.
    progress: a bar over videos on stderr (only when it is a terminal).
    Returns a RayRunSummary (also ``out_dir/summary.json``); exit_code 1 when a video failed.
    Raises RayUnavailable (Ray missing), ConnectionError (cluster unreachable),
    WorkerStartError (the workers could not load the detectors).
    """
    from facesieve.distributed import cluster_cpus, ray_session

    t0 = time.perf_counter()
    config = config or VideoConfig()
    driver = VideoFaceExtractor(config)  # validates; loads no model (failed-video dirs only)
    out, paths, summary, jobs = driver.start_run(inputs, out_dir, overwrite, RayRunSummary)
    order = {str(p): i for i, p in enumerate(paths)}

    def write_summary() -> None:
        summary.videos.sort(key=lambda v: order.get(v.path, len(order)))
        summary.seconds = time.perf_counter() - t0
        mf.write_json(out / mf.SUMMARY, summary.to_dict())

    if not jobs:
        summary.complete = True
        summary.ray = {"workers": 0, "note": "nothing to do: every video was already complete"}
        write_summary()
        return summary

    with ray_session(address, num_cpus=workers if address is None else None) as ray:
        n = int(workers or cluster_cpus(ray, available=True))  # actors beyond the free CPUs would wait
        n = max(1, min(n, len(jobs)))
        _run_pool(ray, driver, jobs, out, n, max_attempts, summary, progress, write_summary, t0)
    return summary


def _run_pool(ray, driver: VideoFaceExtractor, jobs: list[_Job], out: Path, n: int, max_attempts: int,
              summary: RayRunSummary, progress: bool, write_summary, t0: float) -> None:
    from ray.exceptions import RayActorError, RayTaskError
    from tqdm import tqdm

    from facesieve.distributed import error_line

    Actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(VideoWorker)
    config = driver.config
    cfg_ref = ray.put(config)
    slots = [_Slot(i, Actor.remote(cfg_ref)) for i in range(n)]
    t_pool = time.perf_counter()
    try:
        infos = ray.get([s.actor.info.remote() for s in slots])
    except RayActorError as e:
        raise WorkerStartError(f"the Ray workers could not load the detectors: {error_line(e)}") from e
    for s, info in zip(slots, infos):
        s.pids.append(info["pid"])
        s.node = info["node"]
        s.node_ids.append(info["node_id"])
    start_s = time.perf_counter() - t_pool

    queue: deque[_Job] = deque(jobs)
    attempts: dict[str, int] = {}
    overheads: list[dict[str, float]] = []
    retried: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not (progress and sys.stderr.isatty()))
    last_write = time.perf_counter()
    cpu0 = time.process_time()  # the driver's own CPU time per video (its scaling limit)
    failed = faces = 0
    try:
        while queue or any(s.busy for s in slots):
            for s in slots:
                if s.busy is None and queue:
                    job = queue.popleft()
                    attempts[job.video_id] = attempts.get(job.video_id, 0) + 1
                    s.busy = (s.actor.process.remote(str(job.path), job.video_id, str(out)), job, time.time())
            refs = {s.busy[0]: s for s in slots if s.busy}
            ready, rest = ray.wait(list(refs), num_returns=1, timeout=5.0)
            if ready and rest:  # everything else already finished too, in one call
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            for ref in ready:
                s = refs[ref]
                _, job, t_submit = s.busy
                s.busy = None
                try:
                    result, tm = ray.get(ref)
                except RayActorError as e:  # the worker died: replace it, retry the video
                    reason = error_line(e)
                    retried.append({"video": str(job.path), "worker": s.index, "pid": s.pids[-1], "reason": reason})
                    with contextlib.suppress(Exception):
                        ray.kill(s.actor, no_restart=True)
                    s.actor = Actor.remote(cfg_ref)  # its pid / node come with its first result
                    s.restarts += 1
                    s.last_end = 0.0
                    if attempts[job.video_id] < max_attempts:
                        queue.appendleft(job)
                        continue
                    result = driver.record_failure(job, f"the worker processing it died {attempts[job.video_id]} times "
                                                 f"(last: {reason})", out)
                    tm = None
                except RayTaskError as e:  # a bug outside the per-video error handling
                    result, tm = driver.record_failure(job, f"worker error: {error_line(e)}", out), None
                t_recv = time.time()
                if tm is not None:
                    process_s = tm["end"] - tm["start"]
                    dispatch_s = max(0.0, tm["start"] - max(t_submit, s.last_end))
                    s.last_end = tm["end"]
                    if tm["pid"] != s.pids[-1]:  # a replacement worker's first video
                        s.pids.append(tm["pid"])
                        s.node_ids.append(tm["node_id"])
                    s.videos += 1
                    s.busy_s += process_s
                    s.cpu_s += tm["cpu"]
                    overheads.append({"dispatch": dispatch_s, "return": max(0.0, t_recv - tm["end"]),
                                      "process": process_s})
                summary.videos.append(result)
                failed += result.status == "failed"
                faces += result.faces if result.status == "done" else 0
                bar.update(1)
                bar.set_postfix(failed=failed, faces=faces)  # running counts: O(1) per video
            now = time.perf_counter()
            # a partial summary now and then; rarer for big corpora (each write is O(videos))
            if now - last_write > max(10.0, len(summary.videos) / 100):
                summary.ray = _ray_stats(slots, overheads, retried, start_s, now - t0,
                                         time.process_time() - cpu0)
                write_summary()
                last_write = time.perf_counter()
        summary.complete = True
    finally:
        bar.close()
        for s in slots:  # stop the workers (on a cluster nothing else would)
            with contextlib.suppress(Exception):
                ray.kill(s.actor, no_restart=True)
        if summary.complete:
            remove_stale(out)  # temp dirs of workers that died mid-video
        summary.ray = _ray_stats(slots, overheads, retried, start_s, time.perf_counter() - t0,
                                 time.process_time() - cpu0)
        write_summary()


def _ray_stats(slots: list[_Slot], overheads: list[dict[str, float]], retried: list[dict[str, Any]],
               start_s: float, wall_s: float, driver_cpu_s: float) -> dict[str, Any]:
    """The ``ray`` section of summary.json: per-worker throughput and Ray's overhead."""
    per = []
    for s in slots:
        per.append({
            "worker": s.index, "node": s.node, "node_ids": s.node_ids, "pids": s.pids, "restarts": s.restarts,
            "videos": s.videos,
            "busy_s": round(s.busy_s, 3), "cpu_s": round(s.cpu_s, 3),
            "videos_per_min": round(60.0 * s.videos / s.busy_s, 3) if s.busy_s > 0 else 0.0,
            "utilisation": round(s.busy_s / wall_s, 4) if wall_s > 0 else 0.0,
        })
    d: dict[str, Any] = {"workers": len(slots), "worker_start_s": round(start_s, 3), "per_worker": per,
                         "retried": retried}
    if overheads:
        m = len(overheads)
        dispatch = sum(o["dispatch"] for o in overheads) / m
        ret = sum(o["return"] for o in overheads) / m
        proc = sum(o["process"] for o in overheads) / m
        d["overhead"] = {
            "videos": m,
            "dispatch_s_mean": round(dispatch, 5),  # submission (or the worker's previous video) -> start
            "return_s_mean": round(ret, 5),  # end in the worker -> result on the driver (serialisation incl.)
            "process_s_mean": round(proc, 4),
            "percent_of_process": round(100.0 * (dispatch + ret) / proc, 3) if proc > 0 else 0.0,
            "driver_cpu_s_per_video": round(driver_cpu_s / m, 5),  # scheduling, results, progress, summary
        }
    return d


__all__ = ["MAX_ATTEMPTS", "RayRunSummary", "VideoWorker", "WorkerStartError", "run_ray"]

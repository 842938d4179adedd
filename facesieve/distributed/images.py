"""Image corpora on Ray Data: file paths -> ``map_batches`` on a pool of detector actors -> Parquet.

The driver lists the image files; Ray Data splits the list into blocks and streams them
through ``DetectBatch`` actors (``workers`` of them, 1 CPU each, the detector loaded once
per actor), ``batch_size`` images per call. Each actor reads its images itself (so the
paths must be visible on every node) and returns one row per image:

    path     string          the input path as given
    width    int32           image width, pixels (null when it could not be read)
    height   int32           image height, pixels
    faces    list<struct>    box [x1, y1, x2, y2] (pixels, xyxy), score, landmarks [[x, y] * 5]
                             (null for models without landmarks); values as ``Face.to_dict()``
    error    string          null, or why the image could not be read / detected
    worker   string          "node-ip:pid" of the actor that did it
    detect_s float64         that image's share of its batch's read + detect time, seconds

A bad file gives a row with ``error`` set, never a failed dataset. The rows are written
with ``Dataset.write_parquet`` into ``OUT/.tmp-detections-*`` and renamed to
``OUT/detections.parquet/`` complete (a directory of Parquet files; read it with
``pyarrow.parquet.read_table`` or ``ray.data.read_parquet``), in input order.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from facesieve.io.images import describe_error

PARQUET_DIR = "detections.parquet"


def _schema():
    import pyarrow as pa

    face = pa.struct([
        ("box", pa.list_(pa.float64())),
        ("score", pa.float64()),
        ("landmarks", pa.list_(pa.list_(pa.float64()))),
    ])
    return pa.schema([
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("faces", pa.list_(face)),
        ("error", pa.string()),
        ("worker", pa.string()),
        ("detect_s", pa.float64()),
    ])


class DetectBatch:
    """Ray Data callable class: a detector loaded once per actor; ``__call__`` takes a
    batch {"path": array of str} and returns a pyarrow Table in the schema above."""

    def __init__(self, model: str, load_options: dict[str, Any], score_threshold: float | None,
                 nms_threshold: float | None) -> None:
        import facesieve

        self.detector = facesieve.load(model, **load_options)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        import ray

        self.worker = f"{ray.util.get_node_ip_address()}:{os.getpid()}"

    def _detect(self, arrays: list[np.ndarray]) -> list:
        res = self.detector.detect_batch(arrays, batch_size=len(arrays), score_threshold=self.score_threshold,
                                         nms_threshold=self.nms_threshold)
        if len(res) != len(arrays):
            raise RuntimeError(f"detector returned {len(res)} results for {len(arrays)} images")
        return res

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        from facesieve.io import load_image

        t0 = time.perf_counter()
        paths = [str(p) for p in batch["path"]]
        rows: list[dict[str, Any]] = [{"path": p, "width": None, "height": None, "faces": None, "error": None,
                                       "worker": self.worker} for p in paths]
        ok: list[tuple[int, np.ndarray]] = []
        for i, p in enumerate(paths):
            try:
                arr = load_image(p)
            except Exception as e:  # any loader failure is this row's error, never the dataset's
                rows[i]["error"] = describe_error(e)
                continue
            rows[i]["height"], rows[i]["width"] = int(arr.shape[0]), int(arr.shape[1])
            ok.append((i, arr))
        if ok:
            try:
                results: list = self._detect([a for _, a in ok])
            except Exception:  # isolate the image that breaks the batch
                results = []
                for _, a in ok:
                    try:
                        results.append(self._detect([a])[0])
                    except Exception as e:
                        results.append(e)
            for (i, _), faces in zip(ok, results):
                if isinstance(faces, BaseException):
                    rows[i]["error"] = f"detection failed: {describe_error(faces)}"
                    continue
                dicts = (f.to_dict() for f in faces)
                rows[i]["faces"] = [{k: d[k] for k in ("box", "score", "landmarks")} for d in dicts]
        share = (time.perf_counter() - t0) / max(1, len(paths))
        for r in rows:
            r["detect_s"] = share
        return pa.Table.from_pylist(rows, schema=_schema())


@dataclass
class ImageRunResult:
    """What a Ray Data detect run did (``to_dict`` is the run's summary.json)."""

    model: str
    device: str
    out: str
    inputs: int = 0
    processed: int = 0
    faces: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    parquet: str = ""
    workers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": "ray", "complete": True, "model": self.model, "device": self.device, "out": self.out,
            "inputs": self.inputs, "processed": self.processed, "faces": self.faces, "failed": self.failed,
            "seconds": round(self.seconds, 3), "parquet": self.parquet, "workers": self.workers,
        }


def detect_images_ray(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    model: str,
    *,
    load_options: dict[str, Any] | None = None,
    score_threshold: float | None = None,
    nms_threshold: float | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> ImageRunResult:
    """Detect faces in every image of ``paths`` with Ray Data; write ``OUT/detections.parquet/``.

    load_options: ``facesieve.load`` keyword arguments (weights, device, backend, threads).
    workers: detector actors (default one per free CPU of the instance / cluster); address: as
    ``facesieve.distributed.ray_session``. progress: Ray Data's bars (only on a terminal).
    Returns an ImageRunResult (failed: [{"image", "error"}] per unreadable image).
    Raises RayUnavailable (Ray, or Ray Data's pandas / pyarrow, missing), ConnectionError,
    RuntimeError (the workers failed as a whole, e.g. the model could not be loaded: the
    message carries Ray's first line).
    """
    from facesieve.distributed import (
        RAY_INSTALL_HINT, RayUnavailable, cluster_cpus, error_line, ray_session,
    )

    try:  # Ray Data's own requirements (the "data" part of ray[default,data])
        import pandas  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError as e:
        raise RayUnavailable(
            f"--engine ray for images needs Ray Data ({e.name} is missing): {RAY_INSTALL_HINT}") from e

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    opts = dict(load_options or {})
    result = ImageRunResult(model=model, device=str(opts.get("device", "cpu")), out=str(out), inputs=len(paths))
    with ray_session(address, num_cpus=workers if address is None else None) as ray:
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress and sys.stderr.isatty())
        ctx.execution_options.preserve_order = True
        n = max(1, min(int(workers or cluster_cpus(ray, available=True)), len(paths)))
        blocks = max(1, min(len(paths), n * 4))
        ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
        ds = ds.map_batches(
            DetectBatch,
            fn_constructor_kwargs={"model": model, "load_options": opts, "score_threshold": score_threshold,
                                   "nms_threshold": nms_threshold},
            batch_size=batch_size, concurrency=n, num_cpus=1, batch_format="numpy",
        )
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-detections-", dir=out))
        try:
            try:
                ds.write_parquet(str(tmp))
            except Exception as e:
                raise RuntimeError(f"the Ray workers failed: {error_line(e)}") from e
            final = out / PARQUET_DIR
            if final.exists():
                old = out / f".tmp-old-detections-{os.getpid()}-{time.monotonic_ns()}"
                os.replace(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    table = pq.read_table(final, columns=["path", "faces", "error", "worker", "detect_s"])
    per_worker: dict[str, list[float]] = {}
    for path, faces, error, worker, sec in zip(*(table.column(c).to_pylist() for c in table.column_names)):
        w = per_worker.setdefault(worker, [0, 0.0])
        w[0] += 1
        w[1] += sec
        if error is not None:
            result.failed.append({"image": path, "error": error})
        else:
            result.processed += 1
            result.faces += len(faces)
    result.workers = [{"worker": k, "images": v[0], "busy_s": round(v[1], 3),
                       "images_per_s": round(v[0] / v[1], 3) if v[1] > 0 else 0.0}
                      for k, v in sorted(per_worker.items())]
    result.parquet = str(final)
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["DetectBatch", "ImageRunResult", "PARQUET_DIR", "detect_images_ray"]

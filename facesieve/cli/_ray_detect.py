"""`facesieve detect ... --engine ray`: the image corpus on Ray Data, results as Parquet.

Kept out of cli/detect.py so that the local engine's code path stays as it is; see
``facesieve.distributed.images`` for the dataset layout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from facesieve.cli._args import show_progress


def run_ray_detect(args: argparse.Namespace, paths: Sequence[Path], unmatched: Sequence[str], out_dir: Path,
                   extra_load_options: dict[str, Any] | None = None) -> int:
    """Run the detect command on Ray; same exit codes as the local engine (0 / 1 / 2).

    extra_load_options: further ``facesieve.load`` options from the command line (scale:
    max_size / target_size / multiscale; clip_boxes), given to every worker's detector."""
    from facesieve.distributed import RayUnavailable
    from facesieve.io import atomic_write_text

    if args.jsonl:
        print("facesieve detect: error: --engine ray writes Parquet (detections.parquet/); "
              "--jsonl is for --engine local", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        from facesieve.distributed import require_ray

        require_ray()
        from facesieve.distributed.images import detect_images_ray

        load_options = {"weights": args.weights, "device": args.device, "backend": args.backend,
                        "threads": args.threads, **(extra_load_options or {})}
        r = detect_images_ray(
            paths, out_dir, args.model, load_options=load_options, score_threshold=args.score_threshold,
            nms_threshold=args.nms_threshold, batch_size=args.batch_size or 8, workers=args.workers,
            address=args.ray_address, progress=show_progress(args),
        )
    except (RayUnavailable, ConnectionError, RuntimeError, ImportError) as e:
        print(f"facesieve detect: error: {e}", file=sys.stderr)
        return 2
    r.failed = [{"image": u, "error": "no images matched"} for u in unmatched] + r.failed
    r.seconds = time.perf_counter() - t0
    for f in r.failed:
        print(f"facesieve detect: failed: {f['image']}: {f['error']}", file=sys.stderr)
    if not args.quiet:
        print(f"{r.processed} images processed, {r.faces} faces found, {len(r.failed)} failed in {r.seconds:.2f} s "
              f"on {len(r.workers)} Ray workers -> {r.parquet}")
        for w in r.workers:
            print(f"  worker {w['worker']}: {w['images']} images, {w['images_per_s']:.2f} images/s busy")
    try:
        atomic_write_text(out_dir / "summary.json", json.dumps(r.to_dict(), indent=2) + "\n")
    except OSError as e:
        print(f"facesieve detect: error: cannot write {out_dir / 'summary.json'}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 1 if r.failed else 0

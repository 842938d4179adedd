"""MTCNN: facesieve vs facenet-pytorch (same original weights) on WIDER FACE val images.

    .venv/bin/python benchmarks/bench_mtcnn.py [--data ../shared/data/wider_val_dev] [--limit N]
        [--threads 2] [--batch-size 8] [--min-face-size 20] [--backend torch] [--no-reference]

Both run on the CPU with the same number of torch threads, on images decoded beforehand
(decoding is not timed), interleaved chunk by chunk so that both see the same machine load.
Reports WIDER FACE AP (official protocol, original image scale, every face each detector
returns: O-Net threshold 0.7 for both) and ms/image, measured the same way for both: the
time of a chunk of ``--batch-size`` images (facenet-pytorch one image per call, facesieve
one ``detect_batch`` call; with --single also facesieve one image per call) divided by
its size; medians and means are over chunks. The speed-up is given from the medians, the
means, and as the median over chunks of the ratio of both detectors' times on the same
chunk (least sensitive to a changing machine load). facenet-pytorch's median over single
images is printed too.

facenet-pytorch is installed --no-deps: its package ``__init__`` (which imports ``requests``)
is bypassed and ``benchmarks/_shims`` provides the one torchvision function it needs.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHIMS = Path(__file__).resolve().parent / "_shims"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "wider_val_dev"


def load_facenet_mtcnn() -> type:
    """facenet_pytorch.models.mtcnn.MTCNN without running facenet_pytorch/__init__.py."""
    if str(SHIMS) not in sys.path:
        sys.path.insert(0, str(SHIMS))
    if "facenet_pytorch" not in sys.modules:
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.6.0)")
        pkg = types.ModuleType("facenet_pytorch")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["facenet_pytorch"] = pkg
    from facenet_pytorch.models.mtcnn import MTCNN

    return MTCNN


def reference_predict(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """facenet-pytorch MTCNN -> function RGB image -> (N, 5) [x, y, w, h, score]."""

    def predict(image: np.ndarray) -> np.ndarray:
        boxes, probs = model.detect(image)
        if boxes is None:
            return np.zeros((0, 5))
        a = np.concatenate([np.asarray(boxes, np.float64), np.asarray(probs, np.float64)[:, None]], axis=1)
        a[:, 2:4] -= a[:, 0:2]
        return a

    return predict


def _ms(values: list[float]) -> dict[str, float]:
    return {"median_ms": 1000 * statistics.median(values), "mean_ms": 1000 * statistics.fmean(values)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="WIDER FACE data dir (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="first N images (sorted order)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenCV threads for both (default 2)")
    ap.add_argument("--batch-size", type=int, default=8, help="facesieve images per call (default 8)")
    ap.add_argument("--min-face-size", type=float, default=20.0)
    ap.add_argument("--backend", default="torch", help="facesieve MTCNN backend (default torch)")
    ap.add_argument("--single", action="store_true", help="also time facesieve one image per call")
    ap.add_argument("--no-reference", action="store_true", help="skip facenet-pytorch")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import cv2

    import facesieve
    from facesieve.data.widerface import image_key, image_paths, list_images
    from facesieve.evaluation.predictions import faces_to_array
    from facesieve.evaluation.widerface import evaluate_predictions

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rels = list_images(args.data)[: args.limit]
    keys = [image_key(r) for r in rels]
    t0 = time.perf_counter()
    images = [facesieve.load_image(p) for p in image_paths(args.data, rels)]
    print(f"{len(images)} images decoded in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{args.threads} threads", flush=True)

    det = facesieve.load("mtcnn", backend=args.backend, min_face_size=args.min_face_size)
    runs: dict[str, dict[str, Any]] = {}
    ours = f"facesieve mtcnn ({args.backend}, batch {args.batch_size})"
    runs[ours] = {"preds": {}, "times": []}
    if args.single:
        runs["facesieve mtcnn (batch 1)"] = {"preds": {}, "times": []}
    ref_name = "facenet-pytorch 2.6.0 MTCNN"
    ref = None
    if not args.no_reference:
        ref = reference_predict(load_facenet_mtcnn()(keep_all=True, device="cpu", min_face_size=args.min_face_size))
        runs[ref_name] = {"preds": {}, "times": []}
        ref(images[0])
    det.detect_batch(images[:1])  # warm-up

    bs = max(1, args.batch_size)

    def add_chunk(name: str, seconds: float, n: int) -> None:
        runs[name]["times"].extend([seconds / n] * n)  # every image of the chunk: its mean

    chunk_ratios: list[float] = []  # reference time / facesieve time, chunk by chunk
    ref_single: list[float] = []  # facenet-pytorch, seconds per single image
    for start in range(0, len(images), bs):
        chunk, ckeys = images[start:start + bs], keys[start:start + bs]
        ref_dt = 0.0
        if ref is not None:
            for k, im in zip(ckeys, chunk):
                t = time.perf_counter()
                runs[ref_name]["preds"][k] = ref(im)
                ref_single.append(time.perf_counter() - t)
                ref_dt += ref_single[-1]
            add_chunk(ref_name, ref_dt, len(chunk))
        t = time.perf_counter()
        faces = det.detect_batch(chunk, batch_size=bs)
        dt = time.perf_counter() - t
        if ref is not None:
            chunk_ratios.append(ref_dt / dt)
        add_chunk(ours, dt, len(chunk))
        runs[ours]["preds"].update({k: faces_to_array(f) for k, f in zip(ckeys, faces)})
        if args.single:
            single_dt = 0.0
            for k, im in zip(ckeys, chunk):
                t = time.perf_counter()
                f = det.detect(im)
                single_dt += time.perf_counter() - t
                runs["facesieve mtcnn (batch 1)"]["preds"][k] = faces_to_array(f)
            add_chunk("facesieve mtcnn (batch 1)", single_dt, len(chunk))
        print(f"  {min(start + bs, len(images))}/{len(images)}", end="\r", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"images": len(images), "threads": args.threads, "torch": torch.__version__,
                               "min_face_size": args.min_face_size, "models": {}}
    print(f"\n{'model':44s} {'easy':>6s} {'medium':>6s} {'hard':>6s} {'median ms/img':>14s} {'mean ms/img':>12s}")
    for name, run in runs.items():
        ap_ = evaluate_predictions(args.data, run["preds"], images=keys)
        r = {s: 100 * ap_[s] for s in ("easy", "medium", "hard")} | _ms(run["times"])
        results["models"][name] = r
        print(f"{name:44s} {r['easy']:6.2f} {r['medium']:6.2f} {r['hard']:6.2f} {r['median_ms']:14.1f} {r['mean_ms']:12.1f}")
    if ref is not None:
        results["models"][ref_name]["median_ms_single_images"] = 1000 * statistics.median(ref_single)
        print(f"facenet-pytorch median over single images: {1000 * statistics.median(ref_single):.1f} ms")
        for name in runs:
            if name != ref_name:
                m = results["models"]
                speed = {k: m[ref_name][k] / m[name][k] for k in ("median_ms", "mean_ms")}
                m[name]["speedup_vs_reference"] = speed
                print(f"speed-up of {name} over facenet-pytorch: {speed['median_ms']:.2f}x (median), "
                      f"{speed['mean_ms']:.2f}x (mean)")
        ours_ratio = statistics.median(chunk_ratios)
        results["models"][ours]["speedup_vs_reference"]["paired_chunks"] = ours_ratio
        print(f"speed-up of {ours}, median over chunks of {bs} images timed back to back: {ours_ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()

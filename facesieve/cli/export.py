"""`facesieve export MODEL --format onnx --out FILE`: export a model's network(s) to ONNX.

RetinaFace: one graph, input ``input`` float32 (N, 3, H, W) (N, H, W dynamic; mean
subtracted, the weights' channel order, e.g. BGR - (104, 117, 127)), outputs ``loc``
(N, A, 4), ``conf`` (N, A, 2) softmax, ``landmarks`` (N, A, 10).
MTCNN: three graphs ``<out>-pnet.onnx``, ``-rnet.onnx``, ``-onet.onnx`` (or pnet.onnx ...
inside ``--out`` when it is a directory); P-Net takes ``input`` (N, 3, H, W) (H, W
dynamic) and ``edge`` (N, 1, H - 2, W - 2), zeros for a plain image.
Every graph is checked against the PyTorch module on a random input of another size than
the one it was traced with; the largest absolute difference is printed.

Exit codes: 0 written and checked; 1 check failed (difference > --tolerance); 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    from facesieve.api import available_models

    p = sub.add_parser(
        "export",
        help="export a model to ONNX (optionally int8-quantised)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", choices=available_models(), help="model to export")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="output format (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE",
                   help="output .onnx file (MTCNN: file stem or directory for its three graphs)")
    p.add_argument("--weights", default=None, metavar="PATH|URL", help="checkpoint overriding the default weights")
    p.add_argument("--layout", default="nchw", choices=["nchw", "nhwc"],
                   help="RetinaFace input layout (default: %(default)s; nhwc = (N, H, W, 3))")
    p.add_argument("--quantize", action="store_true",
                   help="RetinaFace: static int8 (QDQ) quantisation calibrated on --calibration images "
                   "(see docs/performance.md for its measured AP loss)")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="images for --quantize calibration (e.g. WIDER train images)")
    p.add_argument("--calibration-images", type=int, default=8, metavar="N", help="how many (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest accepted |onnx - torch| in the check (float graphs; default: %(default)s)")
    p.set_defaults(func=run)


def _check(path: Path, module, inputs: list[np.ndarray]) -> float:
    """Max |graph - module| on ``inputs`` (ONNX Runtime, CPU)."""
    import torch

    from facesieve.backends.ort_runner import OrtOptions, OrtRunner
    from facesieve.export.onnx import max_abs_diff

    got = OrtRunner(path, OrtOptions(threads=1))(*inputs)
    with torch.inference_mode():
        ref = module(*(torch.from_numpy(x) for x in inputs))
    return max_abs_diff([t.numpy() for t in ref], got)


def _export_retinaface(args: argparse.Namespace, det) -> list[tuple[Path, float | None]]:
    from facesieve.export.onnx import write_graph
    from facesieve.export.retinaface import RetinaFaceGraph, export_retinaface

    data = export_retinaface(det.model, args.layout)
    if args.quantize:
        from facesieve.export.quantize import calibration_images, quantize_retinaface

        if args.layout != "nchw":
            raise ValueError("--quantize needs --layout nchw")
        if args.calibration is None:
            raise ValueError("--quantize needs --calibration DIR (images to calibrate activation ranges)")
        data = quantize_retinaface(data, det, calibration_images(args.calibration, args.calibration_images))
    out = args.out if args.out.suffix else args.out.with_suffix(".onnx")
    write_graph(data, out)
    if args.quantize:
        return [(out, None)]
    shape = (2, 3, 200, 328) if args.layout == "nchw" else (2, 200, 328, 3)
    x = np.random.default_rng(0).normal(0.0, 60.0, shape).astype(np.float32)
    return [(out, _check(out, RetinaFaceGraph(det.model, args.layout), [x]))]


def _export_mtcnn(args: argparse.Namespace, det) -> list[tuple[Path, float | None]]:
    from facesieve.export.mtcnn import STAGES, export_mtcnn_stage, stage_graph
    from facesieve.export.onnx import write_graph

    if args.quantize:
        raise ValueError("--quantize is available for RetinaFace only")
    nets = det.runner.nets
    rng = np.random.default_rng(0)
    inputs = {
        "pnet": [rng.uniform(-1, 1, (1, 3, 61, 87)).astype(np.float32), np.zeros((1, 1, 59, 85), np.float32)],
        "rnet": [rng.uniform(-1, 1, (5, 3, 24, 24)).astype(np.float32)],
        "onet": [rng.uniform(-1, 1, (5, 3, 48, 48)).astype(np.float32)],
    }
    if args.out.suffix == ".onnx":
        paths = {s: args.out.with_name(f"{args.out.stem}-{s}.onnx") for s in STAGES}
    else:
        paths = {s: args.out / f"{s}.onnx" for s in STAGES}
    written = []
    for stage in STAGES:
        write_graph(export_mtcnn_stage(nets, stage), paths[stage])
        written.append((paths[stage], _check(paths[stage], stage_graph(nets, stage), inputs[stage])))
    return written


def run(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("onnx", "facesieve export")  # onnx writes the graph, onnxruntime checks it
    import facesieve
    from facesieve.weights.cache import WeightsError

    try:
        det = facesieve.load(args.model, weights=args.weights, backend="torch")  # exports the torch module
        written = (_export_mtcnn if args.model == "mtcnn" else _export_retinaface)(args, det)
    except (ValueError, OSError, WeightsError) as e:
        print(f"facesieve export: {e}", file=sys.stderr)
        return 2
    status = 0
    for path, diff in written:
        if diff is None:
            print(f"{path}: written (int8; no exact check, compare AP instead)")
            continue
        ok = diff <= args.tolerance
        status |= 0 if ok else 1
        print(f"{path}: written; max |onnx - torch| = {diff:.3g}{'' if ok else f' > tolerance {args.tolerance}'}")
    return status

"""`facesieve eval widerface DATA_DIR ...`: WIDER FACE easy/medium/hard AP of a model or a prediction folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facesieve.cli._args import add_backend_args, add_quiet_args, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate detectors on benchmarks (WIDER FACE)")
    bench = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    w = bench.add_parser(
        "widerface",
        help="WIDER FACE easy/medium/hard AP (official protocol)",
        description="Run a model on a WIDER FACE data dir (or read an existing prediction folder) and "
        "print easy/medium/hard AP. Writes PRED_DIR/<event>/<stem>.txt, PRED_DIR/ap.json and "
        "PRED_DIR/pr_curves.png.",
    )
    w.add_argument("data_dir", metavar="DATA_DIR", help="folder with images/<event>/*.jpg and the ground truth")
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model name to run (see `facesieve models`)")
    src.add_argument("--predictions", metavar="PRED_DIR", help="evaluate an existing prediction folder instead")
    w.add_argument("--weights", help="checkpoint path or URL overriding the model's default weights")
    w.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_backend_args(w)
    w.add_argument("--out", metavar="PRED_DIR", help="output folder (default: widerface_<model>, or the --predictions folder)")
    w.add_argument("--score-threshold", type=float, default=0.02, help="detector score threshold (default: 0.02)")
    w.add_argument("--nms-threshold", type=float, default=0.4, help="detector NMS overlap threshold (default: 0.4): intersection over union for "
                   "RetinaFace; for MTCNN intersection over the smaller box (its own default is 0.7)")
    w.add_argument("--scales", choices=("protocol", "detect"), default="protocol",
                   help="protocol: one pass at the original size, the WIDER FACE protocol of the published "
                   "APs (default); detect: the model's own scales, as `facesieve detect` runs it "
                   "(RetinaFace: multi-scale, see README)")
    w.add_argument("--limit", type=int, help="run only the first N images (sorted by <event>/<file>)")
    w.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    w.add_argument("--gt", choices=("auto", "mat", "text"), default="auto",
                   help="ground truth: official .mat files (auto when present) or the bbx_gt text file (approximate settings)")
    w.add_argument("--only-predicted", action="store_true",
                   help="with --predictions: evaluate only the images that have a prediction file")
    add_quiet_args(w, what="file list (the AP line is always printed)")
    w.set_defaults(func=run_widerface)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_widerface(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("eval", "facesieve eval")  # .mat ground truth (scipy), PR curves (matplotlib)
    from facesieve.data.widerface import WiderFaceDataError, locate_data_dir
    from facesieve.evaluation.widerface import evaluate_detector, evaluate_predictions, format_aps, save_report

    try:
        locate_data_dir(args.data_dir)
        if args.predictions:
            pred_dir = Path(args.predictions)
            if not pred_dir.is_dir():
                raise WiderFaceDataError(f"{pred_dir}: prediction directory not found")
            result = evaluate_predictions(
                args.data_dir, pred_dir, gt_source=args.gt, only_predicted=args.only_predicted
            )
            out = Path(args.out) if args.out else pred_dir
            missing = result["info"]["missing_predictions"]
            if missing:
                print(
                    f"warning: {missing} image(s) have no prediction file and count as no detections "
                    "(use --only-predicted to evaluate just the predicted images)",
                    file=sys.stderr,
                )
            save_report(result, out)
        else:
            from facesieve.api import load

            detector = load(args.model, weights=args.weights, device=args.device, backend=args.backend,
                            threads=args.threads)
            out = Path(args.out) if args.out else Path(f"widerface_{args.model}")
            result = evaluate_detector(
                detector,
                args.data_dir,
                out_dir=out,
                limit=args.limit,
                score_threshold=args.score_threshold,
                nms_threshold=args.nms_threshold,
                batch_size=args.batch_size,
                progress=show_progress(args),
                gt_source=args.gt,
                scales="protocol" if args.scales == "protocol" else "detector",
            )
    except (WiderFaceDataError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = result["info"]
    scales = f", scales: {args.scales}" if not args.predictions else ""
    print(f"WIDER FACE AP ({info['num_images']} images, gt: {info['gt_source']}{scales}): {format_aps(result)}")
    if info["gt_source"] == "text":
        print("note: easy/medium/hard from the text GT are approximate, not the official .mat settings", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {out / 'ap.json'} and {out / 'pr_curves.png'}")
    return 0

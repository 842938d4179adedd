"""`facesieve video PATH... --frames N --out DIR`: N face frames and crops per video.

MTCNN runs on N frames spread evenly over each video; frames where it finds too little
are re-detected with RetinaFace; when fewer than N frames have faces, the successful
ones are duplicated (flagged "oversampled") up to N.

Outputs in --out (each video's directory appears complete or not at all):
    <video>/crops/<frame>_<face>.jpg   aligned (112x112 ArcFace template) or box crops
    <video>/manifest.jsonl             one row per face: frame index, timestamp (s), detector,
                                       oversampled, box [x1,y1,x2,y2], score, 5 landmarks
                                       [x,y] (full-resolution upright frame pixels), crop path
    <video>/manifest.parquet           same, with --parquet
    <video>/done.json                  completion marker: a re-run skips the video
    summary.json                       videos done / skipped / failed (with reasons),
                                       faces, frames per detector, timing

Exit codes: 0 every video processed or skipped; 1 some video failed (the others were
processed); 2 usage error (no input matched, bad option, model not loadable).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facesieve.cli._args import add_backend_args, add_quiet_args, positive_float, positive_int, show_progress, unit_float


def _side(text: str) -> int | None:
    if text.lower() in ("none", "full", "0"):
        return None
    v = positive_int(text)
    if v < 32:
        raise argparse.ArgumentTypeError(f"must be >= 32 pixels (or 'full'), got {v}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    from facesieve.api import available_models

    models = available_models()
    p = sub.add_parser(
        "video",
        help="extract N face frames and aligned crops per video (MTCNN, RetinaFace fallback)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="video files, directories (searched recursively) or quoted globs ('**' recurses)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    g = p.add_argument_group("sampling")
    g.add_argument("--frames", "-n", type=positive_int, default=32, metavar="N",
                   help="face frames wanted per video, sampled evenly over its duration (default: %(default)s)")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--every", type=positive_int, default=None, metavar="K",
                   help="sample every K-th frame instead (N is then the oversampling target)")
    m.add_argument("--fps", type=positive_float, default=None, metavar="F",
                   help="sample F frames per second of video instead")
    g.add_argument("--no-oversample", action="store_true", help="do not duplicate face frames up to N")
    g = p.add_argument_group("detectors")
    g.add_argument("--primary", default="mtcnn", choices=models, help="first detector (default: %(default)s)")
    g.add_argument("--fallback", default="retinaface-mnet025", choices=models + ["none"],
                   help="detector for frames where the primary found too little (default: %(default)s)")
    g.add_argument("--min-faces", type=positive_int, default=1, metavar="K",
                   help="fallback when the primary finds fewer confident faces (default: %(default)s)")
    g.add_argument("--confident-score", type=unit_float, default=0.9, metavar="S",
                   help="score a primary face needs to count as found (default: %(default)s)")
    g.add_argument("--max-size", "--detect-max-side", dest="max_size", type=_side, default=960,
                   metavar="PX", help="downscale frames to this long side for the primary detector, 'full' = no "
                        "downscaling (as `facesieve detect --max-size`; default: %(default)s)")
    g.add_argument("--fallback-max-size", "--fallback-max-side", dest="fallback_max_size", type=_side,
                   default=960, metavar="PX", help="same for the fallback detector (default: %(default)s)")
    g.add_argument("--min-face-size", type=positive_float, default=None, metavar="PX",
                   help="MTCNN smallest face in detector-input pixels (default: MTCNN's 20)")
    g.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_backend_args(g, threads=False, auto="OpenVINO for both detectors on the CPU")
    g.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                   help="frames per detector call (default: %(default)s)")
    g.add_argument("--fast-decode", action="store_true",
                   help="skip H.264 deblocking: ~25%% less decoding, pixels off by ~1 grey level")
    g = p.add_argument_group("crops")
    g.add_argument("--crop", choices=["aligned", "box", "none"], default="aligned",
                   help="aligned: 5-point ArcFace alignment; box: box + margin (default: %(default)s)")
    g.add_argument("--crop-size", type=positive_int, default=112, metavar="PX", help="crop side (default: %(default)s)")
    g.add_argument("--margin", type=float, default=0.2, metavar="F",
                   help="box crops: margin per side as a fraction of the box (default: %(default)s)")
    g.add_argument("--keep", choices=["all", "largest", "best"], default="all",
                   help="faces kept per frame (default: %(default)s)")
    g.add_argument("--format", dest="image_format", choices=["jpg", "png"], default="jpg")
    g = p.add_argument_group("outputs")
    g.add_argument("--parquet", action="store_true", help="also write manifest.parquet (needs pyarrow)")
    g.add_argument("--overwrite", action="store_true", help="redo videos that are already complete")
    add_quiet_args(g)
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process; ray: a pool of Ray workers, one video each at a time, "
                        "same outputs (needs facesieve[ray]; see docs/scaling.md) (default: %(default)s)")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="--engine ray: 'auto' or 'ray://host:10001' joins a cluster (--out must be on a "
                        "filesystem all nodes share); default: start Ray on this machine")
    g.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="--engine ray: worker processes (default: one per CPU of the machine / cluster)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("video", "facesieve video")  # MissingDependencyError: one line from main(), exit 2
    from facesieve.video.config import VideoConfig
    from facesieve.video.job import VideoFaceExtractor, expand_video_inputs

    config = VideoConfig(
        frames=args.frames,
        every=args.every,
        fps=args.fps,
        oversample=not args.no_oversample,
        primary=args.primary,
        fallback=None if args.fallback == "none" else args.fallback,
        min_faces=args.min_faces,
        confident_score=args.confident_score,
        max_size=args.max_size,
        fallback_max_size=args.fallback_max_size,
        min_face_size=args.min_face_size,
        device=args.device,
        backend=args.backend,
        batch_size=args.batch_size,
        fast_decode=args.fast_decode,
        crop=args.crop,
        crop_size=args.crop_size,
        margin=args.margin,
        keep=args.keep,
        image_format=args.image_format,
        parquet=args.parquet,
    )
    try:
        config.validate()
    except ValueError as e:
        print(f"facesieve video: {e}", file=sys.stderr)
        return 2
    if args.engine != "ray" and (args.workers or args.ray_address):
        print("facesieve video: --workers / --ray-address need --engine ray", file=sys.stderr)
        return 2
    paths, unmatched = expand_video_inputs(args.inputs, exclude=[args.out])
    for u in unmatched:
        print(f"facesieve video: no video matches {u!r}", file=sys.stderr)
    if not paths:
        print("facesieve video: nothing to do (no input matched)", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from facesieve.io.paths import display_path

        print(display_path(f"facesieve video: cannot create --out {args.out}: {e.strerror or e}"), file=sys.stderr)
        return 2
    if args.engine == "ray":
        from facesieve.distributed import RayUnavailable
        from facesieve.video.ray_engine import WorkerStartError, run_ray

        try:
            summary = run_ray([str(p) for p in paths], args.out, config, overwrite=args.overwrite,
                              progress=show_progress(args), address=args.ray_address, workers=args.workers)
        except (RayUnavailable, ConnectionError, WorkerStartError) as e:
            print(f"facesieve video: {e}", file=sys.stderr)
            return 2
        return _report(args, summary)
    extractor = VideoFaceExtractor(config)
    try:
        extractor.detectors  # load the models now: a bad model is a usage error, not N failed videos
    except Exception as e:
        print(f"facesieve video: cannot load the detectors: {e}", file=sys.stderr)
        return 2
    summary = extractor.run([str(p) for p in paths], args.out, overwrite=args.overwrite, progress=show_progress(args))
    return _report(args, summary)


def _report(args: argparse.Namespace, summary) -> int:
    from facesieve.io.paths import display_path as show

    for v in summary.videos:
        if v.status == "failed":
            print(show(f"FAILED {v.path}: {v.error}"), file=sys.stderr)
    if not args.quiet:
        d = summary.to_dict()
        per = ", ".join(f"{k} {n}" for k, n in d["faces_from_detector"].items()) or "none"
        print(show(
            f"{d['done']} done, {d['skipped']} skipped, {d['failed']} failed; {d['faces']} faces; "
            f"face frames by detector: {per}; fallback on {d['fallback_frames']}/{d['frames_sampled']} frames; "
            f"{d['seconds']:.1f} s -> {args.out / 'summary.json'}"
        ))
        for w in d.get("ray", {}).get("per_worker", []):  # --engine ray: throughput per worker
            print(f"  worker {w['worker']} ({w['node']}): {w['videos']} videos, {w['videos_per_min']:.1f} "
                  f"videos/min busy, {100 * w['utilisation']:.0f}% busy, {w['restarts']} restarts")
    return summary.exit_code

"""Video face extraction speed on the real clips: the whole job, and where its time goes.

    .venv/bin/python benchmarks/bench_video.py [--videos ../shared/data/videos] [--clips a.mp4,b.mp4]
        [--preset goal|default] [--frames 32] [--detect-max-side PX] [--min-face-size PX]
        [--backend openvino] [--fast-decode]
        [--threads 2] [--repeat 2] [--no-profile] [--json out.json]

Per clip, with the detectors loaded once beforehand (model loading is not timed):

* job: ``VideoFaceExtractor.run`` into a fresh temporary directory, decode thread and
  detection overlapping, aligned 112x112 crops written as JPEG, manifest and marker
  included. Reported: wall seconds (best of --repeat) and the process CPU seconds of that
  run (all threads; on an idle 2-core machine the wall cannot be below cpu / 2), frames
  decoded by FFmpeg, frames sent to each detector, faces found, face frames, oversampled
  duplicates and the share of frames that needed the fallback.
* profile (stages run one after the other, same settings): decode (index pass, seeks,
  decoding, RGB conversion, detector-copy resize), primary detection, fallback detection,
  crops -- wall and CPU seconds of this process (time.process_time), to show what dominates.

The goal in issue 4: 32 aligned faces from a 10 s 1080p clip in <= 1.5 s wall on 2 cores.
The load average is printed: on a shared machine the walls are upper bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "videos"


def _load(name: str, backend: str, threads: int, **options):
    import facesieve

    options["backend"] = backend  # explicit: load()'s default is "auto"
    if backend != "torch":
        options["threads"] = threads
    return facesieve.load(name, **options)


def _cpu() -> float:
    """CPU seconds used by this process so far, all threads (user + system)."""
    t = os.times()
    return t.user + t.system


def profile_clip(path: Path, cfg, cascade) -> dict[str, float]:
    """Decode, primary, fallback and crop stages one after the other: (wall, cpu) seconds."""
    from facesieve.align import align_face, box_crop, select_faces
    from facesieve.video.sampling import VideoReader

    out: dict[str, float] = {}
    w, c = time.perf_counter(), time.process_time()
    with VideoReader(path, detect_max_side=cfg.max_size, fast=cfg.fast_decode) as r:
        frames = list(r.read(r.choose(frames=cfg.frames)))
    out["decode_wall"], out["decode_cpu"] = time.perf_counter() - w, time.process_time() - c
    pname = cascade._name(cascade.primary)
    w, c = time.perf_counter(), time.process_time()
    first = cascade._run(cascade.primary, frames, cascade.primary_max_side)
    out["primary_wall"], out["primary_cpu"] = time.perf_counter() - w, time.process_time() - c
    todo = [i for i, f in enumerate(first) if cascade.needs_fallback(f)]
    w, c = time.perf_counter(), time.process_time()
    second = cascade._run(cascade.fallback, [frames[i] for i in todo], cascade.fallback_max_side) \
        if (cascade.fallback is not None and todo) else []
    out["fallback_wall"], out["fallback_cpu"] = time.perf_counter() - w, time.process_time() - c
    faces = list(first)
    for i, f in zip(todo, second):
        if f:
            faces[i] = f
    w, c = time.perf_counter(), time.process_time()
    n = 0
    for fr, fs in zip(frames, faces):
        for face in select_faces(fs, cfg.keep):
            if face.landmarks is not None:
                align_face(fr.image, face.landmarks, cfg.crop_size)
            else:
                box_crop(fr.image, face.box, cfg.margin, cfg.crop_size)
            n += 1
    out["crop_wall"], out["crop_cpu"] = time.perf_counter() - w, time.process_time() - c
    out["primary_frames"], out["fallback_frames"], out["crops"] = len(frames), len(todo), n
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    ap.add_argument("--clips", default="", help="comma-separated file names (default: every .mp4)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--preset", choices=["goal", "default"], default="goal",
                    help="goal: --detect-max-side 640 --min-face-size 40 --fast-decode (the 1.5 s target's "
                         "settings); default: the `facesieve video` defaults (960, MTCNN's 20 px, exact decode)")
    ap.add_argument("--detect-max-side", type=int, default=None)
    ap.add_argument("--fallback-max-side", type=int, default=960)
    ap.add_argument("--min-face-size", type=float, default=None, help="MTCNN minimum face, detector pixels")
    ap.add_argument("--confident-score", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backend", default="openvino", help="detector backend: torch, onnxruntime, openvino")
    ap.add_argument("--fast-decode", action="store_true", help="skip deblocking (VideoConfig.fast_decode)")
    ap.add_argument("--threads", type=int, default=2, help="torch / backend threads")
    ap.add_argument("--repeat", type=int, default=2, help="job runs per clip; the best wall is reported")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.preset == "goal":
        args.detect_max_side = args.detect_max_side or 640
        args.min_face_size = args.min_face_size or 40.0
        args.fast_decode = True
    else:
        args.detect_max_side = args.detect_max_side or 960

    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(args.threads)
    from facesieve.video import VideoConfig, VideoFaceExtractor
    from facesieve.video.fallback import FallbackDetector

    clips = [args.videos / c for c in args.clips.split(",") if c] or sorted(args.videos.glob("*.mp4"))
    primary_opts = {} if args.min_face_size is None else {"min_face_size": args.min_face_size}
    primary = _load("mtcnn", args.backend, args.threads, **primary_opts)
    fallback = _load("retinaface-mnet025", args.backend, args.threads)
    cfg = VideoConfig(frames=args.frames, max_size=args.detect_max_side,
                      fallback_max_size=args.fallback_max_side, confident_score=args.confident_score,
                      batch_size=args.batch_size, min_face_size=args.min_face_size, fast_decode=args.fast_decode)
    ex = VideoFaceExtractor(cfg, primary=primary, fallback=fallback)
    # warm-up: first calls build kernels / per-shape plans; not what a batch job pays per video
    ex.extract(clips[0])

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads "
          f"{args.threads}, backend {args.backend}, load average {os.getloadavg()[0]:.1f}")
    print(f"# N={args.frames}, detect max side {args.detect_max_side}, fallback max side "
          f"{args.fallback_max_side}, MTCNN min face {args.min_face_size or 20} px (detector input), "
          f"fast decode {args.fast_decode}, batch {args.batch_size}")
    head = (f"{'clip':32} {'res':>9} {'wall s':>7} {'cpu s':>6} {'decoded':>7} {'mtcnn':>5} {'retina':>6} {'faces':>5} "
            f"{'face fr':>7} {'dup':>3} {'fallback':>8}")
    print(head)
    results = []
    totals = dict(wall=0.0, cpu=0.0, decoded=0, mtcnn=0, retina=0, faces=0, face_frames=0, dup=0, frames=0, fb=0)
    for clip in clips:
        best = None
        for _ in range(max(1, args.repeat)):
            with tempfile.TemporaryDirectory() as tmp:
                c, t = _cpu(), time.perf_counter()
                s = ex.run([clip], tmp)
                wall, cpu = time.perf_counter() - t, _cpu() - c
            v = s.videos[0]
            if best is None or wall < best[0]:
                best = (wall, cpu, v)
        wall, cpu, v = best
        d = v.summary()
        row = {
            "clip": clip.name, "status": v.status, "error": v.error, "width": v.width, "height": v.height,
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "frames_decoded": d["frames_decoded"], "frames_sampled": d["frames_sampled"],
            "frames_to_detector": d["frames_to_detector"], "faces": d["faces"], "face_frames": d["face_frames"],
            "oversampled": d["oversampled"], "fallback_share": round(d["fallback_frames"] / max(1, d["frames_sampled"]), 3),
            "timing": d["timing"],
        }
        if not args.no_profile and v.status == "done":
            cascade = FallbackDetector(primary, fallback, cfg.min_faces, cfg.confident_score, cfg.max_size,
                              cfg.fallback_max_size, cfg.batch_size)
            row["profile"] = {k: round(x, 3) for k, x in profile_clip(clip, cfg, cascade).items()}
        results.append(row)
        sent = d["frames_to_detector"]
        print(f"{clip.name[:32]:32} {v.width:>4}x{v.height:<4} {wall:7.2f} {cpu:6.2f} {d['frames_decoded']:7d} "
              f"{sent.get('mtcnn', 0):5d} {sent.get('retinaface-mnet025', 0):6d} {d['faces']:5d} "
              f"{d['face_frames']:7d} {d['oversampled']:3d} {row['fallback_share']:8.0%}"
              + ("" if v.status == "done" else f"  FAILED {v.error}"))
        totals["wall"] += wall
        totals["cpu"] += cpu
        totals["decoded"] += d["frames_decoded"]
        totals["mtcnn"] += sent.get("mtcnn", 0)
        totals["retina"] += sent.get("retinaface-mnet025", 0)
        totals["faces"] += d["faces"]
        totals["face_frames"] += d["face_frames"]
        totals["dup"] += d["oversampled"]
        totals["frames"] += d["frames_sampled"]
        totals["fb"] += d["fallback_frames"]
    print(f"{'TOTAL':32} {'':9} {totals['wall']:7.2f} {totals['cpu']:6.2f} {totals['decoded']:7d} {totals['mtcnn']:5d} "
          f"{totals['retina']:6d} {totals['faces']:5d} {totals['face_frames']:7d} {totals['dup']:3d} "
          f"{totals['fb'] / max(1, totals['frames']):8.0%}")
    if not args.no_profile:
        print("\nprofile (stages run one after the other; wall / CPU seconds of this process)")
        print(f"{'clip':32} {'decode':>13} {'mtcnn':>13} {'retina':>13} {'crops':>11}")
        for r in results:
            p = r.get("profile")
            if p:
                print(f"{r['clip'][:32]:32} {p['decode_wall']:5.2f} / {p['decode_cpu']:5.2f} "
                      f"{p['primary_wall']:5.2f} / {p['primary_cpu']:5.2f} {p['fallback_wall']:5.2f} / "
                      f"{p['fallback_cpu']:5.2f} {p['crop_wall']:4.2f} / {p['crop_cpu']:4.2f}")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "clips": results, "totals": totals}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

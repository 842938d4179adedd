"""`facesieve detect PATH...`: detect faces in images, write annotated images and JSON.

Outputs in --out (every file written atomically: temp file + rename):
    <stem>.jpg          annotated image (unless --no-draw)
    <stem>.json         {"image", "width", "height", "model", "faces": [Face.to_dict()]}
                        (or, with --jsonl, one such object per line in detections.jsonl)
    summary.json        counts, failed inputs with reasons, timing, per-image outputs;
                        "complete": false until the run has gone through every input
                        (written at the start, so an interrupted or killed run never
                        leaves an older run's summary; Ctrl-C / SIGTERM also record
                        "interrupted" and the images done so far)
    coco.json           with --coco: COCO-style detections of all processed images
                        (images, annotations with bbox [x, y, w, h], score, 5 keypoints,
                        categories [face]); not written by an interrupted run
Inputs sharing a stem get "<stem>-2", "<stem>-3", ... in input order. Directories are
scanned for image-like files (see facesieve.io.paths.IMAGE_EXTENSIONS): each is either
processed or reported as failed with the reason (e.g. HEIC: "pip install pillow-heif").
Boxes are as the model gives them (they may reach outside the image) unless --clip-boxes.
File names that are not valid UTF-8 are printed with backslash escapes (\\xNN).

Exit codes: 0 all inputs processed; 1 some input failed (the others were processed);
2 usage error (no input matched, bad option, output dir unusable, model not loadable);
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from facesieve.cli._args import add_backend_args, add_quiet_args, positive_int, show_progress as _progress_wanted, unit_float
from facesieve.io.images import describe_error

MAX_BATCH_PIXELS = 32_000_000
"""Cap on a batch's padded size (n * max_h * max_w, pixels); a larger image runs alone."""

RESERVED_STEMS = ("summary",)
"""Stems whose <stem>.json would collide with our own files."""


def register(sub: argparse._SubParsersAction) -> None:
    from facesieve.api import DEFAULT_MODEL, available_models

    p = sub.add_parser(
        "detect",
        help="detect faces in images; write annotated images and JSON",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="PATH",
                   help="image files, directories (searched recursively) or quoted globs ('**' recurses)")
    p.add_argument("--model", default=DEFAULT_MODEL, choices=available_models(), help="default: %(default)s")
    p.add_argument("--weights", default=None, metavar="PATH|URL", help="checkpoint overriding the model's default weights")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: %(default)s)")
    add_backend_args(p)
    p.add_argument("--out", default="facesieve_out", type=Path, metavar="DIR", help="output directory (default: %(default)s)")
    p.add_argument("--score-threshold", type=unit_float, default=None, metavar="S",
                   help="keep faces scoring >= S (default: the model's)")
    p.add_argument("--nms-threshold", type=unit_float, default=None, metavar="T",
                   help="NMS overlap threshold (default: the model's): intersection over union for "
                   "RetinaFace (0.4); for MTCNN intersection over the smaller box (0.7), not IoU")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="images per forward pass (default: the model's)")
    g = p.add_argument_group("scale (see README: 'Image size and scale')")
    g.add_argument("--max-size", type=positive_int, default=None, metavar="PX",
                   help="downscale each image so its long side is at most PX before detection "
                   "(boxes in original pixels; default: original size)")
    g.add_argument("--target-size", type=positive_int, default=None, metavar="PX",
                   help="rescale each image so its short side is PX (capped by --max-size)")
    g.add_argument("--single-scale", action="store_true",
                   help="RetinaFace: one pass at that scale only (the WIDER FACE protocol); default: "
                   "also coarser passes, so that faces larger than its anchors are found whole")
    p.add_argument("--jsonl", action="store_true", help="write one detections.jsonl instead of a JSON per image")
    p.add_argument("--no-draw", action="store_true", help="do not write annotated images")
    p.add_argument("--coco", action="store_true",
                   help="also write coco.json: COCO-style detections (bbox xywh, score, 5 keypoints) of all images")
    p.add_argument("--clip-boxes", action="store_true",
                   help="clamp boxes and landmarks to the image (default: as the model gives them, "
                   "possibly reaching outside the image)")
    add_quiet_args(p)
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: Ray Data over a pool of detector actors, results in DIR/detections.parquet "
                        "(needs facesieve[ray]; see docs/scaling.md) (default: %(default)s)")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="--engine ray: 'auto' or 'ray://host:10001' joins a cluster; default: Ray on this machine")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="--engine ray: detector actors (default: one per CPU)")
    p.set_defaults(func=run)


@dataclass
class DetectRunSummary:
    """What a `facesieve detect` run did; ``to_dict`` is its summary.json. (Not the video
    job's ``facesieve.RunSummary`` = ``facesieve.video.VideoRunSummary``.)"""

    model: str
    device: str
    out: str
    inputs: int = 0
    processed: int = 0
    faces: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    load_seconds: float = 0.0
    complete: bool = False
    interrupted: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete, "interrupted": self.interrupted, "error": self.error,
            "model": self.model, "device": self.device, "out": self.out,
            "inputs": self.inputs, "processed": self.processed, "faces": self.faces,
            "failed": self.failed, "seconds": round(self.seconds, 3),
            "model_load_seconds": round(self.load_seconds, 3), "images": self.images,
        }


def assign_stems(paths: Sequence[Path], out_dir: Path, suffixes: Sequence[str] = (".jpg", ".json"),
                 reserved: Sequence[str] = RESERVED_STEMS) -> list[str]:
    """One unique output stem per input path, deterministic in input order.

    The first input with a given stem keeps it; later ones get "<stem>-2", "<stem>-3", ...
    skipping any stem that another input has naturally. Comparison is case-insensitive
    (for case-insensitive file systems). A stem is also skipped when an output
    ``out_dir/<stem><suffix>`` would overwrite one of the inputs, or is in ``reserved``.
    """
    input_files = {os.path.normcase(os.path.realpath(p)) for p in paths}
    natural = {p.stem.casefold() for p in paths}
    taken = {s.casefold() for s in reserved}

    def free(stem: str) -> bool:
        if stem.casefold() in taken:
            return False
        return all(os.path.normcase(os.path.realpath(out_dir / f"{stem}{s}")) not in input_files for s in suffixes)

    stems: list[str] = []
    for p in paths:
        base = p.stem or "image"
        stem, k = base, 1
        while not free(stem) or (k > 1 and stem.casefold() in natural):
            k += 1
            stem = f"{base}-{k}"
        taken.add(stem.casefold())
        stems.append(stem)
    return stems


def _load_batches(
    paths: Sequence[Path], batch_size: int, on_error: Callable[[int, BaseException], None],
    max_pixels: int | None = None,
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Load images one at a time; yield batches of (index, RGB uint8 array).

    A file that fails to load goes to ``on_error`` and is skipped. A batch is cut early
    when padding it to its largest height and width would exceed ``max_pixels``
    (default MAX_BATCH_PIXELS).
    """
    from facesieve.io import load_image

    max_pixels = MAX_BATCH_PIXELS if max_pixels is None else max_pixels
    batch: list[tuple[int, np.ndarray]] = []
    mh = mw = 0
    for i, path in enumerate(paths):
        try:
            arr = load_image(path)
        except Exception as e:  # any loader failure is a per-file error, never the end of the run
            on_error(i, e)
            continue
        h, w = arr.shape[:2]
        if batch and (len(batch) + 1) * max(mh, h) * max(mw, w) > max(max_pixels, h * w):
            yield batch
            batch, mh, mw = [], 0, 0
        batch.append((i, arr))
        mh, mw = max(mh, h), max(mw, w)
        if len(batch) >= batch_size:
            yield batch
            batch, mh, mw = [], 0, 0
    if batch:
        yield batch


def _write_summary(out_dir: Path, summary: DetectRunSummary) -> str | None:
    """Write summary.json atomically; the OS error's text if that fails."""
    from facesieve.io import atomic_write_text

    try:
        atomic_write_text(out_dir / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
    except OSError as e:
        return e.strerror or str(e)
    return None


@contextlib.contextmanager
def _summary_on_interrupt(out_dir: Path, summary: DetectRunSummary, finish: Callable[[], None]) -> Iterator[None]:
    """On Ctrl-C / SIGTERM: summary.json with what was done, "complete": false; then re-raise."""
    try:
        yield
    except KeyboardInterrupt as e:
        from facesieve.cli import Terminated

        summary.interrupted = "SIGTERM" if isinstance(e, Terminated) else "SIGINT"
        finish()
        _write_summary(out_dir, summary)
        raise


def coco_detections(records: Sequence[dict[str, Any]], model: str = "") -> dict[str, Any]:
    """COCO-style detection JSON from ``facesieve detect`` records ({"image", "width",
    "height", "faces": [Face.to_dict()]}): "images" (id from 1, file_name = the input path,
    width, height), "annotations" (id, image_id, category_id 1, bbox [x, y, w, h] in pixels
    from the xyxy box, area w * h, score, iscrowd 0, keypoints [x, y, v] * 5 in
    LANDMARK_NAMES order with v = 2, or all 0 and num_keypoints 0 without landmarks) and
    "categories" ([{"id": 1, "name": "face", "keypoints": LANDMARK_NAMES}])."""
    from facesieve.types import LANDMARK_NAMES

    images, annotations = [], []
    for image_id, rec in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": rec["image"], "width": rec["width"], "height": rec["height"]})
        for f in rec["faces"]:
            x1, y1, x2, y2 = f["box"]
            w, h = x2 - x1, y2 - y1
            lm = f.get("landmarks")
            kps = [0.0] * (3 * len(LANDMARK_NAMES)) if lm is None else [v for x, y in lm for v in (x, y, 2)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "bbox": [x1, y1, w, h], "area": w * h, "score": f["score"], "iscrowd": 0,
                "keypoints": kps, "num_keypoints": 0 if lm is None else len(LANDMARK_NAMES),
            })
    return {
        "info": {"description": "facesieve detect", "model": model},
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "face", "supercategory": "face",
                        "keypoints": list(LANDMARK_NAMES), "skeleton": []}],
    }


def scale_options(args: argparse.Namespace) -> dict[str, Any]:
    """``facesieve.load`` options of --max-size / --target-size / --single-scale (only those given)."""
    opts: dict[str, Any] = {}
    if args.max_size is not None:
        opts["max_size"] = args.max_size
    if args.target_size is not None:
        opts["target_size"] = args.target_size
    if args.single_scale:
        if not args.model.startswith("retinaface"):
            raise ValueError("--single-scale is a RetinaFace option (MTCNN's pyramid covers every face size)")
        opts["multiscale"] = False
    return opts


def run(args: argparse.Namespace) -> int:
    import facesieve
    from facesieve.io import atomic_open, atomic_write_bytes, atomic_write_text
    from facesieve.io.paths import display_path, expand_inputs

    t0 = time.perf_counter()
    out_dir: Path = args.out
    # usage errors first: nothing is written for a command that cannot run
    if args.engine == "ray" and (args.jsonl or args.coco):
        print("facesieve detect: error: --engine ray writes Parquet (detections.parquet/); "
              "--jsonl is for --engine local, as is --coco", file=sys.stderr)
        return 2
    if args.engine != "ray" and (args.workers or args.ray_address):
        print("facesieve detect: error: --workers / --ray-address need --engine ray", file=sys.stderr)
        return 2
    try:
        load_opts = scale_options(args)
    except ValueError as e:
        print(f"facesieve detect: error: {e}", file=sys.stderr)
        return 2
    if args.clip_boxes:
        load_opts["clip_boxes"] = True
    expanded = expand_inputs(args.inputs, exclude=[out_dir])
    if not expanded.paths:
        print(f"facesieve detect: error: no images found in: {' '.join(map(display_path, expanded.unmatched))}",
              file=sys.stderr)
        for folder, cause in expanded.unreadable:
            print(display_path(f"facesieve detect: error: {folder}: {cause}"), file=sys.stderr)
        return 2
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"facesieve detect: error: cannot create output directory {display_path(out_dir)}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 2
    # replace an older run's summary at once: until the end it says "complete": false
    summary = DetectRunSummary(model=args.model, device=str(args.device), out=str(out_dir), inputs=len(expanded.paths))
    problem = _write_summary(out_dir, summary)
    if problem:
        print(f"facesieve detect: error: cannot write {display_path(out_dir / 'summary.json')}: {problem}",
              file=sys.stderr)
        return 2

    if args.engine == "ray":
        from facesieve.cli._ray_detect import run_ray_detect

        return run_ray_detect(args, expanded.paths, expanded.unmatched, out_dir, extra_load_options=load_opts)
    show_progress = _progress_wanted(args) and sys.stderr.isatty()
    if show_progress:
        print(f"loading {args.model} on {args.device} ...", file=sys.stderr, flush=True)
    t_load = time.perf_counter()
    try:
        detector = facesieve.load(args.model, weights=args.weights, device=args.device,
                                  backend=args.backend, threads=args.threads, **load_opts)
    except Exception as e:  # report, do not dump a traceback for a bad --weights/--device
        print(display_path(f"facesieve detect: error: cannot load model {args.model!r}: {e}"), file=sys.stderr)
        summary.error = f"cannot load model {args.model!r}: {e}"
        _write_summary(out_dir, summary)
        return 2
    model = detector.name or args.model
    summary.model, summary.load_seconds = model, time.perf_counter() - t_load

    paths = expanded.paths
    stems = assign_stems(paths, out_dir, (".json",) if args.no_draw else (".jpg", ".json"),
                         RESERVED_STEMS + (("coco",) if args.coco else ()))
    for pattern in expanded.unmatched:
        summary.failed.append({"image": pattern, "error": "no images matched"})
    for folder, cause in expanded.unreadable:
        summary.failed.append({"image": folder, "error": cause})
    failed_at: dict[int, str] = {}
    batch_size = args.batch_size or getattr(detector, "default_batch_size", 8)
    draw = not args.no_draw
    if draw:
        from facesieve.viz import draw_faces, encode_jpeg

    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=not show_progress)

    def fail(i: int, e: BaseException | str) -> None:
        failed_at[i] = e if isinstance(e, str) else describe_error(e)
        bar.update(1)

    def detect(arrays: list[np.ndarray]) -> list:
        res = detector.detect_batch(arrays, batch_size=len(arrays), score_threshold=args.score_threshold,
                                    nms_threshold=args.nms_threshold, clip_boxes=args.clip_boxes or None)
        if len(res) != len(arrays):
            raise RuntimeError(f"detector returned {len(res)} results for {len(arrays)} images")
        return res

    jsonl_cm = atomic_open(out_dir / "detections.jsonl", "w", encoding="utf-8") if args.jsonl else contextlib.nullcontext()
    per_image: dict[int, dict[str, Any]] = {}
    coco_records: list[dict[str, Any]] = []

    def finish() -> None:
        summary.images = [per_image[i] for i in sorted(per_image)]
        summary.failed += [{"image": str(paths[i]), "error": failed_at[i]} for i in sorted(failed_at)]
        summary.seconds = time.perf_counter() - t0

    with _summary_on_interrupt(out_dir, summary, finish), jsonl_cm as jsonl, bar:
        for batch in _load_batches(paths, batch_size, fail):
            try:
                results = detect([a for _, a in batch])
            except Exception:  # isolate the image that breaks the batch
                results = []
                for _, a in batch:
                    try:
                        results.append(detect([a])[0])
                    except Exception as e:
                        results.append(e)
            for (i, arr), faces in zip(batch, results):
                if isinstance(faces, BaseException):
                    fail(i, f"detection failed: {describe_error(faces)}")
                    continue
                stem, h, w = stems[i], int(arr.shape[0]), int(arr.shape[1])
                record = {"image": str(paths[i]), "width": w, "height": h, "model": model,
                          "faces": [f.to_dict(decimals=3) for f in faces]}
                entry: dict[str, Any] = {"image": str(paths[i]), "faces": len(faces), "annotated": None, "json": None}
                try:
                    if draw:
                        atomic_write_bytes(out_dir / f"{stem}.jpg", encode_jpeg(draw_faces(arr, faces)))
                        entry["annotated"] = f"{stem}.jpg"
                    text = json.dumps(record, allow_nan=False)
                    if jsonl is not None:
                        jsonl.write(text + "\n")
                    else:
                        atomic_write_text(out_dir / f"{stem}.json", json.dumps(record, indent=2, allow_nan=False) + "\n")
                        entry["json"] = f"{stem}.json"
                except Exception as e:
                    if entry["annotated"]:  # a failed image leaves no outputs behind
                        with contextlib.suppress(OSError):
                            (out_dir / entry["annotated"]).unlink()
                    fail(i, f"cannot write output: {describe_error(e)}")
                    continue
                per_image[i] = entry
                if args.coco:
                    coco_records.append(record)
                summary.processed += 1
                summary.faces += len(faces)
                bar.set_postfix(faces=summary.faces, failed=len(failed_at), refresh=False)
                bar.update(1)
            del batch, results

    finish()
    if args.coco:  # records are in input order, like the summary
        try:
            atomic_write_text(out_dir / "coco.json",
                              json.dumps(coco_detections(coco_records, model), allow_nan=False) + "\n")
        except (OSError, ValueError) as e:
            summary.failed.append({"image": str(out_dir / "coco.json"), "error": f"cannot write output: {describe_error(e)}"})
    summary.complete = True
    with contextlib.suppress(BrokenPipeError):  # `| head`: still write summary.json below
        _print_summary(summary, out_dir, args.jsonl, args.quiet)
    problem = _write_summary(out_dir, summary)
    if problem:
        print(f"facesieve detect: error: cannot write {display_path(out_dir / 'summary.json')}: {problem}",
              file=sys.stderr)
        return 1
    return 1 if summary.failed else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_summary(s: DetectRunSummary, out_dir: Path, jsonl: bool, quiet: bool, max_listed: int = 20) -> None:
    """Readable summary on stdout, failures on stderr; with ``quiet`` only the failures.
    Paths that are not valid UTF-8 are printed with \\xNN escapes (``display_path``)."""
    from facesieve.io.paths import display_path as show

    sys.stdout.flush()
    for f in s.failed:
        print(show(f"facesieve detect: failed: {f['image']}: {f['error']}"), file=sys.stderr)
    sys.stderr.flush()
    if quiet:
        return
    per_img = (s.seconds - s.load_seconds) / max(1, s.processed)
    print(f"{_plural(s.processed, 'image')} processed, {_plural(s.faces, 'face')} found, "
          f"{len(s.failed)} failed in {s.seconds:.2f} s "
          f"(model {s.model} on {s.device}: load {s.load_seconds:.2f} s, {per_img:.3f} s/image)")
    if s.images and len(s.images) <= max_listed:
        for e in s.images:
            outs = ", ".join(str(out_dir / e[k]) for k in ("annotated", "json") if e[k])
            print(show(f"  {e['image']}: {_plural(e['faces'], 'face')}" + (f" -> {outs}" if outs else "")))
    if jsonl:
        print(show(f"detections: {out_dir / 'detections.jsonl'}"))
    print(show(f"summary: {out_dir / 'summary.json'}"))

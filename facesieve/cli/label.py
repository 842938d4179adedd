"""`facesieve label`: add 5-point landmarks to a box-only face dataset with a trained detector.

    facesieve label --data ../shared/data/wider_train_mini --out runs/mini_lm/label.txt

Writes a RetinaFace label.txt (or JSON Lines for a ``.jsonl`` output) atomically. Faces the
detector does not find (IoU < --iou with a detection) keep their box without landmarks.
Images that cannot be read are listed on stderr (with the reason) and keep their boxes
without landmarks; the output is still written, and the exit code is 1.

Exit codes: 0 every image labelled; 1 some image unreadable; 2 bad dataset or model.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facesieve.cli._args import add_backend_args, add_quiet_args, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="annotate a box dataset with landmarks from a detector")
    p.add_argument("--data", required=True,
                   help="box dataset: wider_face_*_bbx_gt.txt, label.txt, *.jsonl or a folder with one")
    p.add_argument("--images", help="image root (default: images/ beside the label file)")
    p.add_argument("--out", required=True, help="output label.txt (or .jsonl)")
    p.add_argument("--model", default="retinaface-mnet025", help="detector (default: retinaface-mnet025)")
    p.add_argument("--weights", help="checkpoint path overriding the model's default weights")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    add_backend_args(p)
    p.add_argument("--iou", type=float, default=0.5, help="min IoU between a face and its detection (default: 0.5)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detector score threshold (default: 0.3)")
    p.add_argument("--keep-invalid", action="store_true", help="keep faces WIDER flags invalid")
    p.add_argument("--no-link-images", action="store_true",
                   help="do not create an images/ link beside the output pointing to the image root")
    add_quiet_args(p, what="link note")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("train", "facesieve label")  # face matching (scipy)
    from facesieve.api import load
    from facesieve.data.autolabel import annotate_dataset
    from facesieve.data.labels import load_box_dataset, write_jsonl, write_label_txt
    from facesieve.io.paths import display_path as show
    from facesieve.weights.cache import WeightsError

    try:
        data = load_box_dataset(args.data, args.images, keep_invalid=args.keep_invalid)
        detector = load(args.model, weights=args.weights, device=args.device, backend=args.backend,
                        threads=args.threads)
    except (FileNotFoundError, ValueError, OSError, WeightsError) as e:
        print(show(f"error: {e}"), file=sys.stderr)
        return 2
    progress = (lambda x: x)
    if show_progress(args):
        from tqdm import tqdm

        progress = lambda x: tqdm(x, desc="label", unit="img", file=sys.stderr, disable=None)  # noqa: E731 (TTY only)
    unreadable: list[str] = []
    items, stats = annotate_dataset(
        data, detector, args.iou, args.score_threshold, progress=progress, on_error=unreadable.append,
    )
    out = Path(args.out)
    try:
        if out.suffix == ".jsonl":  # JSON Lines paths are relative to the file's folder
            base = out.resolve().parent
            for it in items:
                it.path = Path(os.path.relpath((data.root / it.path).resolve(), base)).as_posix()
            write_jsonl(out, items)
        else:
            write_label_txt(out, items)
    except OSError as e:
        print(show(f"facesieve label: error: cannot write {out}: {e.strerror or e}"), file=sys.stderr)
        return 1
    link = out.parent / "images"
    if out.suffix != ".jsonl" and not args.no_link_images and not link.exists() \
            and data.root.resolve() != link.resolve():
        try:
            os.symlink(data.root.resolve(), link, target_is_directory=True)
            if not args.quiet:
                print(show(f"linked {link} -> {data.root.resolve()}"), file=sys.stderr)
        except OSError as e:
            print(show(f"note: could not link {link} ({e}); train with --images {data.root}"), file=sys.stderr)
    for msg in unreadable:
        print(show(f"facesieve label: unreadable image: {msg}; its faces kept without landmarks"), file=sys.stderr)
    print(show(f"{out}: {stats.images} images, {stats.faces} faces, {stats.labelled} with landmarks "
               f"({100 * stats.fraction:.1f}%), {stats.failed_images} unreadable images"))
    return 1 if stats.failed_images else 0  # written, but some images could not be read

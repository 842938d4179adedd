"""`facesieve train retinaface|mtcnn ...`: train detectors on a face dataset.

Data (``--data``): a RetinaFace ``label.txt``, our ``*.jsonl``, an official
``wider_face_*_bbx_gt.txt`` or a folder with one of them (see facesieve.data.labels).
"""
from __future__ import annotations

import argparse
import sys

from facesieve.nets.constants import MTCNN_STAGES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train RetinaFace or MTCNN on a face dataset")
    models = p.add_subparsers(dest="model", metavar="MODEL")
    _add_retinaface(models)
    _add_mtcnn(models)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("--data", required=True, help="label.txt, *.jsonl, wider_face_*_bbx_gt.txt or a folder with one")
    q.add_argument("--images", help="image root (default: images/ beside the label file)")
    q.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (logs, checkpoints, weights)")
    q.add_argument("--device", default="cpu", help="torch device (default: cpu; cuda under torchrun uses cuda:LOCAL_RANK)")
    q.add_argument("--workers", type=int, default=2, help="data loader processes (default: 2)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    q.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    q.add_argument("--max-iters", type=int, help="stop after this many iterations (checkpoint written)")
    q.add_argument("--max-minutes", type=float, help="stop after this much wall time (checkpoint written)")
    q.add_argument("--log-every", type=int, default=10, help="iterations per CSV row (default: 10)")
    q.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tensorboard (needs tensorboard)")
    q.add_argument("--keep-invalid", action="store_true", help="train on faces WIDER flags invalid too")


def _add_retinaface(models: argparse._SubParsersAction) -> None:
    q = models.add_parser(
        "retinaface", help="train RetinaFace (MobileNet-0.25 or ResNet-50)",
        description="Reference recipe: square crops, photometric distortion, mirror, resize 640/840; "
        "anchors matched at IoU 0.35; smooth-L1 box/landmark + CE with 7:1 hard negatives; SGD 0.9 / 5e-4, "
        "warm-up and step decay. Writes RUN_DIR/weights.pth (load with facesieve.load(..., weights=...)).",
    )
    _common(q)
    q.add_argument("--backbone", choices=("mobilenet0.25", "resnet50"), default="mobilenet0.25")
    q.add_argument("--pretrained", metavar="PATH", help="ImageNet backbone (e.g. mobilenetV1X0.25_pretrain.tar)")
    q.add_argument("--init", metavar="WEIGHTS",
                   help="start from detector weights: a checkpoint path or a model/weights name (fine-tuning)")
    q.add_argument("--image-size", type=int, help="training input side (default: 640 mnet, 840 r50)")
    q.add_argument("--batch-size", type=int, default=32, help="total over all GPUs (default: 32)")
    q.add_argument("--epochs", type=int, default=250)
    q.add_argument("--decay-epochs", type=float, nargs="+", help="epochs where lr *= gamma (default: 76%% and 88%%)")
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--momentum", type=float, default=0.9)
    q.add_argument("--weight-decay", type=float, default=5e-4)
    q.add_argument("--gamma", type=float, default=0.1)
    q.add_argument("--warmup-epochs", type=float, default=1.0)
    q.add_argument("--freeze-bn", action="store_true", help="keep BatchNorm statistics fixed (fine-tuning)")
    q.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    q.add_argument("--checkpoint-every", type=int, default=200, help="iterations between checkpoints")
    q.add_argument("--eval-data", metavar="WIDER_DIR", help="evaluate the final weights on this WIDER FACE folder")
    q.add_argument("--eval-limit", type=int, help="evaluate only the first N images")
    q.set_defaults(func=run_retinaface)


def _add_mtcnn(models: argparse._SubParsersAction) -> None:
    q = models.add_parser(
        "mtcnn", help="train one MTCNN stage (pnet, rnet, onet)",
        description="Generates stage samples (12/24/48 px crops: negatives/positives/parts/landmarks ~3:1:1:2; "
        "R-/O-Net samples mined with the earlier stages), then trains with OHEM (top 70%%) cross-entropy, "
        "L2 box and landmark losses weighted 1:0.5:0.5 (P, R) or 1:0.5:1 (O). Writes RUN_DIR/<stage>.pth.",
    )
    _common(q)
    q.add_argument("--stage", choices=MTCNN_STAGES, required=True)
    q.add_argument("--pnet", metavar="PATH", help="P-Net weights for mining (rnet/onet; default: the released P-Net)")
    q.add_argument("--rnet", metavar="PATH", help="R-Net weights for mining (onet; default: the released R-Net)")
    q.add_argument("--init", metavar="PATH", help="start this stage from weights (a stage .pth or an MTCNN checkpoint)")
    q.add_argument("--samples", metavar="NPZ", help="reuse a generated sample file instead of generating")
    q.add_argument("--batch-size", type=int, default=384)
    q.add_argument("--epochs", type=int, default=30)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--weight-decay", type=float, default=5e-4)
    q.add_argument("--decay-epochs", type=float, nargs="+", help="epochs where lr *= 0.1 (default: 60%% and 85%%)")
    q.add_argument("--negatives-per-image", type=int, default=50)
    q.add_argument("--crops-per-face", type=int, default=20)
    q.add_argument("--min-face", type=float, default=20.0, help="smallest face (pixels) for positives/parts")
    q.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    q.add_argument("--eval-data", metavar="DIR",
                   help="after training: P-/R-Net proposal recall (faces >= 24 px, IoU 0.5) or O-Net WIDER AP here")
    q.add_argument("--eval-limit", type=int, help="evaluate only the first N images")
    q.set_defaults(func=run_mtcnn)


def _config_from_args(cls: type, args: argparse.Namespace, **extra: object):  # noqa: ANN202
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "decay_epochs" in values:
        values["decay_epochs"] = tuple(values["decay_epochs"])
    values.update(extra)
    return cls(**values)


def run_retinaface(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("train", "facesieve train")  # fail now, not after training (plots, evaluation)
    from facesieve.training.retinaface import RetinaFaceTrainConfig, train_retinaface
    from facesieve.weights.cache import WeightsError

    if args.init and args.pretrained:
        print("error: give --init (detector weights) or --pretrained (backbone), not both", file=sys.stderr)
        return 2
    try:
        cfg = _config_from_args(RetinaFaceTrainConfig, args)
        train_retinaface(cfg)
    except (FileNotFoundError, ValueError, OSError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run_mtcnn(args: argparse.Namespace) -> int:
    from facesieve.optional import require_extra

    require_extra("train", "facesieve train")  # fail now, not after training (plots, evaluation)
    from facesieve.training.mtcnn import MTCNNTrainConfig, train_mtcnn
    from facesieve.weights.cache import WeightsError

    try:
        cfg = _config_from_args(MTCNNTrainConfig, args)
        train_mtcnn(cfg)
    except (FileNotFoundError, ValueError, OSError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

"""MTCNN stage training (P-Net, R-Net, O-Net), one stage per run.

Samples (``facesieve.training.mtcnn_samples``): P-Net from random crops of the box
dataset; R-Net / O-Net from the earlier stages' detections on the training images
(``propose`` callables from ``facesieve.training.mtcnn_mining``). All crops are held in
memory as uint8; batches are drawn from a shuffled permutation each epoch, mirrored with
probability 1/2 (targets mirrored too, left/right landmarks swapped).

Run directory::

    RUN_DIR/config.json, train.csv, val.csv, loss.png, summary.json
    RUN_DIR/samples_<stage>.npz     generated samples (reused by --resume / --samples)
    RUN_DIR/<stage>.pth             the trained stage's state dict (our nets.mtcnn names)
    RUN_DIR/mtcnn.pth               full cascade (this stage + --pnet/--rnet or released
                                    weights): facesieve.load("mtcnn", weights=RUN_DIR/mtcnn.pth)
    RUN_DIR/checkpoints/last.pt     full state for --resume
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from facesieve.data.labels import BoxDataset, load_box_dataset
from facesieve.nets.mtcnn import IMAGE_MEAN, IMAGE_SCALE, ONet, PNet, RNet
from facesieve.training.checkpoint import seed_everything, TrainState
from facesieve.training.losses import LANDMARK, NEGATIVE, PART, POSITIVE, MTCNNLossWeights, mtcnn_loss
from facesieve.training.mtcnn_samples import (
    STAGE_SIZES,
    RandomSampleConfig,
    SampleSet,
    generate_random_samples,
    mine_samples,
    mirror_samples,
)
from facesieve.training.run import RunBook, decay_iterations, say, step_decay_lr
from facesieve.weights.mtcnn import read_stage_state

NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


@dataclass
class MTCNNTrainConfig:
    """One stage's training run; saved as RUN_DIR/config.json.

    pnet / rnet: weights of the earlier stages used to mine R-/O-Net samples (a stage
        .pth from a previous run, an MTCNN checkpoint, or None for the released weights).
    init: start this stage from weights instead of random initialisation.
    eval_data: after training, measure on this dataset (e.g. a WIDER FACE folder): P-Net /
        R-Net proposal recall of faces >= 24 px at IoU 0.5, O-Net: WIDER FACE AP.
    samples: a samples .npz to train on instead of generating one.
    decay_epochs: epochs where lr *= 0.1 (default: 60% and 85% of the epochs).
    val_fraction: share of the samples held out for validation metrics.
    """

    data: str
    out: str
    stage: str
    images: str | None = None
    pnet: str | None = None
    rnet: str | None = None
    init: str | None = None
    samples: str | None = None
    batch_size: int = 384
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 5e-4
    decay_epochs: tuple[float, ...] | None = None
    optimizer: str = "adam"
    keep_ratio: float = 0.7
    negatives_per_image: int = 50
    crops_per_face: int = 20
    landmarks_per_face: int = 10
    min_face: float = 20.0
    val_fraction: float = 0.05
    device: str = "cpu"
    workers: int = 0
    seed: int = 0
    threads: int | None = None
    resume: bool = False
    max_iters: int | None = None
    max_minutes: float | None = None
    log_every: int = 50
    tensorboard: bool = False
    keep_invalid: bool = False
    eval_data: str | None = None
    eval_limit: int | None = None

    def resolved_decay_epochs(self) -> tuple[float, ...]:
        if self.decay_epochs is not None:
            return tuple(float(e) for e in self.decay_epochs)
        return (0.6 * self.epochs, 0.85 * self.epochs)


# --------------------------------------------------------------------------- tensors


def to_input(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, S, S, 3) uint8 RGB crops -> (B, 3, S, S) float32 ``(pixel - 127.5) / 128``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return (x.permute(0, 3, 1, 2).float() - IMAGE_MEAN) * IMAGE_SCALE


def landmarks_to_net(landmarks: np.ndarray) -> np.ndarray:
    """(B, 10) interleaved x0, y0, x1, y1, ... -> the nets' (x0..x4, y0..y4) order."""
    return landmarks.reshape(-1, 5, 2).transpose(0, 2, 1).reshape(-1, 10)


def stage_forward(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) -> score logits (B, 2), box (B, 4), landmarks (B, 10) for any stage."""
    out = net(x, landmarks=True)
    score, box, lm = out.score, out.box, out.landmarks
    if score.dim() == 4:  # P-Net on 12x12 crops: 1x1 maps
        score, box, lm = score.flatten(1), box.flatten(1), lm.flatten(1)
    return score, box, lm


def split_validation(samples: SampleSet, fraction: float, rng: np.random.Generator) -> tuple[SampleSet, SampleSet]:
    idx = rng.permutation(len(samples))
    n_val = int(round(fraction * len(samples)))
    return samples.select(np.sort(idx[n_val:])), samples.select(np.sort(idx[:n_val]))


@torch.no_grad()
def evaluate_samples(net: nn.Module, samples: SampleSet, device: torch.device, batch: int = 1024) -> dict[str, float]:
    """Classification accuracy / recall on held-out crops and mean box / landmark L2 errors."""
    net.eval()
    preds, boxes, lms = [], [], []
    for s in range(0, len(samples), batch):
        score, box, lm = stage_forward(net, to_input(samples.images[s : s + batch], device))
        preds.append(score.argmax(1).cpu().numpy())
        boxes.append(box.cpu().numpy())
        lms.append(lm.cpu().numpy())
    if not preds:
        return {}
    pred = np.concatenate(preds)
    box = np.concatenate(boxes)
    lm = np.concatenate(lms)
    lab = samples.labels
    out: dict[str, float] = {}
    cls = (lab == NEGATIVE) | (lab == POSITIVE)
    if cls.any():
        out["accuracy"] = float((pred[cls] == (lab[cls] == POSITIVE)).mean())
    if (lab == POSITIVE).any():
        out["positive_recall"] = float((pred[lab == POSITIVE] == 1).mean())
    if (lab == NEGATIVE).any():
        out["negative_recall"] = float((pred[lab == NEGATIVE] == 0).mean())
    reg = (lab == POSITIVE) | (lab == PART)
    if reg.any():
        out["box_l2"] = float(((box[reg] - samples.boxes[reg]) ** 2).sum(1).mean())
    lmk = lab == LANDMARK
    if lmk.any():
        out["landmark_l2"] = float(((lm[lmk] - landmarks_to_net(samples.landmarks[lmk])) ** 2).sum(1).mean())
    return out


# --------------------------------------------------------------------------- trainer


class MTCNNTrainer:
    """One stage's run: samples -> training loop -> RUN_DIR/<stage>.pth."""

    def __init__(self, cfg: MTCNNTrainConfig,
                 proposer_factory: Callable[[MTCNNTrainConfig], Callable[[np.ndarray], np.ndarray]] | None = None) -> None:
        if cfg.stage not in NETS:
            raise ValueError(f"unknown MTCNN stage {cfg.stage!r}; choose pnet, rnet or onet")
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.size = STAGE_SIZES[cfg.stage]
        self.proposer_factory = proposer_factory
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        seed_everything(cfg.seed)
        self.net = NETS[cfg.stage]().to(self.device)
        if cfg.init:
            self.net.load_state_dict(read_stage_state(cfg.init, cfg.stage), strict=True)
        if cfg.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=0.9,
                                             weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {cfg.optimizer!r}")
        self.weights = MTCNNLossWeights.for_stage(cfg.stage)
        self.book = RunBook(cfg, f"{cfg.stage}.pth")
        self.state = self.book.state

    def log(self, msg: str) -> None:
        """A progress line on stderr."""
        say(msg)

    @property
    def run_dir(self) -> Path:
        """The run directory (``cfg.out``)."""
        return self.book.dir

    @property
    def samples_path(self) -> Path:
        """RUN_DIR/samples_<stage>.npz, the generated samples."""
        return self.run_dir / f"samples_{self.cfg.stage}.npz"

    @property
    def weights_path(self) -> Path:
        """RUN_DIR/<stage>.pth, the trained stage's plain state dict."""
        return self.book.weights_path

    # ---------------------------------------------------------------- samples

    def load_dataset(self) -> BoxDataset:
        data = load_box_dataset(self.cfg.data, self.cfg.images, keep_invalid=self.cfg.keep_invalid)
        if not len(data):
            raise ValueError(f"{self.cfg.data}: no images")
        return data

    def samples(self) -> SampleSet:
        cfg = self.cfg
        if cfg.samples:
            return SampleSet.load(cfg.samples)
        if self.samples_path.is_file():
            self.log(f"samples: reusing {self.samples_path}")
            return SampleSet.load(self.samples_path)
        data = self.load_dataset()
        rng = np.random.default_rng(cfg.seed)
        t0 = time.monotonic()
        progress = _progress(f"samples {cfg.stage}")
        if cfg.stage == "pnet":
            rcfg = RandomSampleConfig(cfg.negatives_per_image, 5, cfg.crops_per_face, cfg.landmarks_per_face,
                                      cfg.min_face)
            s = generate_random_samples(data, self.size, rng, rcfg, progress=progress)
        else:
            if self.proposer_factory is None:
                from facesieve.training.mtcnn_mining import cascade_proposer

                propose = cascade_proposer(cfg.stage, cfg.pnet, cfg.rnet, cfg.device)
            else:
                propose = self.proposer_factory(cfg)
            s = mine_samples(data, propose, self.size, rng, cfg.landmarks_per_face, min_face=12.0,
                             progress=progress)
        if len(s) == 0:
            raise ValueError("no training samples could be generated (no faces large enough?)")
        s.save(self.samples_path)
        self.log(f"samples: {s.counts()} in {time.monotonic() - t0:.0f}s -> {self.samples_path}")
        return s

    # ---------------------------------------------------------------- loop

    def save(self) -> None:
        """Checkpoint (model, optimizer, progress) and RUN_DIR/<stage>.pth."""
        self.book.save(self.net, self.optimizer)

    def run(self) -> TrainState:
        """Generate or load the samples, train until the schedule ends or a bound is hit,
        then save, plot, write mtcnn.pth, evaluate (if ``eval_data``) and write summary.json."""
        cfg, book = self.cfg, self.book
        book.write_config()
        samples = self.samples()
        train, val = split_validation(samples, cfg.val_fraction, np.random.default_rng(cfg.seed + 1))
        bs = min(cfg.batch_size, len(train))
        iters_per_epoch = max(1, len(train) // bs)
        total = cfg.epochs * iters_per_epoch
        if cfg.max_iters is not None:
            total = min(total, cfg.max_iters)
        decay = decay_iterations(cfg.resolved_decay_epochs(), iters_per_epoch)
        st = self.state
        if cfg.resume:
            book.resume(self.net, self.optimizer)
        self.log(f"training {cfg.stage} on {len(train)} samples {train.counts()} (val {len(val)}), batch {bs}, "
                 f"{iters_per_epoch} it/epoch, {total} iterations, device {self.device}")
        book.start_clock()
        try:
            while st.iteration < total and not st.stopped_by:
                st.epoch = st.iteration // iters_per_epoch
                self.net.train()
                perm = np.random.default_rng([cfg.seed, st.epoch]).permutation(len(train))
                first = st.iteration % iters_per_epoch
                for k in range(first, iters_per_epoch):
                    if st.iteration >= total:
                        break
                    lr = step_decay_lr(st.iteration, cfg.lr, decay, 0.1)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    idx = np.sort(perm[k * bs : (k + 1) * bs])
                    m = self.step(train.select(idx), np.random.default_rng([cfg.seed, st.iteration]))
                    row = book.step_done(m, lr, total)
                    if row is not None:
                        avg = row.losses
                        self.log(f"it {st.iteration}/{total} ep {st.epoch} lr {lr:.1e} loss {avg['total']:.4f} "
                                 f"(cls {avg['cls']:.4f} box {avg['box']:.4f} lm {avg['landmark']:.4f})")
                    if book.out_of_time():
                        break
                if st.iteration % iters_per_epoch == 0 or st.stopped_by or st.iteration >= total:
                    st.val = evaluate_samples(self.net, val, self.device)
                    book.logger.log("val", st.iteration, {"epoch": st.epoch, **st.val})
                    self.save()
            book.finish(cfg.epochs * iters_per_epoch)
            self.save()
            book.plot(["total", "cls", "box", "landmark"], title=f"MTCNN {cfg.stage}")
            self.write_cascade()
            evaluation = self.evaluate() if cfg.eval_data else None
            book.write_summary(stage=cfg.stage, samples=samples.counts(), val=st.val, eval=evaluation)
            self.log(f"done: {st.iteration} iterations in {st.elapsed_s / 60:.1f} min; val {st.val}; "
                     f"weights {self.weights_path}")
        finally:
            book.close()
        return st

    def stage_paths(self) -> dict[str, str | None]:
        paths: dict[str, str | None] = {"pnet": self.cfg.pnet, "rnet": self.cfg.rnet, "onet": None}
        paths[self.cfg.stage] = str(self.weights_path)
        return paths

    def write_cascade(self) -> None:
        from facesieve.training.mtcnn_mining import write_cascade

        write_cascade(self.run_dir / "mtcnn.pth", **self.stage_paths())

    def evaluate(self) -> dict[str, Any]:
        """P-/R-Net: proposal recall on cfg.eval_data; O-Net: WIDER FACE AP of the cascade."""
        from facesieve.data.labels import load_box_dataset
        from facesieve.training.mtcnn_mining import build_cascade, cascade_proposals, proposal_recall

        cfg = self.cfg
        if cfg.stage == "onet":
            from facesieve.api import load
            from facesieve.evaluation.widerface import evaluate_detector

            det = load("mtcnn", weights=str(self.run_dir / "mtcnn.pth"), device=cfg.device)
            res = evaluate_detector(det, cfg.eval_data, out_dir=self.run_dir / "eval", limit=cfg.eval_limit,
                                    progress=False)
            out: dict[str, Any] = {s: float(res[s]) for s in ("easy", "medium", "hard") if s in res}
        else:
            data = load_box_dataset(cfg.eval_data)
            if cfg.eval_limit is not None:
                data.items = data.items[: cfg.eval_limit]
            paths = self.stage_paths()
            det = build_cascade(paths["pnet"], paths["rnet"], device=cfg.device)
            upto = "rnet" if cfg.stage == "pnet" else "onet"
            r = proposal_recall(data, lambda im: cascade_proposals(det, im, upto)[0], progress=_progress("recall"))
            out = {"recall": r.recall, "faces": r.faces, "found": r.found,
                   "proposals_per_image": r.proposals_per_image, "iou": r.iou, "min_size": r.min_size}
        self.book.logger.log("eval", self.state.iteration, {k: v for k, v in out.items() if isinstance(v, float)})
        self.log(f"eval: {out}")
        return out

    def step(self, batch: SampleSet, rng: np.random.Generator) -> dict[str, float]:
        images, boxes, lms = batch.images, batch.boxes, batch.landmarks
        flip = rng.random(len(batch)) < 0.5
        if flip.any():
            mi, mb, ml = mirror_samples(images[flip], boxes[flip], lms[flip])
            images, boxes, lms = images.copy(), boxes.copy(), lms.copy()
            images[flip], boxes[flip], lms[flip] = mi, mb, ml
        x = to_input(images, self.device)
        score, box, lm = stage_forward(self.net, x)
        out = mtcnn_loss(
            score, box, lm,
            torch.from_numpy(batch.labels.astype(np.int64)).to(self.device),
            torch.from_numpy(boxes).to(self.device),
            torch.from_numpy(landmarks_to_net(lms)).to(self.device),
            self.weights, self.cfg.keep_ratio,
        )
        self.optimizer.zero_grad(set_to_none=True)
        out["total"].backward()
        self.optimizer.step()
        if not math.isfinite(out["total"].item()):
            raise FloatingPointError(f"loss is {out['total'].item()} at iteration {self.state.iteration}")
        return {k: float(v.item()) for k, v in out.items()}


def _progress(desc: str) -> Callable[[Any], Any]:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return lambda x: x
    return lambda x: tqdm(x, desc=desc, unit="img", file=sys.stderr, mininterval=10, disable=None)  # TTY only


def train_mtcnn(cfg: MTCNNTrainConfig) -> TrainState:
    """Generate (or load) the stage's samples and train it; see the module docstring."""
    return MTCNNTrainer(cfg).run()

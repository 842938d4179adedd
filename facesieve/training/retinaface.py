"""RetinaFace training (biubug6/insightface recipe) on any face dataset facesieve reads.

Pieces: ``RetinaFaceTrainSet`` (augmentation -> network input), ``TargetBuilder``
(``training.targets``: anchor matching + BoxCoder encoding), ``multibox_loss``, ``lr_at``
(``training.run``: warm-up + step decay), weight initialisation (ImageNet backbone or a
detector checkpoint; BatchNorm unfolding in ``nets.batchnorm``), and ``RetinaFaceTrainer``
tying them together with checkpoints/resume, CSV/TensorBoard logs and PNG curves
(``training.run.RunBook``), optional AMP (CUDA) and DDP (torchrun).

Run directory layout::

    RUN_DIR/config.json        the RetinaFaceTrainConfig used
    RUN_DIR/train.csv          per-log-interval losses, lr, speed
    RUN_DIR/eval.csv           WIDER FACE AP of evaluations (if --eval-data)
    RUN_DIR/loss.png           loss curves
    RUN_DIR/weights.pth        plain state dict (our layout, BatchNorm kept): facesieve.load(..., weights=...)
    RUN_DIR/checkpoints/last.pt  full training state for --resume
    RUN_DIR/summary.json       iterations, wall time, last losses, eval APs
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from facesieve.data.labels import BoxDataset, load_box_dataset
from facesieve.data.transforms import RetinaFaceAugment, Sample, to_chw_tensor_array
from facesieve.io.images import ImageError, load_image
from facesieve.nets.batchnorm import set_bn_eval, shift_input_mean, unfold_state
from facesieve.nets.constants import BGR_MEAN  # network input: BGR pixels minus this mean
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.anchors import AnchorGenerator
from facesieve.ops.box_coder import BoxCoder
from facesieve.training.checkpoint import cleanup_distributed, init_distributed, seed_everything, TrainState
from facesieve.training.losses import multibox_loss
from facesieve.training.run import RunBook, decay_iterations, lr_at, say
from facesieve.training.targets import TargetBuilder


DEFAULT_IMAGE_SIZE = {"mobilenet0.25": 640, "resnet50": 840}
MODEL_NAMES = {"mobilenet0.25": "retinaface-mnet025", "resnet50": "retinaface-r50"}
# Reference schedules (biubug6 cfg_mnet / cfg_re50): batch, epochs, decay epochs.
REFERENCE_SCHEDULE = {"mobilenet0.25": (32, 250, (190, 220)), "resnet50": (24, 100, (70, 90))}


# --------------------------------------------------------------------------- config


@dataclass
class RetinaFaceTrainConfig:
    """Everything a run needs; saved as RUN_DIR/config.json.

    data: label.txt / *.jsonl / wider_face_*_bbx_gt.txt or a folder holding one.
    images: image root (default: images/ beside the label file).
    pretrained: ImageNet backbone checkpoint (e.g. mobilenetV1X0.25_pretrain.tar), or None.
    init: detector weights to start from: a checkpoint path, or a model name
        ("retinaface-mnet025") for its default weights. Overrides ``pretrained``.
    epochs / decay_epochs: step schedule; decay_epochs default to the reference's
        fractions (190/250 and 220/250 of the epochs). lr is multiplied by gamma at each.
    warmup_epochs: linear warm-up from 1e-6 to lr over this many epochs (0: none).
    max_iters / max_minutes: stop early (a checkpoint is written); None: no bound.
    freeze_bn: keep BatchNorm in eval mode (fine-tuning; forced when ``init`` has folded BN).
    """

    data: str
    out: str
    backbone: str = "mobilenet0.25"
    images: str | None = None
    image_size: int | None = None
    batch_size: int = 32
    epochs: int = 250
    decay_epochs: tuple[float, ...] | None = None
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gamma: float = 0.1
    warmup_epochs: float = 1.0
    pretrained: str | None = None
    init: str | None = None
    resume: bool = False
    freeze_bn: bool = False
    amp: bool = False
    device: str = "cpu"
    workers: int = 2
    seed: int = 0
    max_iters: int | None = None
    max_minutes: float | None = None
    log_every: int = 10
    checkpoint_every: int = 200
    match_iou: float = 0.35
    neg_pos_ratio: int = 7
    loc_weight: float = 2.0
    keep_invalid: bool = False
    tensorboard: bool = False
    eval_data: str | None = None
    eval_limit: int | None = None
    threads: int | None = None

    def resolved_image_size(self) -> int:
        return int(self.image_size or DEFAULT_IMAGE_SIZE[self.backbone])

    def resolved_decay_epochs(self) -> tuple[float, ...]:
        if self.decay_epochs is not None:
            return tuple(float(e) for e in self.decay_epochs)
        _, ref_epochs, ref_decay = REFERENCE_SCHEDULE[self.backbone]
        return tuple(self.epochs * d / ref_epochs for d in ref_decay)


# --------------------------------------------------------------------------- data


class RetinaFaceTrainSet(torch.utils.data.Dataset):
    """Augmented training images of a BoxDataset.

    Item: (input (3, S, S) float32 tensor, targets dict with "boxes" (N, 4) xyxy and
    "landmarks" (N, 10), both normalised to [0, 1] of S, and "has_landmarks" (N,) bool).
    Each (epoch, index) gets its own RNG stream, so runs are reproducible with workers.
    """

    def __init__(self, dataset: BoxDataset, augment: RetinaFaceAugment, seed: int = 0,
                 mean: Sequence[float] = BGR_MEAN) -> None:
        self.dataset = dataset
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.mean = tuple(mean)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.dataset.items[index]
        try:
            image = load_image(self.dataset.image_path(index))
        except ImageError as e:
            raise ImageError(e.path, f"{e.reason} (training image #{index})") from None
        rng = np.random.default_rng([self.seed, self.epoch, index])
        s = self.augment(Sample(image, item.boxes, item.landmarks, item.has_landmarks), rng)
        x = torch.from_numpy(to_chw_tensor_array(s.image, self.mean, channel_order="BGR"))
        return x, {
            "boxes": torch.from_numpy(s.boxes.astype(np.float32)),
            "landmarks": torch.from_numpy(s.landmarks.reshape(-1, 10).astype(np.float32)),
            "has_landmarks": torch.from_numpy(s.has_landmarks.copy()),
        }


def collate(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


# --------------------------------------------------------------------------- weights


def load_backbone(net: RetinaFace, path: str | os.PathLike) -> list[str]:
    """Load ImageNet-pretrained backbone weights into ``net.body``.

    Accepts biubug6's ``mobilenetV1X0.25_pretrain.tar`` (dict with "state_dict", keys
    ``module.stage1.0.0.weight``...) and torchvision-style ResNet-50 state dicts (keys
    ``layer1.0.conv1.weight``...). Classifier keys (fc.*) are skipped. Returns the skipped
    keys; raises ValueError when a backbone parameter is missing or mis-shaped.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    state = {k.removeprefix("module.").removeprefix("body."): v for k, v in obj.items()}
    own = net.body.state_dict()
    skipped = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: backbone checkpoint lacks {len(missing)} parameters, e.g. {missing[:3]}")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {bad[:3]}")
    net.body.load_state_dict({k: state[k] for k in own}, strict=True)
    return skipped


@dataclass
class InitWeights:
    """Starting weights of a fine-tune: state dict (our names), whether its BatchNorms are
    folded away, and the BGR mean its network input expects."""

    state: dict[str, torch.Tensor]
    folded: bool
    mean_bgr: tuple[float, float, float]


def detector_state(init: str, backbone: str) -> InitWeights:
    """Resolve ``init``: a checkpoint path or URL (biubug6 or ours), a registry weights name,
    or the model name (its default weights), through the RetinaFace detector's loader."""
    from facesieve.weights.resolve import load_weights
    from facesieve.weights import retinaface as rw

    model_name = MODEL_NAMES[backbone]
    entry, state = load_weights(model_name, None if init == model_name else init)
    got = rw.checkpoint_backbone(state)
    if got != backbone:
        raise ValueError(f"--init {init} is a {got} RetinaFace, but --backbone is {backbone}")
    pp = entry.preprocessing
    if pp.channel_order != "BGR" or any(v != 1.0 for v in pp.std):
        raise ValueError(f"--init {init}: weights expect {pp}, training feeds BGR minus a mean")
    folded = not any(k.endswith(".running_mean") for k in state)
    return InitWeights(state, folded, tuple(float(v) for v in pp.mean))  # type: ignore[arg-type]


def init_network(cfg: RetinaFaceTrainConfig, log: Callable[[str], None] = print) -> tuple[RetinaFace, bool]:
    """Build the network and load its starting weights; returns (net, bn_must_stay_frozen)."""
    net = RetinaFace(cfg.backbone)
    if cfg.init:
        init = detector_state(cfg.init, cfg.backbone)
        state = init.state
        if init.folded:
            state = unfold_state(net, state)
            log(f"init: {cfg.init} has folded BatchNorm; training with frozen BN statistics")
        if init.mean_bgr != BGR_MEAN:
            state = shift_input_mean(net, state, init.mean_bgr, BGR_MEAN)
            log(f"init: input mean {init.mean_bgr} -> {BGR_MEAN} folded into the first BatchNorm")
        net.load_state_dict(state, strict=True)
        log(f"init: detector weights from {cfg.init}")
        return net, init.folded
    if cfg.pretrained:
        skipped = load_backbone(net, cfg.pretrained)
        log(f"init: ImageNet backbone from {cfg.pretrained} (skipped {len(skipped)} classifier keys)")
    else:
        log("init: random (no --pretrained backbone and no --init)")
    return net, False


# --------------------------------------------------------------------------- trainer


class RetinaFaceTrainer:
    """One training run. ``run()`` trains until the schedule ends or a bound is hit."""

    def __init__(self, cfg: RetinaFaceTrainConfig) -> None:
        if cfg.backbone not in DEFAULT_IMAGE_SIZE:
            raise ValueError(f"unknown backbone {cfg.backbone!r}; choose {', '.join(DEFAULT_IMAGE_SIZE)}")
        self.cfg = cfg
        self.dist, self.device = init_distributed(cfg.device)
        self.is_main = self.dist.is_main
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        seed_everything(cfg.seed + self.dist.rank)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        if cfg.amp and not self.use_amp:
            self.log("note: --amp needs CUDA; training in float32")
        self.image_size = cfg.resolved_image_size()

        data = load_box_dataset(cfg.data, cfg.images, keep_invalid=cfg.keep_invalid)
        data.items = [it for it in data.items if len(it)]  # images without faces teach nothing here
        if not data.items:
            raise ValueError(f"{cfg.data}: no image with a face to train on")
        self.data = data
        augment = RetinaFaceAugment(self.image_size, fill_rgb=tuple(reversed(BGR_MEAN)))  # type: ignore[arg-type]
        self.train_set = RetinaFaceTrainSet(data, augment, seed=cfg.seed)
        per_rank = max(1, cfg.batch_size // self.dist.world_size)
        if per_rank > len(data):
            per_rank = len(data)
            self.log(f"note: batch size reduced to the dataset size ({per_rank})")
        inner = None
        if self.dist.distributed:
            inner = torch.utils.data.distributed.DistributedSampler(
                self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        self.per_rank = per_rank
        self.sampler = EpochOrder(len(self.train_set), cfg.seed, inner)
        self.loader = torch.utils.data.DataLoader(
            self.train_set, batch_size=per_rank, shuffle=False, sampler=self.sampler,
            num_workers=cfg.workers, collate_fn=collate, drop_last=True,
            pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.iters_per_epoch = len(self.loader)

        net, frozen = init_network(cfg, self.log)
        self.freeze_bn = cfg.freeze_bn or frozen
        self.net = net.to(self.device)
        self.model: nn.Module = self.net
        if self.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        anchors = AnchorGenerator()(self.image_size, self.image_size)
        self.targets = TargetBuilder(anchors, self.image_size, BoxCoder(), cfg.match_iou, self.device)
        self.total_iters = cfg.epochs * self.iters_per_epoch
        if cfg.max_iters is not None:
            self.total_iters = min(self.total_iters, int(cfg.max_iters))
        self.decay_iters = decay_iterations(cfg.resolved_decay_epochs(), self.iters_per_epoch)
        self.book = RunBook(cfg, "weights.pth", is_main=self.is_main, log_speed=True)
        self.state = self.book.state

    # ---------------------------------------------------------------- helpers

    def log(self, msg: str) -> None:
        """A progress line on stderr (main process only)."""
        say(msg, self.is_main)

    @property
    def weights_path(self) -> Path:
        """RUN_DIR/weights.pth, the trained network's plain state dict."""
        return self.book.weights_path

    def save(self) -> None:
        """Checkpoint (model, optimizer, AMP scaler, progress) and weights.pth."""
        self.book.save(self.net, self.optimizer, scaler=self.scaler)

    def train_step(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]], lr: float) -> dict[str, float]:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        images = images.to(self.device, non_blocking=True)
        tgt = self.targets(targets)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loc, conf, lms = self.model(images)
        out = multibox_loss(loc, conf, lms, tgt.loc, tgt.landmarks, tgt.positive, tgt.landmark_positive,
                            self.cfg.neg_pos_ratio, self.cfg.loc_weight)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": out.total.item(), "loc": out.loc.item(), "conf": out.conf.item(),
                "landmark": out.landmark.item(), "num_pos": float(out.num_pos),
                "num_landmark_pos": float(out.num_landmark_pos)}

    # ---------------------------------------------------------------- main loop

    def run(self) -> TrainState:
        """Train until the schedule ends or a bound (max_iters / max_minutes) is hit, then save,
        plot, evaluate (if ``eval_data``) and write summary.json; returns the final progress."""
        cfg, book = self.cfg, self.book
        book.write_config()
        if cfg.resume:
            book.resume(self.net, self.optimizer, scaler=self.scaler)
        self.log(
            f"training RetinaFace-{cfg.backbone} on {len(self.data)} images ({self.data.num_faces} faces, "
            f"{self.data.num_landmark_faces} with landmarks) at {self.image_size}px, batch {cfg.batch_size}, "
            f"{self.iters_per_epoch} it/epoch, {self.total_iters} iterations, decay at {self.decay_iters}, "
            f"device {self.device}{' AMP' if self.use_amp else ''}{f' x{self.dist.world_size}' if self.dist.distributed else ''}"
        )
        book.start_clock()
        st = self.state
        try:
            while st.iteration < self.total_iters and not st.stopped_by:
                st.epoch = st.iteration // self.iters_per_epoch
                self.train_set.set_epoch(st.epoch)
                self.sampler.set_epoch(st.epoch)
                # a run resumed mid-epoch continues with the batches it had not done yet
                self.sampler.skip = (st.iteration % self.iters_per_epoch) * self.per_rank
                self.model.train()
                if self.freeze_bn:
                    set_bn_eval(self.model)
                left_in_epoch = self.iters_per_epoch - st.iteration % self.iters_per_epoch
                for k, (images, targets) in enumerate(self.loader):
                    if k >= left_in_epoch or st.iteration >= self.total_iters:
                        break
                    lr = lr_at(st.iteration, cfg.lr, self.iters_per_epoch, cfg.warmup_epochs,
                               self.decay_iters, cfg.gamma)
                    m = self.train_step(images, targets, lr)
                    if not math.isfinite(m["loss"]):
                        raise FloatingPointError(f"loss is {m['loss']} at iteration {st.iteration}; lower --lr?")
                    row = book.step_done(m, lr, self.total_iters)
                    if row is not None:
                        avg = row.losses
                        self.log(f"it {st.iteration}/{self.total_iters} ep {st.epoch} lr {lr:.2e} "
                                 f"loss {avg['loss']:.3f} (loc {avg['loc']:.3f} conf {avg['conf']:.3f} "
                                 f"lm {avg['landmark']:.3f}) {row.sec_per_iter:.2f}s/it")
                    if st.iteration % cfg.checkpoint_every == 0:
                        self.save()
                        self.plot()
                    if book.out_of_time():
                        break
            book.finish(cfg.epochs * self.iters_per_epoch)
            self.save()
            self.plot()
            self.log(f"done: {st.iteration} iterations in {st.elapsed_s / 60:.1f} min ({st.stopped_by}); "
                     f"weights {self.weights_path}")
            result = self.evaluate() if cfg.eval_data and self.is_main else None
            book.write_summary(epochs_done=st.iteration / self.iters_per_epoch, eval=result,
                               device=str(self.device), world_size=self.dist.world_size)
        finally:
            book.close()
            cleanup_distributed()
        return st

    def plot(self) -> None:
        """RUN_DIR/loss.png from train.csv."""
        self.book.plot(["loss", "loc", "conf", "landmark", "lr"], title=f"RetinaFace-{self.cfg.backbone}")

    def evaluate(self) -> dict[str, Any] | None:
        """WIDER FACE AP of the saved weights on cfg.eval_data (logged to eval.csv)."""
        from facesieve.api import load
        from facesieve.evaluation.widerface import evaluate_detector

        det = load(MODEL_NAMES[self.cfg.backbone], weights=str(self.weights_path), device=str(self.device))
        res = evaluate_detector(det, self.cfg.eval_data, out_dir=self.book.dir / "eval", limit=self.cfg.eval_limit,
                                progress=False)
        aps = {s: float(res[s]) for s in ("easy", "medium", "hard") if s in res}
        self.book.logger.log("eval", self.state.iteration, aps)
        self.log("eval: " + " ".join(f"{k} {v:.4f}" for k, v in aps.items()))
        return aps


class EpochOrder(torch.utils.data.Sampler):
    """Sample order of one epoch that depends only on (seed, epoch), not on what ran before.

    A run resumed from a checkpoint therefore sees the batches an uninterrupted run would:
    ``set_epoch(e)`` picks the epoch, ``skip`` leaves out its first samples (the batches done
    before a mid-epoch stop). inner: a DistributedSampler (its own per-epoch order) or None
    (a permutation of range(n) seeded by [seed, epoch]).
    """

    def __init__(self, n: int, seed: int, inner: Any = None) -> None:
        self.n, self.seed, self.inner = int(n), int(seed), inner
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.inner is not None:
            self.inner.set_epoch(epoch)

    def _order(self) -> list[int]:
        if self.inner is not None:
            return list(self.inner)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()

    def __iter__(self):
        return iter(self._order()[self.skip :])

    def __len__(self) -> int:
        return max(0, (len(self.inner) if self.inner is not None else self.n) - self.skip)


def train_retinaface(cfg: RetinaFaceTrainConfig) -> TrainState:
    """Train RetinaFace as configured; see the module docstring for what is written."""
    return RetinaFaceTrainer(cfg).run()

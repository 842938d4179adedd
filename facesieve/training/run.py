"""Run scaffolding shared by the trainers (``training.retinaface``, ``training.mtcnn``).

``RunBook`` keeps one run's books: its directory, console and CSV logs, checkpoints and
resume, progress (``TrainState``), the loss window averaged into each log row, the
wall-clock bound, and summary.json. ``lr_at`` / ``step_decay_lr`` / ``decay_iterations`` are
the learning-rate schedule (optional linear warm-up, then step decay).

Files every run directory gets::

    RUN_DIR/config.json           the trainer's config dataclass
    RUN_DIR/<kind>.csv            metric rows: train.csv always, val.csv / eval.csv per trainer
    RUN_DIR/loss.png              curves of train.csv
    RUN_DIR/<weights file>        plain state dict of the network (name chosen by the trainer)
    RUN_DIR/checkpoints/last.pt   model, optimizer (+ extra states), progress, RNG states, config
    RUN_DIR/summary.json          iterations, wall minutes, why it stopped, last losses, weights,
                                  then the trainer's own fields
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from facesieve.io.atomic import atomic_write_text
from facesieve.training.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    TrainState,
)
from facesieve.training.runlog import MetricsLogger, plot_curves


def say(msg: str, enabled: bool = True) -> None:
    """Print a progress line to stderr (flushed) when ``enabled`` (the main process)."""
    if enabled:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- schedule


def decay_iterations(decay_epochs: Sequence[float], iters_per_epoch: int) -> list[int]:
    """Iterations (0-based) at which the learning rate steps down: each epoch (may be
    fractional) times ``iters_per_epoch``, rounded to the nearest iteration."""
    return [int(round(e * iters_per_epoch)) for e in decay_epochs]


def step_decay_lr(iteration: int, base_lr: float, decay_iters: Sequence[int], gamma: float) -> float:
    """``base_lr * gamma ** k``, k = how many of ``decay_iters`` ``iteration`` has reached."""
    k = sum(1 for d in decay_iters if iteration >= d)
    return base_lr * gamma**k


def lr_at(iteration: int, base_lr: float, iters_per_epoch: int, warmup_epochs: float,
          decay_iters: Sequence[int], gamma: float) -> float:
    """Learning rate at ``iteration`` (0-based): linear warm-up from 1e-6 over
    ``warmup_epochs * iters_per_epoch`` iterations, then ``base_lr * gamma ** k`` where k
    is the number of ``decay_iters`` already reached."""
    warm = warmup_epochs * iters_per_epoch
    if warm > 0 and iteration < warm:
        return 1e-6 + (base_lr - 1e-6) * iteration / warm
    return step_decay_lr(iteration, base_lr, decay_iters, gamma)


# --------------------------------------------------------------------------- run books


class RunConfig(Protocol):
    """The config fields ``RunBook`` reads (a dataclass: it is saved with ``asdict``)."""

    out: str
    resume: bool
    log_every: int
    max_minutes: float | None
    tensorboard: bool


class Stateful(Protocol):
    """Anything checkpointed through ``state_dict`` / ``load_state_dict`` (optimizer, scaler)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class LoggedRow(NamedTuple):
    """What ``RunBook.step_done`` wrote to train.csv: the window's mean metrics and the mean
    wall seconds per iteration over the window."""

    losses: dict[str, float]
    sec_per_iter: float


class RunBook:
    """One run's books: directory, logs, checkpoints / resume, progress and summary.

    cfg: the trainer's config dataclass (``RunConfig`` fields; ``out`` is the run directory).
    weights_name: file name of the plain state dict in the run directory.
    is_main: False on the non-zero ranks of a distributed run: they write nothing and print
        nothing (they still read a checkpoint on resume).
    log_speed: add a ``sec_per_iter`` column to train.csv.

    Creating a RunBook creates the run directory (on the main process).
    """

    def __init__(self, cfg: RunConfig, weights_name: str, *, is_main: bool = True, log_speed: bool = False) -> None:
        self.cfg = cfg
        self.dir = Path(cfg.out)
        self.is_main = is_main
        self.log_speed = log_speed
        self.weights_path = self.dir / weights_name
        self.checkpoint_path = self.dir / "checkpoints" / "last.pt"
        self.logger = MetricsLogger(self.dir, tensorboard=cfg.tensorboard, enabled=is_main)
        self.state = TrainState()
        self._start = time.monotonic()
        self._window: list[dict[str, float]] = []
        self._t_window = self._start

    def log(self, msg: str) -> None:
        """A progress line on stderr (main process only)."""
        say(msg, self.is_main)

    def write_config(self) -> None:
        """RUN_DIR/config.json: the config as JSON (atomic; main process only)."""
        if self.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.dir / "config.json", json.dumps(asdict(self.cfg), indent=2) + "\n")

    # ---------------------------------------------------------------- checkpoints

    def save(self, net: torch.nn.Module, optimizer: Stateful, **extra: Stateful) -> None:
        """Write checkpoints/last.pt (net, optimizer, each ``extra`` under its keyword, progress,
        RNG states, config) and the plain weights file, each atomically; main process only."""
        if not self.is_main:
            return
        st = self.state
        save_checkpoint(self.checkpoint_path, {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(),
            **{k: v.state_dict() for k, v in extra.items()},
            "iteration": st.iteration, "epoch": st.epoch, "elapsed_s": st.elapsed_s,
            "rng": rng_state(), "config": json.dumps(asdict(self.cfg)),
        })
        save_checkpoint(self.weights_path, net.state_dict())

    def resume(self, net: torch.nn.Module, optimizer: Stateful, **extra: Stateful) -> bool:
        """Restore net, optimizer, ``extra`` states, progress and RNG states from
        checkpoints/last.pt, and drop log rows after its iteration. Returns False (and says
        so) when there is no checkpoint: the run starts fresh. Raises KeyError / RuntimeError
        for a checkpoint of another trainer or network."""
        if not self.checkpoint_path.is_file():
            self.log(f"resume: no checkpoint at {self.checkpoint_path}; starting fresh")
            return False
        ck = load_checkpoint(self.checkpoint_path)
        net.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        for key, obj in extra.items():
            obj.load_state_dict(ck[key])
        st = self.state
        st.iteration, st.epoch, st.elapsed_s = int(ck["iteration"]), int(ck["epoch"]), float(ck["elapsed_s"])
        set_rng_state(ck["rng"])
        self.logger.truncate_after(st.iteration)
        self.log(f"resume: iteration {st.iteration} (epoch {st.epoch}) from {self.checkpoint_path}")
        return True

    # ---------------------------------------------------------------- progress

    def start_clock(self) -> None:
        """Start timing the loop; ``state.elapsed_s`` continues from a resumed checkpoint's."""
        self._start = time.monotonic() - self.state.elapsed_s
        self._window = []
        self._t_window = time.monotonic()

    def step_done(self, metrics: Mapping[str, float], lr: float, total: int) -> LoggedRow | None:
        """Count one finished iteration with its ``metrics``.

        Every ``cfg.log_every`` iterations, and at iteration ``total``, the metrics since the
        last row are averaged into a train.csv row (epoch, lr, means, [sec_per_iter],
        elapsed_s), kept as ``state.last`` and returned; otherwise returns None.
        """
        st = self.state
        st.iteration += 1
        st.elapsed_s = time.monotonic() - self._start
        self._window.append(dict(metrics))
        if st.iteration % self.cfg.log_every != 0 and st.iteration != total:
            return None
        window = self._window
        avg = {key: float(np.mean([w[key] for w in window])) for key in window[0]}
        sec = (time.monotonic() - self._t_window) / len(window)
        row: dict[str, Any] = {"epoch": st.epoch, "lr": lr, **avg}
        if self.log_speed:
            row["sec_per_iter"] = sec
        row["elapsed_s"] = st.elapsed_s
        self.logger.log("train", st.iteration, row)
        st.last = avg
        self._window, self._t_window = [], time.monotonic()
        return LoggedRow(avg, sec)

    def out_of_time(self) -> bool:
        """True (and ``state.stopped_by = "max_minutes"``) once the run has trained longer
        than ``cfg.max_minutes``."""
        limit = self.cfg.max_minutes
        if limit is not None and self.state.elapsed_s > limit * 60:
            self.state.stopped_by = "max_minutes"
            return True
        return False

    def finish(self, schedule_iters: int) -> None:
        """Name why the loop ended unless a bound already did: "schedule" when all
        ``schedule_iters`` iterations ran, else "max_iters"."""
        st = self.state
        if not st.stopped_by:
            st.stopped_by = "max_iters" if st.iteration < schedule_iters else "schedule"

    # ---------------------------------------------------------------- outputs

    def plot(self, keys: Sequence[str], title: str) -> None:
        """RUN_DIR/loss.png: ``keys`` of train.csv against iteration (main process only)."""
        if self.is_main:
            plot_curves(self.logger.path("train"), self.dir / "loss.png", keys, title=title)

    def write_summary(self, **fields: Any) -> None:
        """RUN_DIR/summary.json (atomic; main process only): iterations, wall_minutes,
        stopped_by, last_losses, weights, then ``fields`` (JSON-serialisable)."""
        if not self.is_main:
            return
        st = self.state
        summary = {"iterations": st.iteration, "wall_minutes": round(st.elapsed_s / 60, 2),
                   "stopped_by": st.stopped_by, "last_losses": st.last, "weights": str(self.weights_path),
                   **fields}
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    def close(self) -> None:
        """Close the logs (TensorBoard writer)."""
        self.logger.close()

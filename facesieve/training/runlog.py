"""Training logs: CSV always (one file per kind of row, e.g. train.csv / eval.csv),
TensorBoard when asked for and installed, and PNG loss curves drawn from the CSV."""
from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from facesieve.io.atomic import atomic_open


class MetricsLogger:
    """Append metric rows to ``run_dir/<kind>.csv``.

    The first column is ``step`` (iteration). A row with keys not yet in the header
    rewrites the file with the wider header (older rows get empty cells). Files are
    flushed after every row so a killed run keeps its curves.
    """

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._headers: dict[str, list[str]] = {}
        self._tb = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except Exception as e:  # tensorboard is optional
                warnings.warn(f"TensorBoard logging disabled ({e}); CSV logs are still written")

    def path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}.csv"

    def log(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        path = self.path(kind)
        header = self._headers.get(kind)
        if header is None and path.exists():
            header = _read_header(path)
        # The whole file is rewritten atomically (temp + rename) for each row: a killed run
        # leaves the previous complete file, never a half-written row.
        if header is None:
            header, rows = list(row), []
        else:
            rows = read_csv(path) if path.exists() else []
            if any(k not in header for k in row):
                header = header + [k for k in row if k not in header]
        self._headers[kind] = header
        with atomic_open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(rows)
            w.writerow(row)
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
            self._tb.flush()

    def truncate_after(self, step: int) -> None:
        """Drop rows with step > ``step`` from every CSV (used when resuming a checkpoint)."""
        if not self.enabled:
            return
        for path in self.run_dir.glob("*.csv"):
            header = _read_header(path)
            if not header:
                continue
            rows = [r for r in read_csv(path) if _to_float(r.get("step")) <= step]
            with atomic_open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=header)
                w.writeheader()
                w.writerows(rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _plain(v: object) -> object:
    if hasattr(v, "item"):
        v = v.item()  # type: ignore[union-attr]
    if isinstance(v, float):
        return round(v, 6)
    return v


def _read_header(path: Path) -> list[str] | None:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), None)


def _to_float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (NaNs skipped)."""
    out: list[float] = []
    buf: list[float] = []
    for v in values:
        buf.append(v)
        if len(buf) > window:
            buf.pop(0)
        good = [b for b in buf if not math.isnan(b)]
        out.append(sum(good) / len(good) if good else math.nan)
    return out


def plot_curves(
    csv_path: str | os.PathLike,
    png_path: str | os.PathLike,
    keys: Sequence[str],
    title: str = "",
    smooth_window: int = 20,
) -> bool:
    """Plot ``keys`` of a metrics CSV against step (raw, faint, and a trailing moving average
    over min(smooth_window, rows / 10) rows) into one PNG with a panel per key. Returns False
    when the CSV has no rows yet."""
    path = Path(csv_path)
    if not path.exists():
        return False
    rows = read_csv(path)
    keys = [k for k in keys if rows and k in rows[0]]
    if not rows or not keys:
        return False
    from facesieve.optional import require

    matplotlib = require("matplotlib", "training plots", "train")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [_to_float(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        vals = [_to_float(r.get(key)) for r in rows]
        ax.plot(steps, vals, color="tab:blue", alpha=0.35, linewidth=0.8)
        window = min(smooth_window, max(1, len(vals) // 10))
        if window > 1:
            ax.plot(steps, smooth(vals, window), color="tab:blue", linewidth=1.5)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True

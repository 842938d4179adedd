"""argparse value types shared by the commands: each raises a message naming the bad value."""
from __future__ import annotations

import argparse

from facesieve.backends import BACKENDS


def _number(text: str, kind: type) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not {'an integer' if kind is int else 'a number'}: {text!r}"
        ) from None


def positive_int(text: str) -> int:
    v = int(_number(text, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def positive_float(text: str) -> float:
    v = float(_number(text, float))
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def unit_float(text: str) -> float:
    v = float(_number(text, float))
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {v}")
    return v


# ---------------------------------------------------------------------- shared options
# One spelling per meaning in every command: --backend (default auto), --threads, --device,
# --quiet/-q (no progress bar, no summary), --no-progress (no progress bar). Progress bars are
# drawn only when stderr is a terminal.

BACKEND_CHOICES = ("auto", *BACKENDS)


def add_backend_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, threads: bool = True,
                     auto: str = "the model's fastest installed one") -> None:
    """--backend (default auto) and --threads, the same in every command that runs a detector."""
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help=f"inference backend; auto: {auto}, torch when no engine is installed; all give the "
                   "same faces (default: %(default)s; see docs/performance.md)")
    if threads:
        p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="onnxruntime/openvino threads per call (default: all available cores)")


def add_quiet_args(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "summary") -> None:
    """--quiet/-q (no progress bar, no {what}) and --no-progress (no progress bar only)."""
    p.add_argument("--quiet", "-q", action="store_true",
                   help=f"no progress bar or {what}; errors still go to stderr")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn only when stderr is a terminal)")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command may draw progress bars: not --quiet / --no-progress. (tqdm then still
    draws only on a terminal: pass ``disable=None if show_progress(args) else True``.)"""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))

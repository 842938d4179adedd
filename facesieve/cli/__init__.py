"""Command line: ``facesieve <command> ...``.

Each command lives in its own module exposing ``register(subparsers)``, which adds
a parser whose ``func(args) -> int`` gives the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

# command modules, in the order `facesieve --help` lists them
COMMANDS = ["detect", "eval", "video", "train", "label", "export", "models"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesieve", description="Face detection toolkit (RetinaFace, MTCNN).")
    parser.add_argument("--version", action="version", version=f"facesieve {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"facesieve.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"facesieve.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from facesieve import __version__

    return __version__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a command cleans up as on Ctrl-C
    (e.g. `facesieve detect` and `facesieve video` write their summary marked incomplete)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

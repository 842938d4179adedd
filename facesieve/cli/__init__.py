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
    """Run a command; returns its exit code (per command; 2 is always a usage error).

    argv: the arguments after the program name (None: ``sys.argv[1:]``). Each command's
    ``--help`` states its inputs, outputs (pixels, xyxy boxes, RGB images) and exit codes.

    Handled here for every command: a feature whose optional dependency is missing
    (``facesieve.MissingDependencyError``: one line naming the extra to install, exit 2);
    stdout closed early by the reader (``facesieve models | head``: no traceback, exit 141
    as for SIGPIPE); Ctrl-C (exit 130) and SIGTERM (exit 143), after the command has cleaned up.
    """
    from facesieve.optional import MissingDependencyError

    parser = build_parser()
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        try:
            code = int(args.func(args) or 0)
        except MissingDependencyError as e:
            print(f"facesieve {args.command}: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            return 143 if terminated else 130
        try:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        except BrokenPipeError:
            _silence_stdout()  # the command finished; only its printout was cut
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not fail again (the reader left)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Expand command-line inputs (files, directories, globs) into a list of image (or video) paths."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff",
     ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
     # photo formats that need a Pillow plugin (HEIC/HEIF: pillow-heif; AVIF before Pillow
     # 11.3: pillow-avif-plugin; JPEG XL: pillow-jxl-plugin), JPEG 2000 and camera raw files:
     # picked up too, so that each is either decoded or reported with what to install or do
     ".heic", ".heif", ".hif", ".avif", ".jxl", ".jp2", ".j2k", ".jpx",
     ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".dng", ".orf", ".rw2", ".raf",
     ".pef", ".srw", ".x3f"}
)
"""Lower-case suffixes of image-like files picked up from directories and globs (explicit
files are always kept). ``load_image`` decodes each or raises ImageError saying why not."""

_GLOB_CHARS = frozenset("*?[")


@dataclass
class ExpandedInputs:
    """Result of :func:`expand_inputs`.

    paths: image paths in a deterministic order (each argument's matches sorted, arguments
        in the order given), without duplicates. Explicit file arguments are kept even when
        missing or not image-named, so that the caller reports them per file.
    unmatched: arguments (globs, directories) that yielded no image.
    unreadable: (directory, OS cause) for each directory that could not be listed during a
        walk (e.g. permission denied): its images can be neither processed nor skipped silently.
    """

    paths: list[Path] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _is_glob(arg: str) -> bool:
    return any(c in _GLOB_CHARS for c in arg)


def _within(path: Path, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == r or r in real.parents for r in roots)


def _glob_anchor(pattern: str) -> Path:
    """The leading directory of a glob pattern that has no glob characters."""
    parts = Path(pattern).parts
    fixed = list(parts[: next((i for i, x in enumerate(parts) if _is_glob(x)), len(parts))])
    return Path(*fixed) if fixed else Path(".")


def _active(exclude: Sequence[Path], anchor: Path) -> list[Path]:
    """Excludes that do not contain ``anchor``: what the user names explicitly is never excluded."""
    return [e for e in exclude if not _within(anchor, [e])]


def _walk_dir(root: Path, exclude: Sequence[Path], extensions: frozenset[str],
              errors: list[tuple[str, str]] | None = None) -> list[Path]:
    """Files with one of ``extensions`` under ``root`` (recursive), skipping hidden files/dirs and ``exclude``.
    Directories that cannot be listed are appended to ``errors`` as (path, OS cause)."""
    found: list[Path] = []

    def onerror(e: OSError) -> None:
        if errors is not None:
            errors.append((str(e.filename or root), f"cannot list directory: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if not n.startswith(".") and not _within(d / n, exclude)]
        found.extend(
            d / n for n in filenames if not n.startswith(".") and Path(n).suffix.lower() in extensions
        )
    return found


def _sort_key(p: Path) -> tuple[str, ...]:
    return tuple(p.parts)


def expand_inputs(
    args: Iterable[str | os.PathLike],
    exclude: Iterable[str | os.PathLike] = (),
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> ExpandedInputs:
    """Expand files, directories (recursively) and glob patterns into image paths.

    args: command-line inputs. A path that exists is taken literally (even if it contains
        glob characters); otherwise an argument with ``* ? [`` is a glob (``**`` recurses).
        A non-glob path that does not exist is kept, so the caller reports "file not found".
    exclude: directories skipped inside directory walks and glob matches (e.g. the output
        directory, so a re-run does not pick up its own annotated images), unless the
        argument itself names that directory or a path inside it.
    extensions: lower-case suffixes picked up from directories and globs (default: images;
        the video job passes its video suffixes).
    """
    exts = frozenset(e.lower() for e in extensions)
    excl = [Path(os.path.realpath(e)) for e in exclude]
    result = ExpandedInputs()
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.realpath(p))
        if key not in seen:
            seen.add(key)
            result.paths.append(p)

    for raw in args:
        arg = os.fspath(raw)
        path = Path(arg).expanduser()
        if path.is_dir():
            matches = sorted(_walk_dir(path, _active(excl, path), exts, result.unreadable), key=_sort_key)
        elif path.exists() or not _is_glob(arg):
            add(path)  # explicit file (or missing file): kept as given
            continue
        else:
            matches = []
            pattern = os.path.expanduser(arg)
            ex = _active(excl, _glob_anchor(pattern))
            for m in glob.glob(pattern, recursive=True):
                mp = Path(m)
                if mp.is_dir():
                    if not _within(mp, ex):
                        matches.extend(_walk_dir(mp, ex, exts, result.unreadable))
                elif mp.is_file() and mp.suffix.lower() in exts and not _within(mp, ex):
                    matches.append(mp)
            matches = sorted(set(matches), key=_sort_key)
        if not matches and not any(Path(d) == path or path in Path(d).parents for d, _ in result.unreadable):
            result.unmatched.append(arg)
        for m in matches:
            add(m)
    return result


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a regular file (the real OS cause), or None if it can.

    "not found", "a parent is not a directory", "is a directory, not a file",
    "permission denied", "not a regular file (...)", or the OS's own message.
    """
    import errno
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "not found"
    except PermissionError:
        return "permission denied (a parent directory cannot be searched)"
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return "not found (a parent is not a directory)"
        return e.strerror or str(e)
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a device, socket or pipe)"
    if not os.access(path, os.R_OK):
        return "permission denied (not readable)"
    return None


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 (kept by Python as
    surrogate escapes) are shown as ``\\xNN``, so printing never fails on a strict UTF-8 stream."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def make_output_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, uniquely named directory ``parent/<prefix><random>`` created with mode 0o777
    minus the umask, like any ``mkdir`` (``tempfile.mkdtemp`` makes 0o700 directories,
    which stay 0o700 when the directory is later renamed into place as an output)."""
    import secrets

    for _ in range(100):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free directory name {prefix}* in {parent}")

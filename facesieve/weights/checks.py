"""Sanity checks that refuse damaged weights instead of returning nonsense faces.

A checkpoint with flipped bits often still loads: its tensors have the right shapes, but
some values are NaN / inf or astronomically large, and the network then returns
non-finite scores and coordinates (faces at score 1.0 with infinite boxes, or no face at
all). Three checks catch it, each raising ``NonFiniteWeightsError`` (a ``WeightsError``)
naming the weights (``describe_weights``: the file, and whether its sha256 differs from a
registered entry's with the same file name or size):

* ``check_state_finite``: every floating-point tensor of the state dict is finite;
* a probe forward at load time (``probe_retinaface`` / ``probe_mtcnn``): the network's
  outputs on a fixed synthetic image are finite and decode to finite boxes;
* ``check_outputs_finite``: the detectors check their network outputs on every call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from facesieve.weights.cache import WeightsError, sha256_file


class NonFiniteWeightsError(WeightsError):
    """The weights give (or hold) NaN / infinite values: damaged or not what they claim to be."""


def describe_weights(weights: str | os.PathLike | None, entry_name: str | None = None) -> str:
    """How to name weights in an error: the registry entry, or the user's file with its sha256
    and, when a registered entry has the same file name or size but another sha256, that."""
    if weights is None or not Path(weights).expanduser().is_file():
        return f"weights {entry_name or weights!r}"
    from facesieve.weights.registry import list_weights

    path = Path(weights).expanduser()
    digest = sha256_file(path)
    text = f"weights file {path} (sha256 {digest})"
    size = path.stat().st_size
    for e in list_weights():
        if e.sha256 is None or e.sha256 == digest:
            continue
        if (e.file_name and e.file_name == path.name) or (e.size and e.size == size):
            why = "the same file name" if e.file_name == path.name else "the same size"
            text += (f"; it has {why} as the registered {e.name!r} but its sha256 differs from the "
                     f"registered {e.sha256}: the file is damaged or not that release")
            break
    return text


def check_state_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise NonFiniteWeightsError if a floating-point tensor holds NaN or inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"{source}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {bad[0]}); refusing to use them"
        )


def check_outputs_finite(source: str, **outputs: np.ndarray) -> None:
    """Raise NonFiniteWeightsError if a network output holds NaN or inf (called per detection call)."""
    for name, a in outputs.items():
        if a is not None and a.size and not np.isfinite(a).all():
            raise NonFiniteWeightsError(
                f"{source}: the network returned non-finite {name} (NaN or inf): the weights are damaged"
            )


def probe_image(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A fixed synthetic RGB uint8 image (smooth gradients plus noise) for the load-time probe."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], -1)
    noise = np.random.default_rng(seed).normal(0, 20, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def probe_retinaface(model: torch.nn.Module, preprocessing: object, source: str) -> None:
    """Run a RetinaFace model (eval, any device) on ``probe_image``; raise NonFiniteWeightsError
    unless its outputs are finite and its boxes decode to finite coordinates."""
    from facesieve.ops.anchors import AnchorGenerator
    from facesieve.ops.box_coder import BoxCoder

    img = probe_image().astype(np.float32)
    if getattr(preprocessing, "channel_order", "BGR") == "BGR":
        img = img[..., ::-1]
    img = (img - np.asarray(preprocessing.mean, np.float32)) / np.asarray(preprocessing.std, np.float32)
    param = next(model.parameters())
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None])).to(param.device, param.dtype)
    with torch.inference_mode():
        loc, conf, landmarks = (t.float().cpu().numpy() for t in model(x))
    check_outputs_finite(source, boxes=loc, scores=conf, landmarks=landmarks)
    with np.errstate(over="ignore", invalid="ignore"):
        boxes = BoxCoder().decode_boxes(loc[0], AnchorGenerator()(x.shape[2], x.shape[3]))
    check_outputs_finite(source, decoded_boxes=boxes)


def probe_mtcnn(nets: torch.nn.Module, source: str) -> None:
    """Run P-, R- and O-Net on crops of ``probe_image``; raise NonFiniteWeightsError unless every
    output is finite."""
    img = (probe_image(48, 48).astype(np.float32) - 127.5) / 128.0
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))
    param = next(nets.parameters())
    x = x.to(param.device, param.dtype)
    with torch.inference_mode():
        outs = {"P-Net": nets.pnet(x), "R-Net": nets.rnet(x[..., :24, :24]), "O-Net": nets.onet(x)}
    for stage, out in outs.items():
        for field in ("box", "score", "landmarks"):
            t = getattr(out, field, None)
            if t is not None:
                check_outputs_finite(source, **{f"{stage} {field}": t.float().cpu().numpy()})


def verify_weights(kind: str, model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                   weights: str | os.PathLike | None, entry_name: str | None,
                   preprocessing: object | None = None) -> None:
    """Load-time checks of freshly loaded weights: ``check_state_finite`` and the probe forward
    of ``kind`` ("retinaface" or "mtcnn"). On failure raises NonFiniteWeightsError whose message
    names the weights (``describe_weights(weights, entry_name)``, computed only then)."""
    try:
        check_state_finite(state, "")
        if kind == "retinaface":
            probe_retinaface(model, preprocessing, "")
        else:
            probe_mtcnn(model, "")
    except NonFiniteWeightsError as e:
        raise NonFiniteWeightsError(f"{describe_weights(weights, entry_name)}{e}") from None

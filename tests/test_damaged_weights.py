"""Damaged weights are refused with an error naming the file, never turned into faces.

Real damaged copies: the published biubug6 checkpoint (../shared/weights) and the shipped
MTCNN weights with a few KiB of flipped bits, which still load as tensors of the right shapes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import facesieve
from facesieve.weights.checks import NonFiniteWeightsError

BIUBUG6_SHA256 = "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220"  # ../shared/weights/README.md


def flip_bits(src: Path, dst: Path, offset: int, length: int = 2048, seed: int = 0) -> Path:
    """Copy src to dst with one random bit flipped in every 8th byte of [offset, offset + length)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.choice(length, size=length // 8, replace=False) + offset:
        data[i] ^= 1 << int(rng.integers(0, 8))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("offset", [100_000, 820_000, 1_060_000])
def test_damaged_biubug6_checkpoint_is_refused_naming_the_file(shared_weights, tmp_path, offset):
    good = shared_weights / "mobilenet0.25_Final.pth"
    # offset 820000 gives a plausible face on the astronaut but inf boxes on other inputs;
    # 1060000 gives NaN scores (no face at all); 100000 faces at score 1.0 with inf boxes
    bad = flip_bits(good, tmp_path / "copy" / good.name, offset, seed=offset)
    with pytest.raises(NonFiniteWeightsError) as e:
        facesieve.load("retinaface-mnet025", weights=str(bad), backend="torch")
    msg = str(e.value)
    assert str(bad) in msg and "non-finite" in msg
    assert "retinaface-mnet025-biubug6" in msg and BIUBUG6_SHA256 in msg and "same file name" in msg
    # the same bytes under another name: recognised by the registered size
    other = tmp_path / "mine.pth"
    other.write_bytes(bad.read_bytes())
    with pytest.raises(NonFiniteWeightsError, match="same size as the registered 'retinaface-mnet025-biubug6'"):
        facesieve.load("retinaface-mnet025", weights=str(other), backend="torch")
    # the intact file loads and finds the astronaut
    det = facesieve.load("retinaface-mnet025", weights=str(good), backend="torch")
    assert len(det.detect(Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg")) == 1


def test_damaged_mtcnn_weights_are_refused(tmp_path):
    from facesieve.weights.packaged import packaged_path
    from facesieve.weights.registry import get_weights

    state = torch.load(packaged_path(get_weights("mtcnn")), weights_only=True)
    state["onet.conv2.weight"] = state["onet.conv2.weight"].clone()
    state["onet.conv2.weight"].view(-1)[::97] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(NonFiniteWeightsError, match=r"nan\.pt .*1 tensor\(s\) hold NaN or infinite values"):
        facesieve.load("mtcnn", weights=str(tmp_path / "nan.pt"), backend="torch")
    state = torch.load(packaged_path(get_weights("mtcnn")), weights_only=True)
    for k in ("pnet.conv1.weight", "pnet.conv2.weight"):
        state[k] = state[k] * 1e30  # finite weights (like a flipped exponent bit), overflowing outputs
    torch.save(state, tmp_path / "huge.pt")
    with pytest.raises(NonFiniteWeightsError, match=r"huge\.pt .*non-finite P-Net box"):
        facesieve.load("mtcnn", weights=str(tmp_path / "huge.pt"), backend="torch")


def test_weights_damaged_after_loading_are_caught_on_the_call(example_image):
    det = facesieve.load("retinaface-mnet025", backend="torch")
    with torch.no_grad():
        det.model.class_head[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteWeightsError, match="'retinaface-mnet025'.*non-finite scores"):
        det.detect(example_image)
    det = facesieve.load("mtcnn", backend="torch")
    with torch.no_grad():
        det.runner.nets.onet.box.bias.fill_(float("inf"))
    with pytest.raises(NonFiniteWeightsError, match="'mtcnn'.*non-finite boxes"):
        det.detect(example_image)


def test_cli_reports_damaged_weights_in_one_line(shared_weights, tmp_path, example_image):
    bad = flip_bits(shared_weights / "mobilenet0.25_Final.pth", tmp_path / "w" / "mobilenet0.25_Final.pth", 100_000)
    out = subprocess.run(
        [sys.executable, "-m", "facesieve", "detect", str(example_image), "--weights", str(bad),
         "--backend", "torch", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "non-finite" in err[0] and "sha256" in err[0], out.stderr
    assert "Traceback" not in out.stderr and "cannot write output" not in out.stderr
    assert not (tmp_path / "out" / "astronaut.json").exists()  # no detections from damaged weights

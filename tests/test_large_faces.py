"""Large faces in high-resolution photos: the default detectors find each face once.

The reference boxes of ../shared/data/photos_large_faces come from an independent detector
(YuNet, see that folder's README). At the original scale alone RetinaFace found 27 of its 29
faces with 47 extra boxes (faces larger than its 512-px anchors came back as 1-10 partial
faces); the default multi-scale policy must find all 29 with at most one extra box.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import facesieve
from facesieve.io import load_image
from facesieve.ops.boxes import box_iou

from tests.conftest import SHARED, _require

LARGE_FACES = SHARED / "data" / "photos_large_faces"


@pytest.fixture(scope="module")
def large_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(file, RGB image, reference boxes (N, 4)) of the 26 photos."""
    root = _require(LARGE_FACES)
    out = []
    for line in (root / "reference.jsonl").read_text().splitlines():
        rec = json.loads(line)
        image = load_image(root / "images" / rec["file"])
        assert image.shape[:2] == (rec["height"], rec["width"])
        out.append((rec["file"], image, np.array([f["box"] for f in rec["faces"]], np.float64).reshape(-1, 4)))
    assert len(out) == 26 and sum(len(b) for _, _, b in out) == 29
    return out


def _score(detector, photos, min_score: float = 0.5) -> tuple[int, int, list[str]]:
    """(reference faces found at IoU >= 0.5, extra boxes scoring >= min_score, notes)."""
    found = extra = 0
    notes = []
    for name, image, ref in photos:
        boxes = np.array([f.box for f in detector.detect(image) if f.score >= min_score]).reshape(-1, 4)
        iou = box_iou(ref, boxes) if len(boxes) else np.zeros((len(ref), 0))
        hit = (iou >= 0.5).any(axis=1) if len(boxes) else np.zeros(len(ref), bool)
        spare = int((~(iou >= 0.5).any(axis=0)).sum()) if len(boxes) else 0
        found += int(hit.sum())
        extra += spare
        if spare or not hit.all():
            notes.append(f"{name}: {int(hit.sum())}/{len(ref)} found, {spare} extra")
    return found, extra, notes


def test_default_retinaface_finds_every_large_face_once(large_faces):
    found, extra, notes = _score(facesieve.load("retinaface-mnet025"), large_faces)
    assert found == 29 and extra <= 1, notes


def test_original_scale_alone_splits_large_faces(large_faces):
    """The protocol scale (multiscale off) is what the issue measured: the failure the default fixes."""
    subset = [p for p in large_faces if p[0] in ("facenet_paul_rudd.jpg", "deepface_img49.jpg", "deepface_couple.jpg")]
    found, extra, _ = _score(facesieve.load("retinaface-mnet025", multiscale=False), subset)
    assert found <= 2 and extra >= 10  # measured: 2 of 4, 22 extra


def test_default_mtcnn_on_large_faces(large_faces):
    found, extra, notes = _score(facesieve.load("mtcnn"), large_faces)
    assert found == 29 and extra <= 2, notes  # measured: 29 found, 2 extra (tiny boxes, see the data README)


def astronaut_portrait(example_image) -> np.ndarray:
    """examples/astronaut.jpg cropped to the face (MTCNN box [180.8, 61.4, 268.4, 172.3]) plus
    25% of its size per side, upscaled to 1268 x 1600 (the portrait of issue 10)."""
    image = load_image(example_image)
    crop = image[34:200, 159:290]
    return np.ascontiguousarray(cv2.resize(crop, (1268, 1600), interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("model", ["retinaface-mnet025", "mtcnn"])
def test_astronaut_portrait_is_one_face(example_image, model):
    image = astronaut_portrait(example_image)
    faces = [f for f in facesieve.load(model).detect(image) if f.score >= 0.5]
    assert len(faces) == 1, [(np.round(f.box), f.score) for f in faces]
    # issue 10: one face at about [237, 239, 1076, 1317] (RetinaFace at target_size=640,
    # max_size=1024; MTCNN agrees within a few percent); at the original scale alone: 5 boxes
    iou = box_iou(np.array([faces[0].box]), np.array([[237.0, 239.0, 1076.0, 1317.0]]))[0, 0]
    assert iou >= (0.85 if model.startswith("retinaface") else 0.7), (faces[0].box, iou)


def test_multiscale_passes_and_ranges():
    det = facesieve.load("retinaface-mnet025")
    assert det.pass_factors(480, 640) == [1.0]  # short side <= 640: one pass, as before
    assert det.pass_factors(1600, 1268) == [1.0, 0.5]
    assert det.pass_factors(9000, 12000) == [1.0, 0.5, 0.25, 0.125, 0.0625]  # 9000 / 16 = 562
    assert facesieve.load("retinaface-mnet025", max_size=1000).pass_factors(3000, 4000) == [0.25, 0.125]
    assert facesieve.load("retinaface-mnet025", multiscale=False).pass_factors(9000, 12000) == [1.0]
    # merge: a 600-px face is the coarse pass's; a 100-px one the fine pass's; a part of a
    # big face (inside it, from the fine pass) is dropped; a face near the boundary found
    # by both passes is kept once
    fine = (np.array([[0, 0, 100, 100], [500, 500, 800, 800], [1000, 0, 1600, 600], [2000, 0, 2300, 300]], np.float32),
            np.array([0.9, 0.8, 0.95, 0.7], np.float32), np.zeros((4, 10), np.float32))
    coarse = (np.array([[1000, 0, 1600, 600], [450, 450, 1050, 1050], [2005, 0, 2305, 300]], np.float32),
              np.array([0.99, 0.9, 0.6], np.float32), np.zeros((3, 10), np.float32))
    boxes, scores, _ = det.merge_passes([fine, coarse], [1.0, 0.5], 0.4)
    got = sorted(map(tuple, boxes.astype(int).tolist()))
    assert got == [(0, 0, 100, 100), (450, 450, 1050, 1050), (1000, 0, 1600, 600), (2000, 0, 2300, 300)], got
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


def test_tiled_pass_equals_untiled(wider_val_dev):
    """A pass cut into tiles gives the untiled boxes (the cores' anchors see the same pixels)."""
    image = load_image(wider_val_dev / "images/0--Parade/0_Parade_Parade_0_120.jpg")
    image = np.ascontiguousarray(cv2.resize(image, (2000, 1559), interpolation=cv2.INTER_CUBIC))
    whole = facesieve.load("retinaface-mnet025", multiscale=False, max_batch_pixels=1 << 24)
    tiled = facesieve.load("retinaface-mnet025", multiscale=False, max_batch_pixels=1_200_000)
    assert whole.tiles(*image.shape[:2]) == [(0, 1559, 0, 2000, None)]
    parts = tiled.tiles(*image.shape[:2])
    assert len(parts) >= 4 and all((y1 - y0) * (x1 - x0) <= 1_200_000 for y0, y1, x0, x1, _ in parts)
    a = whole.detect(image, score_threshold=0.1)
    b = tiled.detect(image, score_threshold=0.1)
    assert len(a) == len(b) >= 40
    np.testing.assert_allclose([f.box for f in a], [f.box for f in b], atol=1e-3)
    np.testing.assert_allclose([f.landmarks for f in a], [f.landmarks for f in b], atol=1e-3)
    np.testing.assert_allclose([f.score for f in a], [f.score for f in b], atol=1e-5)


def test_tiles_partition_the_pass():
    det = facesieve.load("retinaface-mnet025", max_batch_pixels=2_000_000)
    h, w = 3001, 4999
    cover = np.zeros((h, w), np.int32)
    for y0, y1, x0, x1, core in det.tiles(h, w):
        assert (y1 - y0) * (x1 - x0) <= 2_000_000
        cy0, cy1, cx0, cx1 = core
        assert cy0 % 32 == 0 and cx0 % 32 == 0 and y0 % 32 == 0 and x0 % 32 == 0
        assert y0 <= max(0, cy0 - 320) and y1 >= min(h, cy1 + 320) and x0 <= max(0, cx0 - 320)
        cover[cy0:cy1, cx0:cx1] += 1
    assert (cover == 1).all()
    with pytest.raises(ValueError, match="max_batch_pixels"):
        facesieve.load("retinaface-mnet025", max_batch_pixels=100_000)


def test_detect_cli_scale_options(example_image, tmp_path):
    """`facesieve detect`: the default finds the portrait once; --single-scale is the original
    scale alone (partial faces); --max-size detects on a downscaled copy, boxes in original px."""
    from facesieve.cli import main

    path = tmp_path / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(astronaut_portrait(example_image), cv2.COLOR_RGB2BGR))
    counts = {}
    for name, extra in {"default": [], "single": ["--single-scale"], "max": ["--max-size", "800"]}.items():
        out = tmp_path / name
        assert main(["detect", str(path), "--out", str(out), "-q", "--no-draw", "--score-threshold", "0.5", *extra]) == 0
        faces = json.loads((out / "portrait.json").read_text())["faces"]
        counts[name] = len(faces)
        if name != "single":
            iou = box_iou(np.array([faces[0]["box"]]), np.array([[237.0, 239.0, 1076.0, 1317.0]]))[0, 0]
            assert iou >= 0.85, (name, faces[0]["box"])
    assert counts["default"] == counts["max"] == 1 and counts["single"] >= 3, counts
    assert main(["detect", str(path), "--model", "mtcnn", "--single-scale", "--out", str(tmp_path / "m"), "-q"]) == 2
